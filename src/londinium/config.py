"""One typed configuration for every stage.

`londinium.toml` has one table per stage (`[corpus]`, `[tokenizer]`, ...). Each table is a dataclass
below; every field has a default and a one-line doc (`config show` prints them as comments).
Values are resolved in this order, later wins:

    dataclass defaults  <  preset (`--preset tiny` or `preset = "tiny"` in the file)  <  the TOML file  <  `--set section.key=value`

Unknown sections or keys are errors that name the key and the section, so a typo never silently
does nothing (the seed project's global dict let the same key be written twice, the later silently
winning).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from londinium.errors import ConfigError
from londinium.files import read_toml, tomllib


def doc(default: Any, text: str) -> Any:
    """A dataclass field with a default and a one-line description (shown by `config show`)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


# --------------------------------------------------------------------------------------------------
# Stage sections


@dataclass
class CorpusConfig:
    """Sources to documents: fetch, extract, normalise, filter, deduplicate, segment, split."""

    sources: str = doc("", "Path of a sources TOML registry; empty uses the embedded default (Shakespeare, Milton, KJV).")
    cache_dir: str = doc("", "Download cache (by sha256); empty uses $LONDINIUM_CACHE or ~/.cache/londinium.")
    max_file_mb: float = doc(64.0, "Files, archive members and downloads larger than this are rejected.")
    download_timeout_s: float = doc(60.0, "Timeout of one HTTP request or pip download, in seconds.")
    download_retries: int = doc(3, "Retries of a failed download (5xx, timeout), with exponential backoff.")
    min_chars: int = doc(200, "Documents shorter than this (after cleaning) are rejected.")
    min_alpha_words: float = doc(0.6, "Minimum share of whitespace-separated tokens that contain a letter.")
    max_noise: float = doc(0.25, "Maximum OCR-noise score (share of words with stray symbols or broken letter mixes).")
    max_boilerplate: float = doc(0.3, "Maximum share of lines that look like licence or site boilerplate.")
    min_english: float = doc(0.25, "Minimum share of words that are common English function words (old spellings count).")
    min_english_paragraph: float = doc(0.12, "Paragraphs of 30+ words scoring below this English share are dropped (Latin or Italian poems inside an English book); 0 turns it off.")
    near_dup_threshold: float = doc(0.3, "Jaccard similarity (word shingles of a spelling-folded form) at or above which two texts are grouped as near-duplicates; modern vs Folio texts of one play measure 0.38-0.61, different plays <= 0.02.")
    near_dup_containment: float = doc(0.5, "Share of the smaller text's shingles found in another text at or above which the two are grouped (an anthology and a poem it reprints).")
    shingle_words: int = doc(3, "Words per shingle for MinHash near-duplicate detection.")
    num_perm: int = doc(128, "MinHash permutations.")
    max_doc_chars: int = doc(4000, "Maximum characters of one training document; longer texts are cut at paragraph, then sentence, boundaries.")
    val_fraction: float = doc(0.05, "Share of each source's characters held out for validation, in whole document groups.")
    test_fraction: float = doc(0.05, "Share of each source's characters held out for test, in whole document groups.")
    seed: int = doc(1337, "Seed of the split: the same seed and inputs give the same split.")
    strict: bool = doc(False, "Fail on the first bad source or file instead of recording it and going on.")


@dataclass
class TokenizerConfig:
    """Byte-level BPE trained on the corpus's train split."""

    vocab_size: int = doc(8192, "Vocabulary size including special tokens (<= 65,536 keeps shards uint16).")
    min_frequency: int = doc(2, "A merge must occur at least this often to be learned.")
    compare_gpt2: bool = doc(True, "Compare with GPT-2's tokenizer in the report (its files are fetched once into the download cache).")
    compare_sources: bool = doc(True, "Report what domain training buys: per source, a same-size tokenizer trained on the other sources only.")


@dataclass
class DataConfig:
    """Token shards: each split encoded into a NumPy memmap."""

    encode_batch_docs: int = doc(256, "Documents per batch call to the tokenizer while encoding shards.")


