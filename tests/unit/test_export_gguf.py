"""The GGUF file reads back in `transformers` as the model we wrote, and bad requests are refused.

`transformers` has its own GGUF reader (tensor names, llama.cpp's q/k row order undone, its own
dequantisation), so equal logits prove the names, the RoPE permutation and the metadata. Each
dtype is checked twice:

- exactly: our weights are first rounded to what the file stores (f16, or q8_0 blocks of 32), so
  writing them loses nothing and the logits must agree to fp32 rounding (1e-4);
- against the unrounded model, bounding what the dtype costs: f16 keeps 11 significant bits (a
  relative error of at most 2^-11 per weight), which moved logits by ~0.3% of their spread on
  these models, so 1% is allowed; q8_0 rounds each weight to 1/254 of its block's largest magnitude,
  which moved them by ~9% of their spread (random weights are a worst case: no outliers dominate a
  block), so 25% is allowed.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
import torch
import transformers

from helpers.export_models import GPT2, HARD_STRINGS, LLAMA_GQA, round_to_file_dtype, trained_model

from londinium.config import ModelConfig
from londinium.errors import LondiniumError
from londinium.export.gguf import GGUFExportError, write_gguf
from londinium.tokenizer.codec import encode, load_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

# spread of the logits allowed as the largest difference, per dtype (see the module docstring)
LOSS_BOUND = {"float16": 0.01, "q8_0": 0.25}


def read_back(path: Path, cfg: ModelConfig) -> torch.nn.Module:
    # transformers reads GPT-2's context length into `n_ctx`, which GPT2Config does not use for the
    # position table (`n_positions`, default 1024), so a GPT-2 file needs it given; Llama needs nothing.
    extra = {"n_positions": cfg.context} if cfg.positions == "learned" else {}
    return transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, **extra).eval()


def logits(model: torch.nn.Module, idx: torch.Tensor, ours: bool) -> torch.Tensor:
    with torch.no_grad():
        return model(idx)[0] if ours else model(input_ids=idx).logits


@pytest.mark.parametrize("layout", ["llama", "gpt2"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "q8_0"])
def test_transformers_reads_the_gguf_as_the_same_model(tiny_workspace, tmp_path, layout: str, dtype: str) -> None:
    trained = trained_model(tiny_workspace, **(LLAMA_GQA if layout == "llama" else GPT2))
    cfg = trained.config.model
    idx = torch.randint(0, cfg.vocab_size, (2, 20), generator=torch.Generator().manual_seed(2))
    exact = logits(trained.model, idx, ours=True)
    round_to_file_dtype(trained, dtype)
    path = tmp_path / f"{layout}-{dtype}.gguf"
    write_gguf(path, trained, dtype, progress=False)
    theirs = read_back(path, cfg)
    assert type(theirs).__name__ == ("LlamaForCausalLM" if layout == "llama" else "GPT2LMHeadModel")
    got = logits(theirs, idx, ours=False)
    torch.testing.assert_close(got, logits(trained.model, idx, ours=True), atol=1e-4, rtol=0)
    if dtype != "float32":
        assert (got - exact).abs().max() < LOSS_BOUND[dtype] * exact.std()


def test_smaller_dtypes_make_smaller_files(tiny_workspace, tmp_path) -> None:
    trained = trained_model(tiny_workspace, **LLAMA_GQA)
    sizes = {}
    for dtype in ("float32", "float16", "q8_0"):
        write_gguf(tmp_path / f"{dtype}.gguf", trained, dtype, progress=False)
        sizes[dtype] = (tmp_path / f"{dtype}.gguf").stat().st_size
    reader = gguf.GGUFReader(tmp_path / "q8_0.gguf")
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["blk.0.attn_norm.weight"] == "F32"
    assert "output.weight" in types  # untied: the head is its own tensor
    n = trained.num_params
    assert 4 * n < sizes["float32"] < 4 * n + 2**20  # the metadata (tokenizer) is well under 1 MiB here
    assert sizes["q8_0"] < sizes["float16"] < sizes["float32"]


def test_tied_head_is_left_out_and_transformers_ties_it(tiny_workspace, tmp_path) -> None:
    trained = trained_model(tiny_workspace, **{**LLAMA_GQA, "n_kv_head": 1, "tie_embeddings": True})
    write_gguf(tmp_path / "m.gguf", trained, "float32", progress=False)
    assert "output.weight" not in {t.name for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}
    theirs = read_back(tmp_path / "m.gguf", trained.config.model)
    idx = torch.randint(0, trained.config.model.vocab_size, (1, 16), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(logits(theirs, idx, ours=False), logits(trained.model, idx, ours=True), atol=1e-4, rtol=0)


def test_tokenizer_in_the_gguf_encodes_like_ours(tiny_workspace, tmp_path) -> None:
    trained = trained_model(tiny_workspace, **GPT2)
    write_gguf(tmp_path / "m.gguf", trained, "float32", progress=False)
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="m.gguf")
    tok = trained.tokenizer
    assert theirs.eos_token == "<|endoftext|>" and theirs.pad_token == "<|pad|>"
    for text in HARD_STRINGS:
        if "<|" in text:
            # A tokenizer from a file matches control-token text as the control id, like Hugging
            # Face's own; ours keeps it as text unless asked. With the control ids allowed they agree.
            assert theirs.encode(text, add_special_tokens=False) == encode(tok, text, allow_special=True), text
        else:
            assert theirs.encode(text, add_special_tokens=False) == encode(tok, text), text
            assert theirs.decode(encode(tok, text)) == text


def test_chat_template_is_embedded(tiny_workspace, tmp_path) -> None:
    from londinium.infer.chat_template import INFERENCE_TEMPLATE  # llama.cpp's Jinja has no {% generation %}

    write_gguf(tmp_path / "m.gguf", trained_model(tiny_workspace, **GPT2), "float32", progress=False)
    field = gguf.GGUFReader(tmp_path / "m.gguf").fields["tokenizer.chat_template"]
    assert field.contents() == INFERENCE_TEMPLATE


@pytest.mark.parametrize("model,match", [
    (dict(n_experts=4), r"model\.n_experts = 4"),
    (dict(positions="rope", norm="layernorm", mlp="swiglu", bias=False), r"model\.norm = 'layernorm' \(needs 'rmsnorm'\)"),
    (dict(positions="learned", norm="layernorm", mlp="gelu", bias=False), r"model\.bias = False \(needs True\)"),
    (dict(n_kv_head=2), r"model\.n_kv_head = 2"),
])
def test_models_llama_cpp_cannot_represent_are_refused(tiny_workspace, tmp_path, model: dict, match: str) -> None:
    trained = trained_model(tiny_workspace, **{**GPT2, **model})
    with pytest.raises(GGUFExportError, match=match):
        write_gguf(tmp_path / "m.gguf", trained, "float32", progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_unknown_dtype_is_refused(tiny_workspace, tmp_path) -> None:
    with pytest.raises(LondiniumError, match=r"GGUF dtype 'bfloat16' is not supported; choose one of float32, float16, q8_0"):
        write_gguf(tmp_path / "m.gguf", trained_model(tiny_workspace, **GPT2), "bfloat16", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_the_old_file(tiny_workspace, tmp_path, monkeypatch) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"previous export")
    trained = trained_model(tiny_workspace, **GPT2)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", disk_full)
    with pytest.raises(OSError):
        write_gguf(path, trained, "float32", progress=False)
    assert path.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["m.gguf"]


def test_model_rows_beyond_the_vocabulary_get_unused_placeholder_tokens(tiny_workspace, tmp_path) -> None:
    # A model may have more output rows than the tokenizer has tokens (vocabulary padded to a round
    # number); llama.cpp needs one token per row, so the extra rows are named and marked unused.
    n = load_tokenizer(tiny_workspace).get_vocab_size()
    trained = trained_model(tiny_workspace, **{**LLAMA_GQA, "vocab_size": n + 8})
    write_gguf(tmp_path / "m.gguf", trained, "float32", progress=False)
    fields = gguf.GGUFReader(tmp_path / "m.gguf").fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    assert len(tokens) == n + 8 and tokens[n] == f"[PAD{n}]"
    assert fields["tokenizer.ggml.token_type"].contents()[n:] == [gguf.TokenType.UNUSED] * 8
    theirs = read_back(tmp_path / "m.gguf", trained.config.model)
    idx = torch.randint(0, n, (1, 16), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(logits(theirs, idx, ours=False), logits(trained.model, idx, ours=True), atol=1e-4, rtol=0)


def test_a_tokenizer_larger_than_the_model_is_refused(tiny_workspace, tmp_path) -> None:
    n = load_tokenizer(tiny_workspace).get_vocab_size()
    trained = trained_model(tiny_workspace, **{**GPT2, "vocab_size": n - 1})
    with pytest.raises(GGUFExportError, match=f"the tokenizer has {n} tokens but model.vocab_size is {n - 1}"):
        write_gguf(tmp_path / "m.gguf", trained, "float32", progress=False)
    assert list(tmp_path.iterdir()) == []
