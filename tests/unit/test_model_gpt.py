"""The GPT module: every variant runs and learns, the loss is what the trainer expects, config
mistakes are named, and the KV cache gives exactly what recomputing the whole sequence gives."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from londinium.config import ModelConfig
from londinium.errors import ConfigError, LondiniumError
from londinium.model.gpt import GPT

# Tiny models are per-op overhead: one thread runs them faster, and leaves the other core free.
pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(n_layer=2, n_head=4, n_embd=64, context=48, vocab_size=101)
GPT2_STYLE = ModelConfig(**SMALL)
LLAMA_STYLE = ModelConfig(**SMALL, positions="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2, bias=False, tie_embeddings=False)
MOE = ModelConfig(**SMALL, n_experts=4, top_k=2, aux_loss_weight=0.05)


VARIANTS = {
    "gpt2": GPT2_STYLE,
    "llama": LLAMA_STYLE,
    "moe": MOE,
    "moe-swiglu-top1": ModelConfig(**SMALL, n_experts=3, top_k=1, mlp="swiglu"),
    "mqa-rope-layernorm": ModelConfig(**SMALL, positions="rope", n_kv_head=1),
    "dropout": ModelConfig(**SMALL, dropout=0.1),
}


def _model(cfg: ModelConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(cfg)


@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_gives_full_logits_a_finite_loss_and_gradients_for_every_parameter(name: str) -> None:
    cfg = VARIANTS[name]
    model = _model(cfg).train()
    idx = torch.randint(0, cfg.vocab_size, (3, cfg.context))
    targets = torch.randint(0, cfg.vocab_size, (3, cfg.context))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, cfg.context, cfg.vocab_size)
    # At init the prediction is near uniform, so the loss is near ln(V).
    assert abs(loss.item() - math.log(cfg.vocab_size)) < 0.5
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    logits, loss = model(idx)
    assert loss is None and logits.shape == (3, cfg.context, cfg.vocab_size)


def test_loss_is_mean_cross_entropy_over_targets_that_are_not_minus_one() -> None:
    model = _model(GPT2_STYLE).eval()
    idx = torch.randint(0, 101, (2, 16))
    targets = torch.randint(0, 101, (2, 16))
    targets[0, :5] = -1
    targets[1, 10:] = -1
    logits, loss = model(idx, targets)
    keep = targets != -1
    expected = F.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(loss, expected)


def test_moe_loss_adds_the_weighted_router_loss_and_reports_expert_shares() -> None:
    model = _model(MOE).eval()
    idx = torch.randint(0, 101, (2, 24))
    logits, loss = model(idx, idx)
    ce = F.cross_entropy(logits.view(-1, 101), idx.view(-1))
    assert model.last_aux_loss is not None
    torch.testing.assert_close(loss, ce + 0.05 * model.last_aux_loss)
    shares = model.moe_utilization()
    assert shares is not None and len(shares) == MOE.n_layer
    for layer in shares:
        assert len(layer) == 4 and min(layer) >= 0 and math.isclose(sum(layer), 1.0, rel_tol=1e-6)
    dense = _model(GPT2_STYLE)
    dense(idx, idx)
    assert dense.last_aux_loss is None and dense.moe_utilization() is None


def test_router_loss_is_one_when_balanced_and_grows_when_the_router_collapses() -> None:
    cfg = dataclasses.replace(MOE, top_k=1)
    model = _model(cfg).eval()
    idx = torch.randint(0, 101, (2, 24))
    with torch.no_grad():
        for block in model.transformer.h:
            block.mlp.router.weight.zero_()  # uniform probabilities: E * sum(share_e / E) = 1
    model(idx)
    assert model.last_aux_loss.item() == pytest.approx(1.0, abs=1e-6)
    with torch.no_grad():
        for block in model.transformer.h:
            block.mlp.router.weight[0].fill_(10.0)  # every token prefers expert 0 (LayerNorm output has mean 0...)
            block.ln_2.bias.fill_(1.0)  # ...so shift it to make the preference real
    model(idx)
    assert model.last_aux_loss.item() > 3.5  # close to n_experts = 4: one expert takes everything
    assert all(layer[0] == 1.0 for layer in model.moe_utilization())


@pytest.mark.parametrize("name", ["gpt2", "llama", "moe"])
def test_a_few_steps_of_adamw_learn_a_repeating_sequence(name: str) -> None:
    cfg = VARIANTS[name]
    model = _model(cfg).train()
    opt = torch.optim.AdamW(model.optimizer_groups(0.1), lr=3e-3)
    pattern = torch.randint(0, cfg.vocab_size, (12,))
    seq = pattern.repeat(5)[: cfg.context + 1]
    x, y = seq[:-1][None].repeat(4, 1), seq[1:][None].repeat(4, 1)
    first = None
    for _ in range(40):
        _, loss = model(x, y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.25 * first


def test_dropout_acts_only_in_training_mode() -> None:
    model = _model(VARIANTS["dropout"])
    idx = torch.randint(0, 101, (2, 16))
    model.train()
    assert not torch.equal(model(idx)[0], model(idx)[0])
    model.eval()
    assert torch.equal(model(idx)[0], model(idx)[0])


@pytest.mark.parametrize(
    "change,field",
    [
        (dict(vocab_size=0), "model.vocab_size"),
        (dict(n_head=5), "model.n_head"),
        (dict(n_kv_head=3), "model.n_kv_head"),
        (dict(positions="alibi"), "model.positions"),
        (dict(norm="batchnorm"), "model.norm"),
        (dict(mlp="relu"), "model.mlp"),
        (dict(n_experts=2, top_k=3), "model.top_k"),
        (dict(dropout=1.0), "model.dropout"),
        (dict(n_layer=0), "model.n_layer"),
    ],
)
def test_impossible_configs_raise_config_error_naming_the_field(change: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        GPT(dataclasses.replace(GPT2_STYLE, **change))


def test_sequence_longer_than_the_context_is_a_clear_error() -> None:
    model = _model(GPT2_STYLE)
    with pytest.raises(LondiniumError, match=r"model\.context = 48"):
        model(torch.zeros(1, 49, dtype=torch.long))
    cache = model.new_kv_cache(1, max_len=8)
    with pytest.raises(LondiniumError, match="KV cache holds 8 tokens"):
        model(torch.zeros(1, 9, dtype=torch.long), kv_cache=cache)


def test_residual_projections_get_gpt2_scaled_init() -> None:
    cfg = ModelConfig(n_layer=8, n_head=4, n_embd=256, context=16, vocab_size=512)
    model = _model(cfg)
    block = model.transformer.h[0]
    scaled = 0.02 / math.sqrt(2 * cfg.n_layer)
    assert block.attn.c_proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert block.mlp.c_proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert block.attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.transformer.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.count_nonzero(block.attn.c_attn.bias) == 0


def test_tied_embeddings_share_one_matrix_and_untied_ones_add_a_head() -> None:
    tied, untied = _model(GPT2_STYLE), _model(dataclasses.replace(GPT2_STYLE, tie_embeddings=False))
    assert tied.lm_head.weight is tied.transformer.wte.weight
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    assert untied.num_params() - tied.num_params() == 101 * 64
    assert untied.num_params(non_embedding=True) == tied.num_params(non_embedding=True)


def test_optimizer_groups_decay_matrices_and_embeddings_but_not_norms_or_biases() -> None:
    model = _model(LLAMA_STYLE.__class__(**{**dataclasses.asdict(GPT2_STYLE), "bias": True}))
    decay, no_decay = model.optimizer_groups(0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    ids = [id(p) for g in (decay, no_decay) for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in no_decay["params"]} == {n for n, p in model.named_parameters() if n.endswith("bias") or ".ln_" in n}
    assert "transformer.wte.weight" in {names[id(p)] for p in decay["params"]}


def test_flops_per_token_is_six_times_matmul_params_plus_attention() -> None:
    model = _model(GPT2_STYLE)
    # Tied: the output head is wte, multiplied through once per token; wpe is only looked up.
    n_matmul = model.num_params() - model.transformer.wpe.weight.numel()
    assert model.flops_per_token() == 6 * n_matmul + 12 * 2 * 64 * 48
    untied_rope = _model(LLAMA_STYLE)
    assert untied_rope.flops_per_token(seq_len=10) == 6 * (untied_rope.num_params() - 101 * 64) + 12 * 2 * 64 * 10


# ---- KV cache ------------------------------------------------------------------------------------


def _greedy_full(model: GPT, prompt: torch.Tensor, steps: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    seq, step_logits = prompt, []
    for _ in range(steps):
        logits = model(seq)[0][:, -1]
        step_logits.append(logits)
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
    return seq, step_logits


def _greedy_cached(model: GPT, prompt: torch.Tensor, steps: int, prefill_chunk: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    cache = model.new_kv_cache(prompt.shape[0], max_len=prompt.shape[1] + steps)
    # Prefill in chunks: the second chunk exercises new tokens attending to a filled cache.
    for start in range(0, prompt.shape[1], prefill_chunk):
        logits = model(prompt[:, start:start + prefill_chunk], kv_cache=cache)[0]
    seq, step_logits = prompt, []
    for _ in range(steps):
        step_logits.append(logits[:, -1])
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
        logits = model(nxt, kv_cache=cache)[0]
    assert cache.length == seq.shape[1]
    return seq, step_logits


@pytest.mark.parametrize("positions", ["learned", "rope"])
@pytest.mark.parametrize("n_kv_head", [4, 2])
@pytest.mark.parametrize("prefill_chunk", [11, 4])
def test_greedy_decoding_with_kv_cache_equals_recomputing_the_full_sequence(positions: str, n_kv_head: int, prefill_chunk: int) -> None:
    cfg = ModelConfig(**SMALL, positions=positions, n_kv_head=n_kv_head)
    model = _model(cfg, seed=3).eval()
    prompt = torch.randint(0, cfg.vocab_size, (3, 11))
    with torch.no_grad():
        full, full_logits = _greedy_full(model, prompt, steps=20)
        cached, cached_logits = _greedy_cached(model, prompt, steps=20, prefill_chunk=prefill_chunk)
    assert torch.equal(full, cached)
    for a, b in zip(full_logits, cached_logits):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("positions", ["learned", "rope"])
@pytest.mark.parametrize("n_kv_head", [4, 1])
def test_cached_logits_equal_full_logits_at_every_position_of_a_random_sequence(positions: str, n_kv_head: int) -> None:
    # Greedy decoding from a random model soon repeats itself; random tokens fed one at a time
    # check every position against the full forward pass, up to the last one of the context.
    cfg = ModelConfig(**SMALL, positions=positions, n_kv_head=n_kv_head, tie_embeddings=False)
    model = _model(cfg, seed=4).eval()
    seq = torch.randint(0, cfg.vocab_size, (2, cfg.context))
    cache = model.new_kv_cache(2)
    with torch.no_grad():
        full = model(seq)[0]
        first = model(seq[:, :7], kv_cache=cache)[0]
        rest = [model(seq[:, t:t + 1], kv_cache=cache)[0] for t in range(7, cfg.context)]
    torch.testing.assert_close(torch.cat([first, *rest], dim=1), full, atol=1e-5, rtol=1e-5)


def test_kv_cache_preallocates_per_layer_buffers_in_the_models_dtype() -> None:
    model = _model(LLAMA_STYLE)
    cache = model.new_kv_cache(batch_size=3, max_len=20)
    assert len(cache.k) == len(cache.v) == LLAMA_STYLE.n_layer
    assert cache.k[0].shape == (3, 2, 20, 16) and cache.k[0].dtype == torch.float32
    assert cache.length == 0
    model.eval()(torch.zeros(3, 5, dtype=torch.long), kv_cache=cache)
    assert cache.length == 5
    cache.reset()
    assert cache.length == 0
    assert model.new_kv_cache(1).max_len == LLAMA_STYLE.context


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_logits_to_keep_gives_the_last_positions_logits_only_and_the_same_values(name: str) -> None:
    torch.manual_seed(0)
    model = GPT(VARIANTS[name]).eval()
    idx = torch.randint(0, 101, (2, 20))
    with torch.no_grad():
        full = model(idx)[0]
        last = model(idx, logits_to_keep=1)[0]
        three = model(idx, logits_to_keep=3)[0]
    assert last.shape == (2, 1, 101) and three.shape == (2, 3, 101)
    torch.testing.assert_close(last, full[:, -1:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(three, full[:, -3:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_keep_gives_the_marked_positions_logits_in_row_order_and_the_same_gradients(name: str) -> None:
    """What SFT and SFT distillation use: the head on the answers' positions only, the same loss and
    the same gradients as the head over every position with the others weighted 0."""
    torch.manual_seed(0)
    model = GPT(VARIANTS[name])
    idx, y = torch.randint(0, 101, (3, 20)), torch.randint(0, 101, (3, 20))
    keep = torch.rand(3, 20) < 0.3
    weights = keep.float() / keep.sum()
    full = model(idx)[0]
    nll = torch.nn.functional.cross_entropy(full.view(-1, 101), y.view(-1), reduction="none")
    (nll * weights.view(-1)).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    kept = model(idx, keep=keep)[0]
    assert kept.shape == (int(keep.sum()), 101)
    torch.testing.assert_close(kept, full[keep], rtol=1e-5, atol=1e-5)
    (torch.nn.functional.cross_entropy(kept, y[keep], reduction="none") * weights[keep]).sum().backward()
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)