@dataclass
class ModelConfig:
    """The GPT architecture. Variants are switches, not classes."""

    n_layer: int = doc(6, "Transformer blocks.")
    n_head: int = doc(6, "Attention (query) heads.")
    n_kv_head: int = doc(0, "Key/value heads for grouped-query attention; 0 means n_head (multi-head).")
    n_embd: int = doc(384, "Width of the residual stream.")
    context: int = doc(256, "Maximum sequence length (positions).")
    vocab_size: int = doc(0, "Vocabulary size; 0 takes the workspace tokenizer's size.")
    positions: str = doc("learned", "Position encoding: 'learned' (GPT-2) or 'rope' (Llama).")
    norm: str = doc("layernorm", "'layernorm' (GPT-2) or 'rmsnorm' (Llama).")
    mlp: str = doc("gelu", "'gelu' (GPT-2) or 'swiglu' (Llama).")
    mlp_ratio: float = doc(4.0, "Hidden width of the MLP as a multiple of n_embd (SwiGLU uses 2/3 of it, rounded).")
    bias: bool = doc(True, "Bias in linear layers and norms.")
    tie_embeddings: bool = doc(True, "Share the token embedding with the output head.")
    dropout: float = doc(0.0, "Dropout on attention, residual and embeddings.")
    rope_theta: float = doc(10000.0, "RoPE base frequency.")
    n_experts: int = doc(0, "Experts in a mixture-of-experts MLP; 0 means a dense MLP.")
    top_k: int = doc(2, "Experts each token is routed to.")
    aux_loss_weight: float = doc(0.01, "Weight of the router's load-balancing loss.")
    norm_eps: float = doc(1e-5, "Epsilon of LayerNorm/RMSNorm (GPT-2 and Llama 2 use 1e-5).")


@dataclass
class TrainConfig:
    """Training: optimiser, schedule, batches, checkpoints, devices."""

    max_steps: int = doc(2000, "Optimiser steps.")
    max_minutes: float = doc(0.0, "Stop after this many minutes of training (0: no time limit).")
    batch_size: int = doc(16, "Sequences per micro-batch on each process.")
    batch_tokens: int = doc(0, "Tokens per optimiser step across processes; accumulation is derived. 0: one micro-batch.")
    learning_rate: float = doc(1e-3, "Peak learning rate.")
    min_lr_ratio: float = doc(0.1, "Cosine decay floor as a share of the peak.")
    warmup_steps: int = doc(100, "Linear warm-up steps.")
    weight_decay: float = doc(0.1, "AdamW weight decay (matrices only).")
    beta1: float = doc(0.9, "AdamW beta1.")
    beta2: float = doc(0.95, "AdamW beta2.")
    grad_clip: float = doc(1.0, "Clip the gradient norm to this (0: off).")
    seed: int = doc(1337, "Seed of initialisation, data order and dropout.")
    device: str = doc("auto", "'auto' (cuda, then mps, then cpu), or a torch device string.")
    dtype: str = doc("auto", "'auto' (fp32 on CPU, bf16 on GPUs that have it, else fp16), 'float32', 'bfloat16', 'float16'.")
    compile: bool = doc(False, "torch.compile the model.")
    eval_every: int = doc(200, "Steps between evaluations (and checkpoints).")
    eval_batches: int = doc(20, "Validation batches per evaluation.")
    keep_last: int = doc(2, "Checkpoints kept besides the best one.")
    log_every: int = doc(10, "Steps between metric lines in metrics.jsonl.")
    wandb: bool = doc(False, "Log to Weights & Biases when installed.")
    tensorboard: bool = doc(False, "Log to TensorBoard when installed.")
    run_name: str = doc("main", "Name of the run: its checkpoints, metrics and plot live in runs/<name>/.")
    resume: bool = doc(False, "Continue the run from its newest valid checkpoint (quickstart always does).")
    peak_tflops: float = doc(0.0, "Peak TFLOP/s per process for MFU; 0 measures a matmul on CPU or looks up known GPUs.")
    budget_warn_epochs: float = doc(4.0, "Warn before training when the plan reads the train split more than this many times.")
    threads: int = doc(0, "CPU threads per process (torch.set_num_threads); 0 keeps torch's default. Bit-exact resume needs the same value.")


