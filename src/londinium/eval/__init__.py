"""Evaluation: the report card of a trained run (`londinium eval`).

    from londinium.eval.run import evaluate          # evaluate(ws, cfg, run="main") -> results dict
    from londinium.eval.compare import compare_runs  # compare_runs(ws, "a", "b") -> (markdown, path)

Modules, one job each: `perplexity` (NLL, perplexity, bits per byte, sliding window), `probes`
(multiple-choice probes by log-likelihood), `contamination` (n-gram overlap with the train split),
`text_metrics` (distinct-n, repetition, period words, anachronisms, BLEU, ROUGE), `heldout`
(documents, prompts and references from the held-out splits), `generation` (samples and their
metrics), `report` (Markdown and plots), `compare` (two runs side by side), `run` (the stage).
"""
