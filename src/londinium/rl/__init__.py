"""Reinforcement learning on tasks whose answers a program scores: GRPO through the one trainer.

    londinium rl --run SFT_RUN --task arith          # runs/SFT_RUN-rl/: checkpoints, metrics.jsonl, rl.md, rl.png

Modules, one job each: `loss` (group-relative advantages, the clipped policy loss, the KL's k3
estimator), `rewards` (reward callables per task, a user's own by 'module:function'), `rollouts`
(the loader: one batched engine call per rollout, from the training model's own weights),
`shared_prompt` (the loss's forward pass, each group's prompt run once for its G answers),
`objective` (the `GRPO` objective the trainer runs, validated by pass@k), `run` (the run's config
from [rl]), `report` (the curves and the Markdown report). docs/rl.md is the guide.
"""