@dataclass
class EvalConfig:
    """`londinium eval`: perplexity, domain probes, contamination, generation quality -> eval/<run>/report.md."""

    checkpoint: str = doc("best", "Checkpoint to evaluate: 'best' (lowest validation loss), 'latest', or a checkpoint directory.")
    splits: list[str] = doc(["val", "test"], "Corpus splits scored for perplexity and bits per byte (by source and period).")
    max_docs: int = doc(64, "Documents per split scored, round-robin by source (0: all; 64 took 30-60 s per split for the tiny preset on a busy 2-core CPU).")
    stride: int = doc(0, "Sliding-window step in tokens for documents longer than the context (0: half the context).")
    batch_size: int = doc(8, "Windows or probe choices per forward pass (memory grows with it x context x vocabulary).")
    probes: bool = doc(True, "Score the domain probe set.")
    probe_file: str = doc("", "Probe set (TOML, docs/evaluation.md); empty: the embedded set for the default corpus.")
    contamination_ngram: int = doc(8, "Word n-gram size of the contamination check against the train split.")
    contamination_threshold: float = doc(0.5, "Share of a probe's or reference's n-grams found in the train split at which it is flagged.")
    prompts: int = doc(8, "Held-out prompts for generation, cut from documents of prompt_split (0: no generation).")
    prompt_split: str = doc("val", "Split the prompts and their reference continuations come from ('val' or 'test').")
    prompt_chars: int = doc(200, "Characters at the start of a held-out document used as its prompt (cut at a word boundary).")
    reference_words: int = doc(30, "Words after the prompt kept as its reference continuation (BLEU, ROUGE).")
    temperatures: list[float] = doc([0.0, 0.7, 1.0], "Sampling temperatures of the samples (0: greedy).")
    samples_per_prompt: int = doc(2, "Samples per prompt and temperature (one at temperature 0).")
    max_new_tokens: int = doc(64, "Tokens generated per sample.")
    seed: int = doc(1337, "Seed of sampling, so a report card is reproducible.")
    period_words: str = doc("", "Word list of period vocabulary (one per line); empty: the embedded Early Modern English list.")
    anachronisms: str = doc("", "Word list of anachronisms (one per line); empty: the embedded list for 1590-1670.")


@dataclass
class GenerateConfig:
    """Defaults of `londinium generate` and `londinium chat`; each also has a command-line flag."""

    run: str = doc("", "Training run to load; empty: train.run_name.")
    checkpoint: str = doc("best", "'best' (lowest validation loss), 'latest', or a checkpoint directory.")
    device: str = doc("cpu", "Torch device: 'cpu', 'cuda', or 'auto' (cuda, then mps, then cpu).")
    max_tokens: int = doc(200, "Tokens generated per prompt at most.")
    temperature: float = doc(0.8, "Sampling temperature; 0 is greedy decoding.")
    top_k: int = doc(0, "Sample among the k most likely tokens only (0: off).")
    top_p: float = doc(0.95, "Nucleus sampling: the smallest set of most likely tokens whose probability reaches p (1: off).")
    min_p: float = doc(0.0, "Drop tokens less likely than min_p times the most likely one (0: off).")
    repetition_penalty: float = doc(1.0, "transformers' repetition penalty on tokens of the prompt and output (1: off; 1.1-1.3 is typical).")
    frequency_penalty: float = doc(0.0, "OpenAI frequency penalty (-2..2): subtracted once per earlier occurrence in the output.")
    presence_penalty: float = doc(0.0, "OpenAI presence penalty (-2..2): subtracted once from any token already in the output.")
    no_repeat_ngram_size: int = doc(0, "Never repeat an n-gram of this many tokens (0: off).")
    seed: int = doc(-1, "Seed for reproducible sampling; negative: a fresh seed each run.")
    stop: list[str] = doc([], "Stop strings: generation ends before the first one, which is not returned.")
    chat_window: int = doc(0, "Tokens of conversation `chat` keeps (a rolling window); 0: the model's context.")


@dataclass
class ExportConfig:
    """`londinium export`: a checkpoint -> a Hugging Face directory or a GGUF file (docs/export.md)."""

    run: str = doc("", "Training run to export; empty: train.run_name.")
    checkpoint: str = doc("best", "'best' (lowest validation loss), 'latest', 'step-N' (that step of the run), or a checkpoint directory.")
    format: str = doc("hf", "'hf' (a transformers directory: safetensors, config, tokenizer, chat template, model card) or 'gguf' (one file for llama.cpp).")
    dtype: str = doc("float32", "Weight dtype: 'float32', 'bfloat16' or 'float16' for hf; 'float32', 'float16' or 'q8_0' for gguf.")
    out: str = doc("", "Output directory (hf) or file (gguf); empty: exports/<run>-step-<N>[.gguf] in the workspace.")
    max_shard_mb: float = doc(2000.0, "safetensors files larger than this are split into shards with an index file (transformers' layout).")


