"""`londinium model memory`'s figures against the bytes of real tensors, for every preset and dtype.

Each preset's model is built with its own widths, heads and vocabulary but two layers and a short
context (every figure is per layer and per token, so nothing is lost, and the test stays cheap)."""

from __future__ import annotations

import dataclasses
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from londinium.config import KV_DTYPES, PRESETS, WEIGHT_DTYPES, load_config
from londinium.model.gpt import GPT
from londinium.model.memory import activation_bytes, kv_cache_bytes, memory_plan, weight_bytes
from londinium.model.quantize import quantize_weights

pytestmark = pytest.mark.usefixtures("one_thread")


def preset_config(preset: str, **changes):
    cfg = load_config(preset=preset)
    return dataclasses.replace(cfg.model, vocab_size=cfg.tokenizer.vocab_size, n_layer=2, context=64, **changes)


class LiveTensors(TorchDispatchMode):
    """The peak of bytes held at once by the tensors the ops under it create (a view is counted once,
    with the storage it shares): what a forward pass allocates, measured, not estimated."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, list[int]] = {}  # storage address -> [bytes, tensors holding it]
        self.now = self.peak = 0

    def _release(self, address: int) -> None:
        entry = self.live[address]
        entry[1] -= 1
        if not entry[1]:
            self.now -= entry[0]
            del self.live[address]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr():
                storage = t.untyped_storage()
                address = storage.data_ptr()
                if address not in self.live:
                    self.live[address] = [storage.nbytes(), 0]
                    self.now += storage.nbytes()
                    self.peak = max(self.peak, self.now)
                self.live[address][1] += 1
                weakref.finalize(t, self._release, address)
        return out


def tensor_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's weights as held: parameters (a tied matrix once), buffers, packed layers."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total + sum(m.packed_bytes() for m in model.modules() if hasattr(m, "packed_bytes"))


@pytest.mark.parametrize("dtype", WEIGHT_DTYPES)
@pytest.mark.parametrize("preset", list(PRESETS))
def test_weight_bytes_are_the_bytes_the_model_holds(preset: str, dtype: str) -> None:
    cfg = preset_config(preset)
    model = quantize_weights(GPT(cfg), dtype)
    assert sum(weight_bytes(cfg, dtype).values()) == tensor_bytes(model)


@pytest.mark.parametrize("switches", [dict(), dict(n_kv_head=2, positions="rope", norm="rmsnorm", mlp="swiglu", bias=False),
                                      dict(tie_embeddings=False, n_experts=4, top_k=2, positions="rope", norm="rmsnorm",
                                           mlp="swiglu", bias=False)])
@pytest.mark.parametrize("dtype", WEIGHT_DTYPES)
def test_weight_bytes_follow_every_architecture_switch(switches: dict, dtype: str) -> None:
    cfg = dataclasses.replace(preset_config("tiny"), n_head=4, **switches)
    assert sum(weight_bytes(cfg, dtype).values()) == tensor_bytes(quantize_weights(GPT(cfg), dtype))


@pytest.mark.parametrize("kv_dtype", KV_DTYPES)
@pytest.mark.parametrize("preset", list(PRESETS))
def test_kv_cache_bytes_are_the_slot_caches_buffers(preset: str, kv_dtype: str) -> None:
    cfg = preset_config(preset, n_kv_head=2 if preset != "tiny" else 0)
    slots = GPT(dataclasses.replace(cfg, n_layer=1, vocab_size=64)).new_slot_cache(3, 40, kv_dtype)
    held = sum(t.numel() * t.element_size() for buffers in slots.buffers() for t in buffers)
    assert kv_cache_bytes(dataclasses.replace(cfg, n_layer=1), 3, 40, kv_dtype) == held


@pytest.mark.parametrize("tokens, logits", [(48, 1), (8, 8)])  # a prefill chunk; a decode step of 8 rows
@pytest.mark.parametrize("preset", list(PRESETS))
def test_activation_bytes_are_within_a_tenth_of_the_measured_peak(preset: str, tokens: int, logits: int) -> None:
    cfg = preset_config(preset)
    model = GPT(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        with LiveTensors() as live:
            model(idx, logits_to_keep=logits)
    assert activation_bytes(cfg, tokens, logits) == pytest.approx(live.peak, rel=0.1)


def test_the_plan_adds_up_and_grows_with_sequences_and_context() -> None:
    cfg = preset_config("small")
    one, many = memory_plan(cfg, 1), memory_plan(cfg, 16, kv_dtype="float32")
    assert one.total == sum(one.weights.values()) + one.kv_cache + one.activations + one.prefix_cache
    assert many.kv_cache == 16 * one.kv_cache and many.weights == one.weights
    assert memory_plan(cfg, 1, context=32).kv_cache == one.kv_cache // 2


def test_model_memory_prints_the_plan_for_the_flags(tmp_path, capsys) -> None:
    from londinium.cli import main
    from londinium.model.memory import _size

    argv = ["model", "memory", "--preset", "small", "-w", str(tmp_path), "--batch", "4", "--context", "128", "--weight-dtype", "int8"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    cfg = dataclasses.replace(load_config(preset="small").model, vocab_size=load_config(preset="small").tokenizer.vocab_size)
    plan = memory_plan(cfg, 4, 128, weight_dtype="int8")
    assert "4 sequence(s) x 128 tokens, weights int8, KV cache float32" in out
    for figure in (sum(plan.weights.values()), plan.kv_cache, plan.activations, plan.prefix_cache, plan.total):
        assert _size(figure) in out


def test_model_memory_refuses_a_context_the_model_does_not_have(tmp_path, capsys) -> None:
    from londinium.cli import main

    assert main(["model", "memory", "--preset", "tiny", "-w", str(tmp_path), "--context", "100000"]) == 2
    assert "--context 100000: give 1 .. 256 tokens (model.context)" in capsys.readouterr().err


@pytest.mark.parametrize("weight_dtype, kv_dtype", [("float32", "float32"), ("int8", "int8")])
def test_a_memory_budget_gives_the_most_sequences_whose_plan_fits(weight_dtype: str, kv_dtype: str) -> None:
    """What `serve.memory_budget_mb` sizes max_running to (`infer.scheduler.running_for_budget`, from
    the engine's own weights, KV dtype and draft), held to the plan: n fit, n + 1 do not."""
    from engine_fixtures import make_model, make_tokenizer

    from londinium.errors import ConfigError
    from londinium.infer import Engine
    from londinium.infer.scheduler import running_for_budget
    from londinium.model.memory import draft_bytes, max_sequences

    tok = make_tokenizer()
    model, draft = make_model(tok, "rope"), make_model(tok, "rope", seed=1)
    quantize_weights(model, weight_dtype)
    drafts = [None] if kv_dtype == "int8" else [None, draft]  # the int8 cache takes no draft
    for d in drafts:
        engine = Engine(model, tok, kv_dtype=kv_dtype, draft=d)
        extra = draft_bytes(d.config) if d is not None else 0
        plan = lambda n: memory_plan(model.config, n, weight_dtype=weight_dtype, kv_dtype=kv_dtype, step_tokens=256).total + extra  # noqa: E731
        for budget in (plan(1), plan(5) + 100, plan(12) - 1):
            n = running_for_budget(engine, budget / 2**20, 256)
            assert plan(n) <= budget < plan(n + 1)
            assert n == max_sequences(model.config, budget, extra_bytes=extra, weight_dtype=weight_dtype, kv_dtype=kv_dtype,
                                      step_tokens=256)
        with pytest.raises(ConfigError, match="does not hold one sequence"):
            running_for_budget(engine, (plan(1) - 1) / 2**20, 256)
