"""`londinium export` (Hugging Face format) checked with the real `transformers`, offline.

For each layout a preset can have (GPT-2 style; Llama style with n_kv_head < n_head; mixture of
experts; the `tiny` preset's own model, the one quickstart trains) on a random model saved as a real checkpoint, and on a tiny model the trainer trained:
`AutoModelForCausalLM` loads the export with no londinium code, its logits equal ours with and
without padding, its greedy `generate` gives our engine's tokens, and `pipeline` runs. The
tokenizer, sharding, half-precision exports and the stage's own behaviour are checked once.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from londinium.checkpoint import save_checkpoint
from londinium.config import PRESETS, Config, ModelConfig, to_toml
from londinium.export.run import export_run
from londinium.infer import Engine, SamplingParams
from londinium.model.gpt import GPT
from londinium.model.load import load_run
from londinium.tokenizer.codec import PAD, encode, load_tokenizer, tokenizer_sha256

from integration.train_helpers import cli_in_process, train_args

os.environ["HF_HUB_OFFLINE"] = "1"  # everything loads from the export directory, nothing from the Hub
import transformers  # noqa: E402  a dev dependency: these tests are the export contract, never skipped

pytestmark = pytest.mark.usefixtures("one_thread")

CONTEXT = 96  # room for a prompt and 64 new tokens
LLAMA = dict(positions="rope", norm="rmsnorm", mlp="swiglu", rope_theta=500.0)
LAYOUTS = {
    "gpt2": dict(n_layer=2, n_head=4, n_embd=64, context=CONTEXT),
    "llama-gqa": dict(n_layer=2, n_head=4, n_kv_head=2, n_embd=64, context=CONTEXT, bias=False, tie_embeddings=False, **LLAMA),
    "moe": dict(n_layer=2, n_head=4, n_kv_head=2, n_embd=64, context=CONTEXT, bias=False, n_experts=4, top_k=2, **LLAMA),
    "tiny-preset": PRESETS["tiny"]["model"],  # the default model a quickstart trains, exactly
}
ARCHITECTURES = {"gpt2": "GPT2LMHeadModel", "llama-gqa": "LlamaForCausalLM", "moe": "MixtralForCausalLM", "trained": "GPT2LMHeadModel",
                 "tiny-preset": "LlamaForCausalLM"}
PROMPTS = ["Thou art", "The king hath said unto his servants, go ye"]
QUIET = dict(log=lambda m: None)


def save_random_run(ws, run: str, model_cfg: ModelConfig, seed: int = 0) -> GPT:
    """A random GPT with every parameter perturbed (zero biases and unit norms would hide a weight
    mapped to the wrong place; a wider logit spread keeps greedy decoding away from near-ties),
    saved through the trainer's checkpoint code."""
    cfg = Config()
    cfg.model = model_cfg
    torch.manual_seed(seed)
    model = GPT(cfg.model)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    save_checkpoint(ws.checkpoints_dir(run), 1, model, {"step": 1}, to_toml(cfg),
                    {"run": run, "tokenizer_sha256": tokenizer_sha256(ws)})
    return model


@pytest.fixture(scope="module")
def ws(tiny_workspace):
    """The shared tiny workspace with a random run per layout and one trained run."""
    vocab = load_tokenizer(tiny_workspace).get_vocab_size()
    for name, switches in LAYOUTS.items():
        save_random_run(tiny_workspace, f"export-{name}", ModelConfig(vocab_size=vocab, **switches))
    rc, out, err = cli_in_process(train_args(tiny_workspace, "export-trained", 12, "--set", f"model.context={CONTEXT}"))
    assert rc == 0, err
    return tiny_workspace


@pytest.fixture(scope="module")
def exported(ws, tmp_path_factory):
    """Each run exported once (float32), with its londinium model and its transformers model."""
    out = {}
    for name in [*LAYOUTS, "trained"]:
        path = export_run(ws, Config(), run=f"export-{name}", out=tmp_path_factory.mktemp("exports") / name, **QUIET)
        trained = load_run(ws, f"export-{name}", "latest")
        hf = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
        out[name] = (path, trained, hf)
    return out


@pytest.fixture(scope="module")
def hf_tokenizer(exported):
    return transformers.AutoTokenizer.from_pretrained(exported["gpt2"][0])