@dataclass
class ServeConfig:
    """`londinium serve`: an OpenAI-compatible HTTP server with continuous batching (docs/serving.md)."""

    run: str = doc("", "Training run to serve; empty: train.run_name (ignored when export is set).")
    checkpoint: str = doc("best", "'best', 'latest', or a checkpoint directory.")
    export: str = doc("", "Serve a londinium export directory instead of a workspace run.")
    model_name: str = doc("", "Model id clients send and /v1/models lists; empty: the run's name.")
    host: str = doc("127.0.0.1", "Address to bind; anything but loopback without api_key prints a warning.")
    port: int = doc(8000, "TCP port.")
    api_key: str = doc("", "Bearer key every route but /health requires; empty: no key ($LONDINIUM_API_KEY also sets it).")
    device: str = doc("cpu", "Torch device: 'cpu', 'cuda', or 'auto'.")
    max_running: int = doc(16, "Sequences decoded together at most (one KV-cache slot each).")
    max_step_tokens: int = doc(512, "Tokens one engine step may process (decode tokens plus prefill chunks): the prefill budget.")
    max_waiting: int = doc(64, "Requests waiting for a slot at most; beyond it the server answers 429 with Retry-After.")
    log_prompts: bool = doc(False, "Write prompt text into the request log (off: ids, timings and token counts only).")
    shutdown_timeout_s: float = doc(10.0, "On SIGTERM, seconds to let running requests finish before they are cancelled.")
    max_body_mb: float = doc(4.0, "Request bodies larger than this many megabytes are refused with 413.")
    request_log: str = doc("", "File the request log is appended to (one JSON line per request); empty: standard error.")
    stream_interval: int = doc(4, "A stream's chunk carries the tokens of this many engine steps (the first token is sent at once); more: less server CPU per token, burstier streams.")
    threads: int = doc(0, "CPU threads of the engine (torch.set_num_threads); 0: one fewer than the cores, at least 1, leaving a core to HTTP.")


@dataclass
class IndexConfig:
    """`londinium index build`: a BM25 search index over the corpus documents (docs/search.md)."""

    splits: list[str] = doc(["train", "val", "test"], "Corpus splits indexed (each hit says which split it is in).")
    k1: float = doc(1.5, "BM25 term-frequency saturation (bm25s' default).")
    b: float = doc(0.75, "BM25 length normalisation: 0 none, 1 full (bm25s' default).")
    snippet_chars: int = doc(240, "Characters of document text around the best match that a hit shows.")


@dataclass
class McpConfig:
    """`londinium mcp`: the model and corpus as MCP tools (docs/mcp.md). The model served, its device and
    the API key come from [serve], so `londinium serve` and `londinium mcp` serve the same model under one key."""

    host: str = doc("127.0.0.1", "Address the streamable HTTP transport binds (--http); anything but loopback without serve.api_key prints a warning.")
    port: int = doc(8001, "TCP port of the streamable HTTP transport (8001: next to `londinium serve`'s 8000).")
    max_prompt_chars: int = doc(8000, "Longest prompt, passage or continuation a tool accepts, in characters.")
    surprising_tokens: int = doc(10, "Most surprising tokens score_text lists.")


# --------------------------------------------------------------------------------------------------
# The whole config


@dataclass
class Config:
    preset: str = doc("", "Preset applied under the file's values: " + ", ".join(["tiny", "small", "slm", "regular"]) + ".")
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    mcp: McpConfig = field(default_factory=McpConfig)

    def section(self, name: str) -> Any:
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section_dict(self, name: str) -> dict[str, Any]:
        return dataclasses.asdict(getattr(self, name))


SECTIONS: dict[str, type] = {f.name: f.type for f in dataclasses.fields(Config) if f.name != "preset"}
# dataclasses stores annotations as strings under `from __future__ import annotations`
SECTIONS = {name: globals()[t] if isinstance(t, str) else t for name, t in SECTIONS.items()}

