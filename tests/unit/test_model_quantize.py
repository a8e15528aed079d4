"""Linear layers packed as float16 or int8 (model/quantize.py): close to the float32 model, and a
sequence's result never depends on what it is batched with."""

from __future__ import annotations

import copy

import pytest
import torch
from engine_fixtures import make_model, make_tokenizer

from londinium.errors import ConfigError
from londinium.infer import Engine, SamplingParams
from londinium.model.quantize import Float16Linear, Int8Linear, quantize_weights

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.mark.parametrize("dtype, tolerance", [("float16", 2e-3), ("int8", 0.08)])
@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_packed_weights_give_logits_close_to_float32(tok, dtype: str, tolerance: float, positions: str) -> None:
    model = make_model(tok, positions)
    idx = torch.randint(0, tok.get_vocab_size(), (3, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(idx)[0]
        packed = quantize_weights(copy.deepcopy(model), dtype)
        got = packed(idx)[0]
    kind = Int8Linear if dtype == "int8" else Float16Linear
    linears = [m for m in packed.modules() if isinstance(m, torch.nn.Linear)]
    assert not linears and sum(isinstance(m, kind) for m in packed.modules()) == 2 * 4 + 1  # every block's four and the head
    assert float((got - want).norm() / want.norm()) < tolerance
    assert float((got - want).norm() / want.norm()) > 0  # they are packed: not the float32 weights


def test_an_int8_row_gets_the_same_result_alone_and_in_any_batch() -> None:
    torch.manual_seed(0)
    layer = Int8Linear(torch.nn.Linear(48, 24))
    rows = torch.randn(5, 48) * torch.tensor([[1.0], [100.0], [1e-3], [7.0], [0.5]])  # very different ranges
    batched = layer(rows)
    for i in range(len(rows)):
        assert torch.equal(layer(rows[i:i + 1])[0], batched[i])
    assert torch.equal(layer(rows[[3, 1]])[0], batched[3])


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_the_engine_on_packed_weights_decodes_batched_as_alone(tok, dtype: str) -> None:
    engine = Engine.with_settings(make_model(tok, "rope", n_kv_head=2), tok, _settings(dtype))
    prompts = ["Thou art", "In the beginning God created the heaven", "To"]
    params = [SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True),
              SamplingParams(max_tokens=10, temperature=0.9, seed=3, ignore_eos=True),
              SamplingParams(max_tokens=6, top_p=0.8, seed=4, ignore_eos=True)]
    batched = engine.generate(prompts, params)
    for prompt, p, b in zip(prompts, params, batched):
        [alone] = engine.generate([prompt], p)
        assert b.token_ids == alone.token_ids
        assert b.choices[0].cumulative_logprob == alone.choices[0].cumulative_logprob


def test_a_weight_dtype_that_does_not_exist_is_refused_by_name(tok) -> None:
    with pytest.raises(ConfigError, match="weight dtype 'int4'.*float32, float16, int8"):
        quantize_weights(make_model(tok), "int4")


def _settings(dtype: str):
    from londinium.config import GenerateConfig

    return GenerateConfig(weight_dtype=dtype)
