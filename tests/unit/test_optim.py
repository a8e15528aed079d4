"""The optimisers of a run: which parameters Muon takes, one schedule for both, checkpoints."""

import pytest
import torch

from londinium.config import ModelConfig, TrainConfig
from londinium.model.gpt import GPT
from londinium.train.optim import build_optimizers, hidden_matrices


def model(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(**{"n_layer": 2, "n_head": 2, "n_embd": 32, "context": 16, "vocab_size": 64, **kw}))


@pytest.mark.parametrize("kw", [{}, {"tie_embeddings": False, "positions": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False},
                                {"n_experts": 2}])
def test_muon_takes_the_blocks_matrices_and_adamw_everything_else_once(kw):
    m = model(**kw)
    opts = build_optimizers(m, TrainConfig(optimizer="muon", learning_rate=1e-3, muon_lr=0.02), torch.device("cpu"))
    muon = [p for g in opts.parts["muon"].param_groups for p in g["params"]]
    adamw = [p for g in opts.parts["adamw"].param_groups for p in g["params"]]
    names = {id(p): n for n, p in m.named_parameters()}
    assert {names[id(p)] for p in muon} == {n for n, p in m.named_parameters() if p.dim() == 2 and n.startswith("transformer.h.")}
    assert sorted(map(id, muon + adamw)) == sorted(id(p) for p in m.parameters())  # each parameter exactly once
    assert all(not names[id(p)].startswith("transformer.h.") or p.dim() == 1 for p in adamw)
    assert any("wte" in names[id(p)] for p in adamw)  # embeddings (and an untied head) stay on AdamW
    assert len(hidden_matrices(m)) == len(muon)


def test_one_schedule_factor_scales_each_groups_own_peak():
    opts = build_optimizers(model(), TrainConfig(optimizer="muon", learning_rate=1e-3, muon_lr=0.05), torch.device("cpu"))
    opts.set_lr(0.5)
    assert {g["lr"] for g in opts.parts["muon"].param_groups} == {0.025}
    assert {g["lr"] for g in opts.parts["adamw"].param_groups} == {0.0005}


def test_adamw_runs_checkpoint_adamws_own_state_dict_and_resume_takes_peaks_from_the_config():
    m = model()
    opts = build_optimizers(m, TrainConfig(learning_rate=1e-3), torch.device("cpu"))
    m(torch.zeros(2, 8, dtype=torch.long), torch.zeros(2, 8, dtype=torch.long))[1].backward()
    opts.step()
    state = opts.state_dict()
    assert set(state) == {"state", "param_groups"}  # what torch.optim.AdamW writes: older checkpoints load
    for g in state["param_groups"]:
        g.pop("peak_lr")  # a checkpoint from before the schedule factor
    again = build_optimizers(m, TrainConfig(learning_rate=2e-3), torch.device("cpu"))
    again.load_state_dict(state)
    again.set_lr(1.0)
    assert {g["lr"] for g in again.param_groups} == {2e-3}
    assert torch.equal(again.parts["adamw"].state[m.transformer.wte.weight]["exp_avg"],
                       opts.parts["adamw"].state[m.transformer.wte.weight]["exp_avg"])


def test_muon_learns_a_tiny_batch():
    m = model()
    opts = build_optimizers(m, TrainConfig(optimizer="muon", learning_rate=3e-3, muon_lr=0.02, weight_decay=0.0), torch.device("cpu"))
    x = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(1))
    first = None
    for _ in range(30):
        loss = m(x[:, :-1], x[:, 1:])[1]
        first = first if first is not None else loss.item()
        loss.backward()
        opts.step()
        opts.zero_grad()
    assert loss.item() < 0.5 * first