# Named config fragments. Sizes are chosen by measurement on a 2-core CPU (tiny) or follow GPT-2.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "tokenizer": {"vocab_size": 8192},
        # The shape with the lowest validation loss after 10 minutes on the 2-core CPU
        # (benchmarks/tiny_preset.py, 2026-11-22, equal wall-clock budgets): 2L/128 4.82, 4L/192 4.96
        # (4L/256, 6L/256 and 6L/384 trailed further at 90 s and 5 min). Ten minutes is far short of
        # compute-optimal for any of them, so the fastest model (~7,400-8,900 tok/s) wins by seeing
        # the most tokens. max_steps is what it reaches in ~10 minutes there.
        "model": {"n_layer": 2, "n_head": 4, "n_embd": 128, "context": 256},
        "train": {"max_steps": 1100, "batch_size": 16, "learning_rate": 2e-3, "warmup_steps": 100, "eval_every": 250},
    },
    "small": {
        "tokenizer": {"vocab_size": 8192},
        "model": {"n_layer": 6, "n_head": 6, "n_embd": 384, "context": 256},
        "train": {"max_steps": 5000, "batch_size": 16, "learning_rate": 1e-3},
    },
    "slm": {
        "tokenizer": {"vocab_size": 16384},
        "model": {"n_layer": 12, "n_head": 12, "n_embd": 768, "context": 1024},
        "train": {"max_steps": 20000, "batch_size": 8, "batch_tokens": 131072, "learning_rate": 6e-4, "warmup_steps": 1000},
    },
    "regular": {
        "tokenizer": {"vocab_size": 32768},
        "model": {"n_layer": 24, "n_head": 16, "n_embd": 1024, "context": 1024},
        "train": {"max_steps": 50000, "batch_size": 8, "batch_tokens": 262144, "learning_rate": 3e-4, "warmup_steps": 2000},
    },
}


# --------------------------------------------------------------------------------------------------
# Loading, overriding, saving


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the field type `tp`; ints are accepted for floats. Raises ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            if arm is type(None) and value is None:
                return None
            try:
                return _coerce(value, arm, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {tp}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (arm, *_) = typing.get_args(tp) or (Any,)
        return [_coerce(v, arm, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    return value


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _apply(cfg: Config, data: dict[str, Any], origin: str) -> None:
    """Apply a nested {section: {key: value}} mapping onto cfg, validating every key."""
    for name, values in data.items():
        if name == "preset":
            cfg.preset = _coerce(values, str, f"{origin}: preset")
            continue
        if name not in SECTIONS:
            raise ConfigError(
                f"{origin}: unknown section [{name}]; known sections: {', '.join(SECTIONS)}"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: [{name}] must be a table of key = value")
        section = getattr(cfg, name)
        hints = _field_types(type(section))
        for key, value in values.items():
            if key not in hints:
                raise ConfigError(
                    f"{origin}: unknown key '{key}' in section [{name}]; "
                    f"known keys: {', '.join(hints)}"
                )
            setattr(section, key, _coerce(value, hints[key], f"{origin}: {name}.{key}"))


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse `section.key=value`; the value is read as a TOML literal, else as a bare string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. --set train.max_steps=2000")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, key, value


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    preset: str | None = None,
) -> Config:
    """Build the effective config: defaults < preset < file < overrides."""
    file_data: dict[str, Any] = {}
    if path is not None:
        file_data = read_toml(path, "config file", ConfigError)
    override_data: dict[str, dict[str, Any]] = {}
    for text in overrides or []:
        section, key, value = parse_override(text)
        override_data.setdefault(section, {})[key] = value

    name = preset or file_data.get("preset") or ""
    cfg = Config()
    if name:
        if name not in PRESETS:
            raise ConfigError(f"unknown preset '{name}'; known presets: {', '.join(PRESETS)}")
        _apply(cfg, PRESETS[name], f"preset {name}")
    _apply(cfg, file_data, str(path) if path else "config")
    _apply(cfg, override_data, "--set")
    cfg.preset = name
    return cfg


def to_toml(cfg: Config | Any, with_docs: bool = True) -> str:
    """Render a config (or one section) as TOML, with each field's doc as a comment above it."""
    lines: list[str] = []

    def render_section(title: str | None, obj: Any) -> None:
        if title:
            lines.append(f"[{title}]")
        for f in dataclasses.fields(obj):
            if dataclasses.is_dataclass(getattr(obj, f.name)):
                continue
            if with_docs and f.metadata.get("doc"):
                lines.append(f"# {f.metadata['doc']}")
            lines.append(tomli_w.dumps({f.name: getattr(obj, f.name)}).strip())
        lines.append("")

    if isinstance(cfg, Config):
        render_section(None, cfg)
        for name in SECTIONS:
            render_section(name, getattr(cfg, name))
    else:
        render_section(None, cfg)
    return "\n".join(lines)
