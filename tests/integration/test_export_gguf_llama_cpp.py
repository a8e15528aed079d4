"""llama.cpp (through llama-cpp-python) runs our GGUF files as the models we trained.

The real consumer, not a reader written for the test: llama.cpp's tokenizer must cut text as ours
does, its `llama` graph must rotate the permuted q/k rows back into our RoPE, and a trained
checkpoint must continue a prompt with the same greedy tokens as londinium's engine.

llama-cpp-python compiles llama.cpp from source at install (~5 min on 2 cores), so it is an extra
(`pip install -e '.[llama]'`); without it these tests are skipped, except in CI,
which installs it.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from helpers.export_models import GPT2, HARD_STRINGS, round_to_file_dtype, trained_model
from train_helpers import cli_in_process, train_args

from londinium.export.gguf import write_gguf
from londinium.infer import Engine, SamplingParams
from londinium.model.load import load_run
from londinium.tokenizer.codec import encode

# CI installs the `llama` extra (.ci/run) and must run these; elsewhere they need llama-cpp-python
# (a ~5 minute source build: pip install -e '.[llama]').
if os.environ.get("CI"):
    import llama_cpp
else:
    llama_cpp = pytest.importorskip("llama_cpp")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

GGML_TYPE_F32 = 0  # for llama.cpp's KV cache: its default f16 cache would blur the comparison
NEW_TOKENS = 48


def load_in_llama_cpp(path, n_ctx: int = 256) -> "llama_cpp.Llama":
    # one thread, as torch here: a tiny model is per-op overhead, and a busy machine deschedules a second thread
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=1, logits_all=True, verbose=False,
                           type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32)


def llama_cpp_greedy(llm: "llama_cpp.Llama", prompt: list[int], steps: int) -> list[int]:
    """Batch-1 greedy decode: argmax of llama.cpp's logits, one token at a time through its KV cache."""
    llm.reset()
    llm.eval(prompt)
    out = []
    for _ in range(steps):
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([out[-1]])
    return out


LLAMA_GQA_BIAS = dict(n_layer=2, n_head=4, n_kv_head=2, n_embd=64, context=32, positions="rope", norm="rmsnorm",
                      mlp="swiglu", bias=True, tie_embeddings=False, rope_theta=500.0)


# Largest logit difference allowed, as a share of the logits' spread, with the weights first
# rounded to the file's dtype (so what is left is llama.cpp's arithmetic; a misread block layout
# would be of the order of the spread itself). Measured: f32 llama 1.6e-6, gpt2 1.4e-3 (ggml's CPU
# GELU rounds its input to f16 and reads a table); f16 1.7e-3 / 3.3e-3 (ggml multiplies f16
# weights by activations converted to f16); q8_0 5.5e-2 / 6.2e-2 (it quantises the activations to
# 8-bit blocks as well).
LLAMA_CPP_BOUND = {("llama", "float32"): 1e-4, ("gpt2", "float32"): 1e-2, ("llama", "float16"): 1e-2,
                   ("gpt2", "float16"): 2e-2, ("llama", "q8_0"): 0.2, ("gpt2", "q8_0"): 0.2}


@pytest.mark.parametrize("dtype", ["float32", "float16", "q8_0"])
@pytest.mark.parametrize("layout", ["llama", "gpt2"])
def test_llama_cpp_computes_our_logits_and_tokenizes_like_us(tiny_workspace, tmp_path, layout: str, dtype: str) -> None:
    # Llama style with biases too: llama.cpp's llama graph adds the optional q/k/v/o and MLP biases
    # (transformers' GGUF reader drops them, so only llama.cpp can check them).
    trained = trained_model(tiny_workspace, **(LLAMA_GQA_BIAS if layout == "llama" else GPT2))
    round_to_file_dtype(trained, dtype)
    path = tmp_path / f"{layout}.gguf"
    write_gguf(path, trained, dtype, progress=False)
    llm = load_in_llama_cpp(path)
    idx = torch.randint(0, trained.config.model.vocab_size, (1, 24), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = trained.model(idx)[0][0].numpy()
    llm.eval(idx[0].tolist())
    theirs = np.asarray(llm.scores[:24])
    assert np.abs(theirs - ours).max() < LLAMA_CPP_BOUND[layout, dtype] * ours.std()
    for text in HARD_STRINGS:
        if "<|" not in text:
            assert llm.tokenize(text.encode(), add_bos=False, special=False) == encode(trained.tokenizer, text), text


@pytest.mark.parametrize("layout", ["gpt2", "llama"])
def test_llama_cpp_continues_a_trained_checkpoint_with_our_greedy_tokens(tiny_workspace, tmp_path, layout: str) -> None:
    run = f"gguf-{layout}"
    llama = ["--set", "model.positions=rope", "--set", "model.norm=rmsnorm", "--set", "model.mlp=swiglu",
             "--set", "model.bias=false", "--set", "model.n_kv_head=1"] if layout == "llama" else []
    rc, out, err = cli_in_process(train_args(tiny_workspace, run, 30, "--set", "model.context=96",
                                             "--set", "model.dropout=0.0", *llama))
    assert rc == 0, err
    trained = load_run(tiny_workspace, run, "latest")
    path = tmp_path / f"{run}.gguf"
    write_gguf(path, trained, "float32", progress=False)
    llm = load_in_llama_cpp(path)
    engine = Engine.from_trained(trained)
    greedy = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
    for prompt in ("Thus saith the", "The king and the queen"):
        [ours] = engine.generate([prompt], greedy)
        assert llm.tokenize(prompt.encode(), add_bos=False, special=False) == ours.prompt_token_ids
        assert llama_cpp_greedy(llm, ours.prompt_token_ids, NEW_TOKENS) == ours.token_ids, prompt


def test_llama_cpp_renders_our_chat_template(tiny_workspace, tmp_path) -> None:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from londinium.infer.chat_template import render_chat
    from londinium.tokenizer.codec import EOT

    write_gguf(tmp_path / "m.gguf", trained_model(tiny_workspace, **GPT2), "float32", progress=False)
    llm = llama_cpp.Llama(model_path=str(tmp_path / "m.gguf"), n_ctx=256, n_threads=1, verbose=False)
    assert llm.chat_format == "chat_template.default"  # it found the template in the file and will use it
    messages = [{"role": "system", "content": "You speak as a player of 1600."}, {"role": "user", "content": "Good morrow."}]
    formatter = Jinja2ChatFormatter(template=llm.metadata["tokenizer.chat_template"], eos_token=EOT, bos_token=EOT)
    assert formatter(messages=messages).prompt == render_chat(messages)


def test_llama_cpps_builtin_chat_formats_render_our_template_too() -> None:
    # llama-cli and llama-server without --jinja do not run Jinja: llama.cpp matches the template
    # against the chat formats it knows (ours has Phi-3's shape) and renders that format in C++.
    import ctypes

    from londinium.infer.chat_template import CHAT_TEMPLATE, render_chat

    messages = [{"role": "system", "content": "You speak as a player of 1600."}, {"role": "user", "content": "Good morrow."},
                {"role": "assistant", "content": "God save you, sir."}, {"role": "user", "content": "What news?"}]
    chat = (llama_cpp.llama_chat_message * len(messages))(
        *[llama_cpp.llama_chat_message(role=m["role"].encode(), content=m["content"].encode()) for m in messages])
    buf = ctypes.create_string_buffer(4096)
    n = llama_cpp.llama_chat_apply_template(CHAT_TEMPLATE.encode(), chat, len(messages), True, buf, len(buf))
    assert 0 < n < len(buf)
    assert buf.raw[:n].decode() == render_chat(messages)