def _left_padded(tok, prompts: list[str], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    ids = [encode(tok, p) for p in prompts]
    width = max(map(len, ids))
    input_ids = torch.tensor([[pad_id] * (width - len(i)) + i for i in ids])
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
    return input_ids, mask, ids


@pytest.mark.parametrize("name", [*LAYOUTS, "trained"])
def test_transformers_loads_the_export_as_the_standard_class_with_our_logits(exported, name) -> None:
    path, trained, hf = exported[name]
    assert type(hf).__name__ == ARCHITECTURES[name]
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == [ARCHITECTURES[name]] and "auto_map" not in config  # no remote code
    idx = torch.randint(0, trained.config.model.vocab_size, (3, 40), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        diff = (hf(input_ids=idx).logits - trained.model(idx)[0]).abs().max().item()
    assert diff < 1e-4


@pytest.mark.parametrize("name", [*LAYOUTS, "trained"])
def test_left_padded_batches_give_the_same_logits_at_every_real_position(exported, name) -> None:
    path, trained, hf = exported[name]
    pad_id = trained.tokenizer.token_to_id(PAD)
    input_ids, mask, ids = _left_padded(trained.tokenizer, PROMPTS, pad_id)
    pads = (mask == 0).sum(dim=1)
    cache = trained.model.new_kv_cache(len(ids), input_ids.shape[1])
    cache.pad = pads
    with torch.no_grad():
        ours = trained.model(input_ids, kv_cache=cache)[0]
        # position ids from the mask, as transformers' generate makes them for left-padded rows
        theirs = hf(input_ids=input_ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    assert pads.tolist()[0] > 0  # the first prompt really is padded
    real = mask.bool()
    assert (theirs[real] - ours[real]).abs().max().item() < 1e-4


@pytest.mark.parametrize("name", [*LAYOUTS, "trained"])
def test_greedy_generate_gives_our_engines_64_tokens(exported, name) -> None:
    path, trained, hf = exported[name]
    engine = Engine.from_trained(trained)
    ours = engine.generate(PROMPTS, SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True))
    pad_id = trained.tokenizer.token_to_id(PAD)
    input_ids, mask, ids = _left_padded(trained.tokenizer, PROMPTS, pad_id)
    # Both sides ignore end-of-text. transformers fills an unset (None) eos id from the model's
    # generation_config, so it gets an empty list: nothing ends a sequence, nothing is padded after it.
    config = transformers.GenerationConfig(do_sample=False, max_new_tokens=64, min_new_tokens=0, pad_token_id=pad_id, eos_token_id=[])
    with torch.no_grad():
        out = hf.generate(input_ids=input_ids, attention_mask=mask, generation_config=config)
    for row, completion in enumerate(ours):
        assert len(completion.token_ids) == 64
        assert out[row, input_ids.shape[1]:].tolist() == completion.token_ids


@pytest.mark.parametrize("name", [*LAYOUTS, "trained"])
def test_the_text_generation_pipeline_runs_on_the_directory(exported, name) -> None:
    path, trained, _ = exported[name]
    pipe = transformers.pipeline("text-generation", model=str(path), device="cpu")
    [result] = pipe("Thou art", max_new_tokens=8, do_sample=False)
    assert result["generated_text"].startswith("Thou art") and len(result["generated_text"]) > len("Thou art")


def test_generation_config_carries_the_generate_defaults(exported) -> None:
    path, trained, hf = exported["trained"]
    gen, ours = hf.generation_config, Config().generate
    assert gen.do_sample is True and gen.temperature == ours.temperature and gen.top_p == ours.top_p
    assert gen.top_k == 0  # off, as ours; transformers' own default would be 50
    assert gen.max_new_tokens == ours.max_tokens and gen.repetition_penalty == ours.repetition_penalty
    eot = trained.tokenizer.token_to_id("<|endoftext|>")
    assert gen.eos_token_id == eot and gen.pad_token_id == trained.tokenizer.token_to_id(PAD)
    assert hf.config.eos_token_id == eot and hf.config.bos_token_id == eot


HARD_STRINGS = [
    "  leading,   inner \t\t tabs and trailing   \n\n\n",
    "caf\u00e9 na\u00efve (NFC) vs cafe\u0301 nai\u0308ve (NFD)",
    "family \U0001F468\u200D\U0001F469\u200D\U0001F467 and flag \U0001F3F4\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F",
    "\u017fhall \uFB01 long s and ligatures, \u00a0no-break",
    "line\r\nbreaks\rand\u2028separators",
]


@pytest.mark.parametrize("text", HARD_STRINGS)
def test_the_exported_tokenizer_encodes_and_decodes_like_ours(exported, hf_tokenizer, text) -> None:
    ours = exported["gpt2"][1].tokenizer
    ids = encode(ours, text)
    assert hf_tokenizer(text)["input_ids"] == ids
    assert hf_tokenizer.decode(ids) == text


def test_control_token_text_differs_exactly_as_documented(exported, hf_tokenizer) -> None:
    # londinium keeps "<|endoftext|>" typed in text as text; transformers' convention (which chat
    # templates rely on) makes it the control token. split_special_tokens=True gives ours.
    ours = exported["gpt2"][1].tokenizer
    text = "The end.<|endoftext|>A new <|user|> begins"
    assert hf_tokenizer(text, split_special_tokens=True)["input_ids"] == encode(ours, text)
    assert hf_tokenizer(text)["input_ids"] == encode(ours, text, allow_special=True)
    assert encode(ours, text) != encode(ours, text, allow_special=True)
    assert hf_tokenizer.decode(encode(ours, text)) == text


def test_tokenizer_carries_special_tokens_context_and_chat_template(exported, hf_tokenizer) -> None:
    from londinium.infer.chat_template import render_chat

    assert hf_tokenizer.model_max_length == CONTEXT
    assert hf_tokenizer.eos_token == "<|endoftext|>" and hf_tokenizer.pad_token == PAD
    messages = [{"role": "system", "content": "Speak as in 1600."}, {"role": "user", "content": "Good morrow."}]
    text = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == render_chat(messages)
    ids = hf_tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert hf_tokenizer.convert_tokens_to_ids("<|user|>") in ids  # role tokens are control ids here
    # Tool turns too: the tools in the system turn, an assistant's calls, the tools' results.
    tools = [{"type": "function", "function": {"name": "search_corpus", "description": "Search the corpus.",
                                               "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]
    calls = [{"id": "call_1", "type": "function", "function": {"name": "search_corpus", "arguments": '{"query":"sea"}'}}]
    turns = [*messages, {"role": "assistant", "content": None, "tool_calls": calls},
             {"role": "tool", "tool_call_id": "call_1", "content": "The king hath gone to the sea."}]
    text = hf_tokenizer.apply_chat_template(turns, tools=tools, tokenize=False, add_generation_prompt=True)
    assert text == render_chat(turns, tools=tools) and '<tool_call>\n{"name":"search_corpus"' in text


def test_tiny_shards_are_indexed_and_load(ws, exported, tmp_path) -> None:
    cfg = Config()
    cfg.export.max_shard_mb = 0.05  # 50 KB: the ~0.2 MB model becomes several files
    path = export_run(ws, cfg, run="export-gpt2", out=tmp_path / "sharded", **QUIET)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and not (path / "model.safetensors").exists()
    from safetensors import safe_open

    total = 0
    for shard in shards:
        with safe_open(str(path / shard), "pt") as f:
            assert set(f.keys()) == {k for k, v in index["weight_map"].items() if v == shard}
            sizes = [f.get_tensor(k).numel() * 4 for k in f.keys()]
        assert sum(sizes) <= 50_000 or len(sizes) == 1  # a tensor larger than the limit goes alone
        total += sum(sizes)
    assert index["metadata"]["total_size"] == total
    hf = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    _, trained, _ = exported["gpt2"]
    idx = torch.randint(0, trained.config.model.vocab_size, (2, 30))
    with torch.no_grad():
        assert (hf(input_ids=idx).logits - trained.model(idx)[0]).abs().max().item() < 1e-4


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_exports_load_with_their_dtype_and_close_logits(ws, exported, tmp_path, dtype) -> None:
    from safetensors import safe_open

    path = export_run(ws, Config(), run="export-llama-gqa", dtype=dtype, out=tmp_path / dtype, **QUIET)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {getattr(torch, dtype)}
    hf = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    assert hf.dtype == getattr(torch, dtype)
    _, trained, _ = exported["llama-gqa"]
    # Exact: transformers' model in fp32 equals ours with its weights rounded to the dtype.
    rounded = GPT(trained.config.model).eval()
    rounded.load_state_dict({k: v.to(getattr(torch, dtype)).float() for k, v in trained.model.state_dict().items()})
    idx = torch.randint(0, trained.config.model.vocab_size, (2, 30))
    with torch.no_grad():
        theirs = hf.float()(input_ids=idx).logits
        assert (theirs - rounded(idx)[0]).abs().max().item() < 1e-4
        # and close to the fp32 model: rounding error of the dtype, not a mapping error
        full = trained.model(idx)[0]
        assert (theirs - full).abs().max().item() < (0.25 if dtype == "bfloat16" else 0.05) * full.abs().max().item()


def test_export_is_a_stage_skipped_when_up_to_date_and_records_its_provenance(ws, exported) -> None:
    path, trained, _ = exported["trained"]
    before = sorted(p.name for p in path.iterdir())
    lines = []
    again = export_run(ws, Config(), run="export-trained", out=path, log=lines.append)
    assert again == path and "up to date" in lines[0]
    assert sorted(p.name for p in path.iterdir()) == before
    record = json.loads((path / "londinium.json").read_text())
    assert record["run"] == "export-trained" and record["step"] == trained.checkpoint.step
    assert record["objective"] == {"name": "next-token"}  # a base model (an SFT run names its base: test_quickstart)
    assert record["tokenizer_sha256"] == tokenizer_sha256(ws)
    assert record["checkpoint"]["files"]["model.safetensors"]["sha256"] == trained.checkpoint.meta["files"]["model.safetensors"]["sha256"]
    assert record["corpus"]["train"]["sha256"] and record["config"]["model"]["context"] == CONTEXT
    from londinium.files import sha256_file

    assert record["export"]["files"]["model.safetensors"]["sha256"] == sha256_file(path / "model.safetensors")
    assert sha256_file(path / "tokenizer.json") == tokenizer_sha256(ws)  # the very tokenizer it was trained with
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # no staging left behind


def test_model_card_has_hub_front_matter_and_the_runs_facts(exported) -> None:
    path, trained, _ = exported["trained"]
    card = (path / "README.md").read_text()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert 'library_name: "transformers"' in front and 'language: ["en"]' in front and "license:" in front
    assert "GPT2LMHeadModel" in body and f"{trained.num_params:,}" in body
    assert f"| tokens seen | {trained.checkpoint.meta['tokens_seen']:,} |" in body
    assert "No data card was found" in body  # the test workspace's corpus was written without the corpus stage
    assert "from_pretrained" in body and "## Intended use and limits" in body
    assert "| objective | next-token prediction (pre-training) |" in body and "not trained on conversations" in body


def test_changed_settings_re_export_over_the_stages_own_export(ws, tmp_path) -> None:
    cfg = Config()
    path = export_run(ws, cfg, run="export-gpt2", out=tmp_path / "again", **QUIET)
    cfg.generate.temperature = 0.5  # the generation defaults are part of the export
    assert export_run(ws, cfg, run="export-gpt2", out=path, **QUIET) == path  # no --force needed: it is ours
    assert json.loads((path / "generation_config.json").read_text())["temperature"] == 0.5
    cfg.generate.temperature = 0.0
    export_run(ws, cfg, run="export-gpt2", out=path, **QUIET)
    gen = json.loads((path / "generation_config.json").read_text())
    assert gen["do_sample"] is False and "temperature" not in gen
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]
    # Still ours when the manifest forgot it (an interrupted re-export): its londinium.json says so.
    ws.invalidate("export/again")
    cfg.generate.temperature = 0.9
    export_run(ws, cfg, run="export-gpt2", out=path, **QUIET)
    assert json.loads((path / "generation_config.json").read_text())["temperature"] == 0.9


def test_a_failed_export_leaves_the_previous_one_or_nothing(ws, tmp_path, monkeypatch) -> None:
    import londinium.export.card as card

    def fail(*args, **kwargs):
        raise RuntimeError("disk full (injected)")

    path = export_run(ws, Config(), run="export-gpt2", out=tmp_path / "kept", **QUIET)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    monkeypatch.setattr(card, "render_card", fail)
    with pytest.raises(RuntimeError, match="injected"):
        export_run(ws, Config(), run="export-gpt2", out=tmp_path / "kept", force=True, **QUIET)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before  # the old export, whole
    with pytest.raises(RuntimeError, match="injected"):
        export_run(ws, Config(), run="export-gpt2", out=tmp_path / "new", **QUIET)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]  # no half-written "new", no staging
    assert "export/new" not in ws.manifest()
