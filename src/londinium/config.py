"""One typed configuration for every stage.

`londinium.toml` has one table per stage (`[corpus]`, `[tokenizer]`, ...). Each table is a dataclass
below; every field has a default and a one-line doc (`config show` prints them as comments).
Values are resolved in this order, later wins:

    dataclass defaults  <  preset (`--preset tiny` or `preset = "tiny"` in the file)  <  the TOML file  <  `--set section.key=value`

A field that names a file or folder is declared with `path=` (see `doc`): a relative value is
resolved when the config is loaded, against the folder of the file it was written in (a config
file, or a run's saved config), or against the current directory for `--set`. So a config means the
same wherever the command starts (an MCP host, cron), and every later error names an absolute path.

Unknown sections or keys are errors that name the key and the section, so a typo never silently
does nothing (the seed project's global dict let the same key be written twice, the later silently
winning).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from londinium.errors import ConfigError
from londinium.files import loads_toml, read_toml, tomllib


@dataclass(frozen=True)
class Rule:
    """The values a field accepts, declared next to its default (`doc(..., ge=1)`).

    Bounds apply to numbers, `choices` and `pattern` to strings; for a list field they apply to each
    item, and `nonempty` asks for at least one item (or a non-empty string). Floats must always be
    finite. `problem` says what is wrong in the words the error message uses, or None."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str = ""
    nonempty: bool = False
    hint: str = ""  # what a special value means, appended to the rule: "(0: off)"

    def describe(self) -> str:
        parts = []
        if self.choices:
            parts.append("must be one of " + ", ".join(repr(c) for c in self.choices))
        if self.pattern:
            parts.append(f"must match {self.pattern}")
        lo = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else None
        hi = f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else None
        if lo and hi:
            parts.append(f"must be in {lo}, {hi}")
        elif lo:
            parts.append(f"must be {'>=' if self.ge is not None else '>'} {lo[1:]}")
        elif hi:
            parts.append(f"must be {'<=' if self.le is not None else '<'} {hi[:-1]}")
        text = "; ".join(parts) or "must be a finite number"
        return f"{text} {self.hint}" if self.hint else text

    def problem(self, value: Any) -> str | None:
        if isinstance(value, list):
            if self.nonempty and not value:
                return "must not be empty"
            for item in value:
                if (p := self.problem(item)) is not None:
                    return f"item {item!r} {p}"
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if isinstance(value, str):
            if "\x00" in value or _unencodable(value):
                return "must be UTF-8 text without NUL characters"
            if self.nonempty and not value:
                return "must not be empty"
            if self.choices and value not in self.choices:
                return self.describe()
            if self.pattern and not re.fullmatch(self.pattern, value):
                return self.describe()
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if ((self.ge is not None and not value >= self.ge) or (self.gt is not None and not value > self.gt)
                    or (self.le is not None and not value <= self.le) or (self.lt is not None and not value < self.lt)):
                return self.describe()
        return None


def _num(x: float) -> str:
    """A bound as written in an error message: whole numbers in full (2147483647, not 2.14748e+09)."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e18 else f"{x:g}"


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:  # a lone surrogate, as argv's surrogateescape makes of bad bytes
        return True


def doc(default: Any, text: str, path: bool | str = False, **rule: Any) -> Any:
    """A dataclass field with a default, a one-line description (shown by `config show`) and the
    values it accepts (`Rule`'s keywords: ge, gt, le, lt, choices, pattern, nonempty, hint).

    `path=True` marks a file or folder; `path=<regex>` one too, except values the regex matches
    (names such as 'best'): a relative one is resolved at load time (`resolve_path`)."""
    metadata = {"doc": text, "rule": Rule(**rule), "path": path}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=metadata)
    return field(default=default, metadata=metadata)


# Shared rules. Seeds feed numpy's generator (0 .. 2**32 - 1) after adding the rank.
SEED = dict(ge=0, le=2**31 - 1)
SHARE = dict(ge=0, le=1)
CHECKPOINT = dict(nonempty=True, hint="('best', 'latest' or a checkpoint directory)", path=r"best|latest|step-\d+")
PATH_NOTE = "A relative path is relative to the config file's folder (given with --set, to the current directory)."
# A torch device string; whether it exists here is checked when the device is chosen.
DEVICE = dict(pattern=r"auto|cpu|mps|(cuda|xpu)(:\d+)?", hint="(e.g. 'auto', 'cpu', 'cuda', 'cuda:1', 'mps')")
RUN_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"  # it names a directory under runs/
RUN_OR_EMPTY = dict(pattern=f"({RUN_NAME})?", hint="(a run name, or empty for train.run_name)")
# 256 byte tokens plus the special tokens of tokenizer.codec.SPECIAL_TOKENS (a test keeps them equal).
MIN_VOCAB = 256 + 6
MAX_VOCAB = 2**20  # beyond any real vocabulary (256k); the embedding table would not fit anyway


# --------------------------------------------------------------------------------------------------
# Stage sections


@dataclass
class CorpusConfig:
    """Sources to documents: fetch, extract, normalise, filter, deduplicate, segment, split."""

    sources: str = doc("", "Path of a sources TOML registry; empty uses the embedded default (Shakespeare, Milton, KJV).", path=True)
    cache_dir: str = doc("", "Download cache (by sha256); empty uses $LONDINIUM_CACHE or ~/.cache/londinium.", path=True)
    max_file_mb: float = doc(64.0, "Files, archive members and downloads larger than this are rejected.", gt=0, le=1e6)
    download_timeout_s: float = doc(60.0, "Deadline of one download attempt in seconds, from connecting to its last byte (a server that trickles is cut off); pip gets it per network operation.", gt=0, le=604800)
    download_retries: int = doc(3, "Retries of a failed download (5xx, timeout), with exponential backoff.", ge=0, le=20)
    min_chars: int = doc(200, "Documents shorter than this (after cleaning) are rejected.", ge=0)
    min_alpha_words: float = doc(0.6, "Minimum share of whitespace-separated tokens that contain a letter.", **SHARE)
    max_noise: float = doc(0.25, "Maximum OCR-noise score (share of words with stray symbols or broken letter mixes).", **SHARE)
    max_boilerplate: float = doc(0.3, "Maximum share of lines that look like licence or site boilerplate.", **SHARE)
    min_english: float = doc(0.25, "Minimum share of words that are common English function words (old spellings count).", **SHARE)
    min_english_paragraph: float = doc(0.12, "Paragraphs of 30+ words scoring below this English share are dropped (Latin or Italian poems inside an English book); 0 turns it off.", **SHARE)
    near_dup_threshold: float = doc(0.3, "Jaccard similarity (word shingles of a form folded as the corpus profile says) at or above which two texts are grouped as near-duplicates; modern vs Folio texts of one play measure 0.38-0.61, different plays <= 0.02.", gt=0, le=1)
    near_dup_containment: float = doc(0.5, "Share of the smaller text's shingles found in another text at or above which the two are grouped (an anthology and a poem it reprints).", gt=0, le=1)
    near_duplicates: str = doc("auto", "What happens to a group of near-duplicates: 'group' keeps them all in one split; 'keep-one' keeps the longest and records the others as rejections naming it; 'auto' is 'group' for the embedded registry (a play's modern and Folio texts are near-duplicates on purpose) and 'keep-one' for your own (copies of a page are waste).", choices=("auto", "group", "keep-one"))
    shingle_words: int = doc(3, "Words per shingle for MinHash near-duplicate detection.", ge=1, le=64)
    num_perm: int = doc(128, "MinHash permutations.", ge=16, le=4096, hint="(fewer leave the LSH index too few bands)")
    max_doc_chars: int = doc(4000, "Maximum characters of one training document; longer texts are cut at paragraph, then sentence, boundaries.", ge=1)
    val_fraction: float = doc(0.05, "Share of each source's characters held out for validation, in whole document groups.", ge=0, lt=1)
    test_fraction: float = doc(0.05, "Share of each source's characters held out for test, in whole document groups.", ge=0, lt=1)
    seed: int = doc(1337, "Seed of the split: the same seed and inputs give the same split.", **SEED)
    strict: bool = doc(False, "Fail on the first bad source or file instead of recording it and going on.")


@dataclass
class TokenizerConfig:
    """Byte-level BPE trained on the corpus's train split."""

    vocab_size: int = doc(8192, "Vocabulary size including special tokens (<= 65,536 keeps shards uint16).", ge=MIN_VOCAB, le=MAX_VOCAB)
    min_frequency: int = doc(2, "A merge must occur at least this often to be learned.", ge=1)
    compare_gpt2: bool = doc(True, "Compare with GPT-2's tokenizer in the report (its files are fetched once into the download cache).")
    compare_sources: bool = doc(True, "Report what domain training buys: per source, a same-size tokenizer trained on the other sources only.")


@dataclass
class DataConfig:
    """Token shards: each split encoded into a NumPy memmap."""

    encode_batch_docs: int = doc(256, "Documents per batch call to the tokenizer while encoding shards.", ge=1, le=1_000_000)


@dataclass
class ModelConfig:
    """The GPT architecture. Variants are switches, not classes."""

    n_layer: int = doc(6, "Transformer blocks.", ge=1, le=1024)
    n_head: int = doc(6, "Attention (query) heads.", ge=1, le=1024)
    n_kv_head: int = doc(0, "Key/value heads for grouped-query attention; 0 means n_head (multi-head).", ge=0, le=1024, hint="(0: n_head)")
    n_embd: int = doc(384, "Width of the residual stream.", ge=1, le=65536)
    context: int = doc(256, "Maximum sequence length (positions).", ge=1, le=2**20)
    vocab_size: int = doc(0, "Vocabulary size; 0 takes the workspace tokenizer's size.", ge=0, le=MAX_VOCAB, hint="(0: the tokenizer's)")
    positions: str = doc("learned", "Position encoding: 'learned' (GPT-2) or 'rope' (Llama).", choices=("learned", "rope"))
    norm: str = doc("layernorm", "'layernorm' (GPT-2) or 'rmsnorm' (Llama).", choices=("layernorm", "rmsnorm"))
    mlp: str = doc("gelu", "'gelu' (GPT-2) or 'swiglu' (Llama).", choices=("gelu", "swiglu"))
    mlp_ratio: float = doc(4.0, "Hidden width of the MLP as a multiple of n_embd (SwiGLU uses 2/3 of it, rounded).", gt=0, le=64)
    bias: bool = doc(True, "Bias in linear layers and norms.")
    tie_embeddings: bool = doc(True, "Share the token embedding with the output head.")
    dropout: float = doc(0.0, "Dropout on attention, residual and embeddings.", ge=0, lt=1)
    rope_theta: float = doc(10000.0, "RoPE base frequency.", gt=0, le=1e12)
    n_experts: int = doc(0, "Experts in a mixture-of-experts MLP; 0 means a dense MLP.", ge=0, le=1024, hint="(0: dense)")
    top_k: int = doc(2, "Experts each token is routed to.", ge=1)
    aux_loss_weight: float = doc(0.01, "Weight of the router's load-balancing loss.", ge=0)
    norm_eps: float = doc(1e-5, "Epsilon of LayerNorm/RMSNorm (GPT-2 and Llama 2 use 1e-5).", gt=0, lt=1)


@dataclass
class TrainConfig:
    """Training: optimiser, schedule, batches, checkpoints, devices."""

    max_steps: int = doc(2000, "Optimiser steps.", ge=1)
    max_minutes: float = doc(0.0, "Time budget: the steps are planned from this machine's measured pace so warm-up and decay fit it (max_steps is then not used), and the run stops there at the latest (0: none).", ge=0, le=10**7, hint="(0: no time budget)")
    budget_reserve: float = doc(0.05, "Share of train.max_minutes left unplanned, for a machine that runs slower than its pace was measured (raise it on a busy, shared machine).", ge=0, lt=1)
    max_tokens: int = doc(0, "Token budget: max_tokens // tokens per step steps, the schedule sized to them (max_steps is then not used; with max_minutes the smaller plan wins; 0: none).", ge=0, le=10**15, hint="(0: no token budget)")
    batch_size: int = doc(16, "Sequences per micro-batch on each process.", ge=1)
    batch_tokens: int = doc(0, "Tokens per optimiser step across processes; accumulation is derived. 0: one micro-batch.", ge=0, le=2**30, hint="(0: one micro-batch; 2**30 is far past any real batch)")
    learning_rate: float = doc(1e-3, "Peak learning rate (AdamW's).", gt=0)
    schedule: str = doc("cosine", "Learning-rate decay after warm-up: 'cosine' (to the floor at max_steps) or 'wsd' (warmup-stable-decay: the peak, then a linear decay to the floor over the last decay_share of the steps).", choices=("cosine", "wsd"))
    decay_share: float = doc(0.2, "Share of max_steps the 'wsd' schedule spends decaying.", gt=0, le=1)
    min_lr_ratio: float = doc(0.1, "Decay floor as a share of the peak.", **SHARE)
    warmup_steps: int = doc(100, "Linear warm-up steps.", ge=0)
    optimizer: str = doc("adamw", "'adamw', or 'muon': Muon for the 2-D weights inside the blocks, AdamW for embeddings, head, gains and biases.", choices=("adamw", "muon"))
    muon_lr: float = doc(0.02, "Muon's peak learning rate (Keller Jordan's scale; the schedule scales it with the AdamW rate).", gt=0)
    muon_momentum: float = doc(0.95, "Muon's (Nesterov) momentum.", ge=0, lt=1)
    weight_decay: float = doc(0.1, "Decoupled weight decay of matrices and embeddings (not gains or biases).", ge=0)
    beta1: float = doc(0.9, "AdamW beta1.", ge=0, lt=1)
    beta2: float = doc(0.95, "AdamW beta2.", ge=0, lt=1)
    grad_clip: float = doc(1.0, "Clip the gradient norm to this (0: off).", ge=0, hint="(0: off)")
    seed: int = doc(1337, "Seed of initialisation, data order and dropout.", **SEED)
    device: str = doc("auto", "'auto' (cuda, then mps, then cpu), or a torch device string.", **DEVICE)
    dtype: str = doc("auto", "'auto' (fp32 on CPU, bf16 on GPUs that have it, else fp16), 'float32', 'bfloat16', 'float16'.", choices=("auto", "float32", "bfloat16", "float16"))
    compile: bool = doc(False, "torch.compile the model.")
    eval_every: int = doc(200, "Steps between evaluations (and checkpoints).", ge=1)
    eval_batches: int = doc(20, "Validation batches per evaluation.", ge=1)
    keep_last: int = doc(2, "Checkpoints kept besides the best one.", ge=1)
    log_every: int = doc(10, "Steps between metric lines in metrics.jsonl.", ge=1)
    wandb: bool = doc(False, "Log to Weights & Biases when installed.")
    tensorboard: bool = doc(False, "Log to TensorBoard when installed.")
    run_name: str = doc("main", "Name of the run: its checkpoints, metrics and plot live in runs/<name>/.", pattern=RUN_NAME, hint="(letters, digits, '.', '_' or '-': it names a directory)")
    resume: bool = doc(False, "Continue the run from its newest valid checkpoint (quickstart always does).")
    peak_tflops: float = doc(0.0, "Peak TFLOP/s per process for MFU; 0 measures a matmul on CPU or looks up known GPUs.", ge=0, hint="(0: measure)")
    budget_warn_epochs: float = doc(4.0, "Warn before training when the plan reads the train split more than this many times.", gt=0)
    threads: int = doc(0, "CPU threads per process (torch.set_num_threads); 0 keeps torch's default. Bit-exact resume needs the same value.", ge=0, le=4096, hint="(0: torch's default)")
    objective: str = doc("next-token", "What the run trains for: 'next-token' (pre-training on the shards) 'sft' (fine-tuning sft.base on conversations; `londinium sft` sets it) or 'distill' (pre-training with a teacher's soft targets, [distill]; `londinium distill` sets it) or 'grpo' (reinforcement learning of rl.base on tasks' rewards, [rl]; `londinium rl` sets it).", choices=("next-token", "sft", "distill", "grpo"))


@dataclass
class SftConfig:
    """`londinium sft`: supervised fine-tuning of a trained run on conversations (docs/sft.md). The run's
    learning rate, schedule and budget come from here (onto its [train]); the rest of [train] applies as set."""

    base: str = doc("", "The run whose checkpoint is fine-tuned (--run); empty: train.run_name.", **RUN_OR_EMPTY)
    checkpoint: str = doc("best", "The base run's checkpoint: 'best', 'latest', 'step-N', or a checkpoint directory (--checkpoint).", **CHECKPOINT)
    run_name: str = doc("", "Name of the SFT run (--name); empty: '<base>-sft'.", **RUN_OR_EMPTY)
    tasks: list[str] = doc(["default"], "Task-set tasks to train on: ['default'] (the task set's default mix), names, or [] (only sft.data).", pattern=r"[A-Za-z0-9][A-Za-z0-9._-]*")
    data: list[str] = doc([], "Your own conversations: JSONL files of {\"messages\": [...]} or {\"prompt\", \"completion\"} (--data, repeatable).", path=True)
    val_share: float = doc(0.05, "Share of the conversations of sft.data held out for validation (at least one), by content hash.", ge=0, lt=1)
    val_conversations: int = doc(500, "Held-out conversations each evaluation scores at most.", ge=1)
    replay_share: float = doc(0.75, "Share of the loss given to pre-training text (replay, against forgetting), read in round(batch_size x share) rows of each batch, at least one (0: none). 0.75 kept the most of the base's text for the format it taught (docs/LOG.md, 2026-12-06).", ge=0, lt=1)
    end_weight: float = doc(1.0, "Weight of each <|end|> target against an ordinary answer token, within the conversations' share of the loss (1: plain). 3 and 10 did not end the tiny assistant's loops (docs/LOG.md, 2026-12-06, \"answers that stop\"), so it stays 1.", ge=0, le=1000)
    learning_rate: float = doc(3e-4, "Peak learning rate of the SFT run (train.learning_rate's role); 3e-4 with replay_share 0.75 forgot least for the format it taught (docs/LOG.md, 2026-12-06).", gt=0)
    schedule: str = doc("cosine", "Learning-rate decay after warm-up, as train.schedule.", choices=("cosine", "wsd"))
    warmup_steps: int = doc(20, "Linear warm-up steps.", ge=0)
    max_steps: int = doc(600, "Optimiser steps (train.max_steps' role).", ge=1)
    max_minutes: float = doc(0.0, "Time budget, planned as train.max_minutes (0: none).", ge=0, le=10**7, hint="(0: no time budget)")
    max_tokens: int = doc(0, "Token budget, planned as train.max_tokens, a step counted as train.batch_size x model.context per process (an upper bound: rows are padded to the batch's longest only; 0: none).", ge=0, le=10**15, hint="(0: no token budget)")
    eval_every: int = doc(100, "Steps between evaluations (and checkpoints).", ge=1)


@dataclass
class RlConfig:
    """`londinium rl`: reinforcement learning with group-relative advantages (GRPO) of a fine-tuned run on
    tasks whose answers a program scores (docs/rl.md). Its learning rate and budget go onto the run's [train]."""

    base: str = doc("", "The run whose checkpoint is trained (--run), usually an SFT run; empty: train.run_name.", **RUN_OR_EMPTY)
    checkpoint: str = doc("best", "The base run's checkpoint: 'best', 'latest', 'step-N', or a checkpoint directory.", **CHECKPOINT)
    run_name: str = doc("", "Name of the RL run (--name); empty: '<base>-rl'.", **RUN_OR_EMPTY)
    tasks: list[str] = doc(["arith"], "Task-set tasks whose train items are the prompts and whose checker is the reward (--task, repeatable).", nonempty=True, pattern=r"[a-z_]+")
    rewards: list[str] = doc([], "Your own reward functions, 'module:function' or a registered name (every task) or 'TASK=module:function' (--reward), each with an optional '@WEIGHT'; several are summed; a function takes (completion, item) and returns a number.", pattern=r"([a-z_]+=)?([A-Za-z_][\w.]*:)?[A-Za-z_]\w*(@[-+.\w]+)?")
    group_size: int = doc(8, "Samples per prompt (G): the group whose mean reward is each sample's baseline.", ge=2, le=256)
    prompts_per_step: int = doc(8, "Prompts per rollout; a rollout is prompts_per_step x group_size samples in one engine call.", ge=1, le=4096)
    max_new_tokens: int = doc(16, "Tokens sampled per answer at most.", ge=1)
    temperature: float = doc(1.0, "Sampling temperature of the rollouts and of pass@k (the loss's log-probabilities use the same).", gt=0)
    top_k: int = doc(0, "Sample among the k most likely tokens only (0: off).", ge=0, hint="(0: off)")
    beta: float = doc(0.0, "Weight of the KL penalty to the frozen base (k3 estimator); 0: no reference model is kept.", ge=0)
    clip_eps: float = doc(0.2, "PPO clip range of the probability ratio, used when a rollout is reused (updates_per_batch > 1).", gt=0, lt=1)
    updates_per_batch: int = doc(1, "Optimiser steps per rollout (1: on-policy, the ratio is 1 and nothing is clipped).", ge=1, le=64)
    scale_rewards: bool = doc(True, "Divide each advantage by its group's reward standard deviation (GRPO); false: r - mean only (Dr. GRPO).")
    loss_type: str = doc("grpo", "'grpo': each answer's tokens averaged, then the answers; 'dr_grpo': the token sum over answers x max_new_tokens (Dr. GRPO); 'token': the token sum over all answer tokens (DAPO, nanochat).", choices=("grpo", "dr_grpo", "token"))
    advantage_k: int = doc(1, "Advantages of the best of k samples (pass@k / max@k over each group's k-subsets, docs/rl.md): k > 1 keeps pass@k as pass@1 rises, below rl.group_size; 1: each sample's own (GRPO).", ge=1, le=255)
    advantage_k_steps: int = doc(0, "Steps that advantage_k holds before the advantages fall back to k = 1 (annealing, as in Pass@K Policy Optimization); 0: the whole run.", ge=0)
    unlikeliness: float = doc(0.0, "Unlikeliness reward (He et al. 2025): each reward x (1 - this x rank / G), the group's least likely answer rank 0, so a right answer the policy found unlikely is pushed up more; 0: off.", ge=0, le=1)
    learning_rate: float = doc(1e-4, "Peak learning rate of the RL run (train.learning_rate's role).", gt=0)
    warmup_steps: int = doc(0, "Linear warm-up steps.", ge=0)
    max_steps: int = doc(100, "Optimiser steps (train.max_steps' role).", ge=1)
    eval_every: int = doc(20, "Steps between evaluations of pass@1 and pass@k (and checkpoints).", ge=1)
    eval_prompts: int = doc(64, "Held-out (val) prompts each evaluation samples.", ge=1)
    pass_k: int = doc(8, "k of pass@k: samples per held-out prompt at each evaluation.", ge=1, le=256)


@dataclass
class DistillConfig:
    """`londinium distill`: a student trained on the shards against a frozen teacher run of the same
    workspace (docs/training.md, "Distillation"): alpha x CE(labels) + (1 - alpha) x T^2 x KL. The rest of [train] applies as set."""

    teacher: str = doc("", "The teacher run (--teacher); it must share the workspace's tokenizer.", pattern=f"({RUN_NAME})?", hint="(a run name)")
    teacher_checkpoint: str = doc("best", "The teacher's checkpoint: 'best', 'latest', 'step-N' or a checkpoint directory (--teacher-checkpoint); the run records the step it resolved to.", **CHECKPOINT)
    teacher_sha256: str = doc("", "The teacher checkpoint's weights' sha256, recorded when the run starts (empty: not yet); a resume refuses a teacher that changed.", pattern=r"([0-9a-f]{64})?")
    run_name: str = doc("", "Name of the student run (--name); empty: '<teacher>-student'.", pattern=f"({RUN_NAME})?", hint="(a run name, or empty for '<teacher>-student')")
    alpha: float = doc(0.5, "Weight of the cross-entropy on the labels; 1 - alpha goes to the KL to the teacher (1: no distillation).", ge=0, le=1)
    temperature: float = doc(2.0, "Temperature T both distributions are softened by; the KL is scaled by T^2 so its gradient keeps its size.", gt=0)
    kl: str = doc("forward", "'forward': KL(teacher || student), mass-covering (Hinton); 'reverse': KL(student || teacher), mode-seeking (MiniLLM).", choices=("forward", "reverse"))
    top_k: int = doc(0, "Read the teacher from a top-k cache (--top-k): its k most likely ids a token and the rest's mass, from one teacher pass over the train shard that the first student writes and later ones reuse; the soft loss runs over those k + 1 outcomes (0: the teacher on the fly, every id).", ge=0)
    sft: bool = doc(False, "Distil on the SFT data instead of the shards (--sft BASE): the student fine-tunes sft.base on [sft]'s conversations, both terms on the assistant's tokens only.")


@dataclass
class EvalConfig:
    """`londinium eval`: perplexity, the cloze set, the profile's probes, contamination, generation quality -> eval/<run>/report.md."""

    checkpoint: str = doc("best", "Checkpoint to evaluate: 'best' (lowest validation loss), 'latest', or a checkpoint directory.", **CHECKPOINT)
    splits: list[str] = doc(["val", "test"], "Corpus splits scored for perplexity and bits per byte (by source and period).", nonempty=True, choices=("train", "val", "test"))
    max_docs: int = doc(64, "Documents per split scored, round-robin by source (0: all; 64 took 30-60 s per split for the tiny preset on a busy 2-core CPU).", ge=0, hint="(0: all)")
    stride: int = doc(0, "Sliding-window step in tokens for documents longer than the context (0: half the context).", ge=0, hint="(0: half the context)")
    batch_size: int = doc(8, "Windows, or probes and cloze items (their choices share one pass over the prompt), per forward pass (memory grows with it x context x vocabulary).", ge=1)
    cloze: bool = doc(True, "Score the cloze set cut from a held-out split (tasks/cloze/): any corpus's default instrument.")
    cloze_split: str = doc("val", "Held-out split the cloze items are cut from.", choices=("val", "test"), hint="(items must be held out)")
    cloze_items: int = doc(1000, "Cloze items at most (fewer when the split has fewer eligible words); the standard error shrinks as 1/sqrt(items).", ge=1, le=1_000_000)
    cloze_choices: int = doc(4, "Choices per cloze item: the answer and cloze_choices - 1 distractors.", ge=2, le=16)
    cloze_context_words: int = doc(48, "Words of the document before the masked word that a cloze item shows.", ge=1, le=10_000)
    cloze_seed: int = doc(1337, "Seed of the cloze set: the same corpus and seed give the same items.", **SEED)
    probes: bool = doc(True, "Score the hand-written probe set: eval.probe_file, or the corpus profile's (period-london has one, neutral none).")
    probe_file: str = doc("", "Probe set (TOML, docs/evaluation.md); empty: the corpus profile's set, if it has one.", path=True)
    contamination_ngram: int = doc(8, "Word n-gram size of the contamination check against the train split.", ge=1, le=64)
    contamination_threshold: float = doc(0.5, "Share of a probe's or reference's n-grams found in the train split at which it is flagged.", gt=0, le=1)
    prompts: int = doc(8, "Held-out prompts for generation, cut from documents of prompt_split (0: no generation).", ge=0, hint="(0: no generation)")
    prompt_split: str = doc("val", "Split the prompts and their reference continuations come from ('val' or 'test').", choices=("val", "test"), hint="(prompts must be held out)")
    prompt_chars: int = doc(200, "Characters at the start of a held-out document used as its prompt (cut at a word boundary).", ge=1)
    reference_words: int = doc(30, "Words after the prompt kept as its reference continuation (BLEU, ROUGE).", ge=1)
    temperatures: list[float] = doc([0.0, 0.7, 1.0], "Sampling temperatures of the samples (0: greedy).", nonempty=True, ge=0, hint="(0 is greedy)")
    samples_per_prompt: int = doc(2, "Samples per prompt and temperature (one at temperature 0).", ge=1)
    max_new_tokens: int = doc(64, "Tokens generated per sample.", ge=1)
    seed: int = doc(1337, "Seed of sampling, so a report card is reproducible.", **SEED)
    period_words: str = doc("", "Word list of period vocabulary (one per line); empty: the corpus profile's list, if any; a file with no words turns the column off.", path=True)
    anachronisms: str = doc("", "Word list of anachronisms (one per line); empty: the corpus profile's list, if any; a file with no words turns the column off.", path=True)


# What generation can hold the linear layers' weights in (londinium.model.quantize), and its KV cache.
WEIGHT_DTYPES = ("float32", "float16", "int8")
KV_DTYPES = ("float32", "int8")


@dataclass
class TasksConfig:
    """`londinium tasks build` and `londinium eval --tasks`: tasks cut from the corpus with answers a program checks (docs/tasks.md)."""

    tasks: list[str] = doc([], "Tasks to cut and evaluate; empty: the corpus's default mix (the generic tasks and its profile's).", pattern=r"[a-z_]+")
    train_items: int = doc(1000, "Items per task cut from the train split (what fine-tuning trains on) at most.", ge=0, le=1_000_000)
    eval_items: int = doc(200, "Items per task cut from each of the val and test splits at most.", ge=1, le=1_000_000)
    choices: int = doc(4, "Choices of a multiple-choice item at most (fewer when the corpus has fewer labels).", ge=2, le=16)
    passage_words: int = doc(40, "Words of the passage a next-word, source, period or title item shows.", ge=4, le=2000)
    seed: int = doc(1337, "Seed of the task set: the same corpus and seed give the same items.", **SEED)
    arith_digits: int = doc(3, "Digits of the arith task's numbers at most (its problems: (10^digits)^2, split 80/10/10).", ge=1, le=9)
    shots: int = doc(2, "Solved train items shown before each question when evaluating a base (not fine-tuned) model; fewer when the context is short.", ge=0, le=32)
    max_tokens: int = doc(48, "Tokens generated per answer at most; an answer without <|end|> by then fails format compliance.", ge=1)
    frequency_penalty: float = doc(0.0, "OpenAI frequency penalty of the greedy task answers (0: plain greedy, as transformers' generate): 0.5 ends the tiny assistant's loops, 97.15% -> 99.95% in format, no score lower by more than its standard error (docs/LOG.md, 2026-12-06, \"answers that stop\").", ge=0, le=2)


@dataclass
class GenerateConfig:
    """Defaults of `londinium generate` and `londinium chat`; each also has a command-line flag."""

    run: str = doc("", "Training run to load; empty: train.run_name.", **RUN_OR_EMPTY)
    checkpoint: str = doc("best", "'best' (lowest validation loss), 'latest', or a checkpoint directory.", **CHECKPOINT)
    device: str = doc("cpu", "Torch device: 'cpu', 'cuda', or 'auto' (cuda, then mps, then cpu).", **DEVICE)
    max_tokens: int = doc(200, "Tokens generated per prompt at most.", ge=1)
    temperature: float = doc(0.8, "Sampling temperature; 0 is greedy decoding.", ge=0, hint="(0 is greedy)")
    top_k: int = doc(0, "Sample among the k most likely tokens only (0: off).", ge=0, hint="(0: off)")
    top_p: float = doc(0.95, "Nucleus sampling: the smallest set of most likely tokens whose probability reaches p (1: off).", gt=0, le=1, hint="(1: off)")
    min_p: float = doc(0.0, "Drop tokens less likely than min_p times the most likely one (0: off).", **SHARE)
    repetition_penalty: float = doc(1.0, "transformers' repetition penalty on tokens of the prompt and output (1: off; 1.1-1.3 is typical).", gt=0, hint="(1: off)")
    frequency_penalty: float = doc(0.0, "OpenAI frequency penalty (-2..2): subtracted once per earlier occurrence in the output.", ge=-2, le=2)
    presence_penalty: float = doc(0.0, "OpenAI presence penalty (-2..2): subtracted once from any token already in the output.", ge=-2, le=2)
    no_repeat_ngram_size: int = doc(0, "Never repeat an n-gram of this many tokens (0: off).", ge=0, hint="(0: off)")
    seed: int = doc(-1, "Seed for reproducible sampling; negative: a fresh seed each run.", le=2**63 - 1, hint="(negative: a fresh seed)")
    stop: list[str] = doc([], "Stop strings: generation ends before the first one, which is not returned.", pattern=r"(?s).+", hint="(no empty strings)")
    chat_window: int = doc(0, "Tokens of conversation `chat` keeps (a rolling window); 0: the model's context.", ge=0, hint="(0: the model's context)")
    weight_dtype: str = doc("float32", "Weights of the linear layers while generating and serving: 'float32', 'float16' or 'int8' (CPU only; fewer bytes per weight, see docs/generation.md).", choices=WEIGHT_DTYPES)
    compile: bool = doc(False, "Compile the decode step with torch.compile (needs a C++ compiler; each new batch shape costs seconds to a minute the first time; at batch 1 a Llama-style step is built with AOTInductor, about 30 s a key span, once: kept in the workspace's compiled/ for later runs).")
    kv_dtype: str = doc("float32", "Keys and values of the running sequences' KV cache: 'float32', or 'int8' (keys per channel, values per token, the newest positions float32: ~3x less memory; docs/generation.md).", choices=KV_DTYPES)
    draft_run: str = doc("", "Speculative decoding: a run of the same workspace (same tokenizer) whose smaller model proposes tokens that this one checks in one pass, while one sequence runs; empty: off (docs/generation.md).", pattern=f"({RUN_NAME})?", hint="(a run name, or empty: off)")
    draft_checkpoint: str = doc("best", "The draft run's checkpoint: 'best', 'latest', or a checkpoint directory.", **CHECKPOINT)
    draft_tokens: int = doc(2, "Tokens the draft proposes a round (k); 2 never lost to the target alone in the measurements (docs/LOG.md), 3-4 gain more when the draft agrees often (greedy).", ge=1, le=64)


@dataclass
class ExportConfig:
    """`londinium export`: a checkpoint -> a Hugging Face directory or a GGUF file (docs/export.md)."""

    run: str = doc("", "Training run to export; empty: train.run_name.", **RUN_OR_EMPTY)
    checkpoint: str = doc("best", "'best' (lowest validation loss), 'latest', 'step-N' (that step of the run), or a checkpoint directory.", **CHECKPOINT)
    format: str = doc("hf", "'hf' (a transformers directory: safetensors, config, tokenizer, chat template, model card) or 'gguf' (one file for llama.cpp).", choices=("hf", "gguf"))
    dtype: str = doc("float32", "Weight dtype: 'float32', 'bfloat16' or 'float16' for hf; 'float32', 'float16' or 'q8_0' for gguf.", choices=("float32", "bfloat16", "float16", "q8_0"))
    out: str = doc("", "Output directory (hf) or file (gguf); empty: exports/<run>-step-<N>[.gguf] in the workspace.", path=True)
    max_shard_mb: float = doc(2000.0, "safetensors files larger than this are split into shards with an index file (transformers' layout).", gt=0, le=1e7)


@dataclass
class ServeConfig:
    """`londinium serve`: an OpenAI-compatible HTTP server with continuous batching (docs/serving.md)."""

    run: str = doc("", "Training run to serve; empty: train.run_name (ignored when export is set).", **RUN_OR_EMPTY)
    checkpoint: str = doc("best", "'best', 'latest', or a checkpoint directory.", **CHECKPOINT)
    export: str = doc("", "Serve a londinium export directory instead of a workspace run.", path=True)
    model_name: str = doc("", "Model id clients send and /v1/models lists; empty: the run's name.")
    host: str = doc("127.0.0.1", "Address to bind; anything but loopback without api_key prints a warning.", nonempty=True)
    port: int = doc(8000, "TCP port.", ge=1, le=65535)
    api_key: str = doc("", "Bearer key every route but /health requires; empty: no key ($LONDINIUM_API_KEY also sets it).")
    device: str = doc("cpu", "Torch device: 'cpu', 'cuda', or 'auto'.", **DEVICE)
    context: int = doc(0, "Tokens of context served (KV cache per sequence, prompt plus reply); 0: the context the model was trained at. Above it (rotary positions only) the positions were never trained, and a warning says so (docs/serving.md, \"Context\").", ge=0, le=1_048_576)
    rope_scaling: str = doc("ntk", "How rotary positions past the trained context are mapped (transformers' rope_scaling): 'ntk' (raise the rotary base), 'linear' (position interpolation) or 'none' (extrapolate); chosen by bits per byte in docs/LOG.md.", choices=("none", "linear", "ntk"))
    max_running: int = doc(16, "Sequences decoded together at most (one KV-cache slot each).", ge=1)
    memory_budget_mb: float = doc(0.0, "Size max_running from this many MiB for the model (weights, a full context of KV cache per sequence, one step's activations, the prefix cache; `londinium model memory`); 0: max_running as set.", ge=0, le=1e9, hint="(0: max_running as set)")
    max_step_tokens: int = doc(512, "Tokens one engine step may process (decode tokens plus prefill chunks): the prefill budget.", ge=1)
    max_waiting: int = doc(64, "Requests waiting for a slot at most; beyond it the server answers 429 with Retry-After.", ge=1)
    log_prompts: bool = doc(False, "Write prompt text into the request log (off: ids, timings and token counts only).")
    shutdown_timeout_s: float = doc(10.0, "On SIGTERM, seconds to let running requests finish before they are cancelled.", gt=0, le=86400)
    max_body_mb: float = doc(4.0, "Request bodies larger than this many megabytes are refused with 413.", gt=0, le=1024)
    request_log: str = doc("", "File the request log is appended to (one JSON line per request); empty: standard error.", path=True)
    stream_interval: int = doc(4, "A stream's chunk carries the tokens of this many engine steps (the first token is sent at once); more: less server CPU per token, burstier streams.", ge=1, le=1024)
    open_docs: bool = doc(False, "Serve /docs, /redoc and /openapi.json without the API key (they always need it when api_key is set and this is off).")
    threads: int = doc(0, "CPU threads of the engine (torch.set_num_threads); 0: one fewer than the cores, at least 1, leaving a core to HTTP.", ge=0, le=1024)
    allowed_hosts: list[str] = doc([], "Host names the server answers to besides its own addresses (421 otherwise: DNS rebinding): a name, name:port, or '*' for any; for a proxy or a DNS name in front of it.", pattern=r"\*|[A-Za-z0-9._-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?", hint="(a host name, optionally with :port, or '*')")
    allowed_origins: list[str] = doc([], "Browser origins (scheme://host[:port]) allowed to call the server, with CORS headers for them; '*' for any; empty: none but its own pages (403 otherwise).", pattern=r"\*|https?://[^\s/]+", hint="(e.g. 'https://app.example.com', or '*')")
    read_timeout_s: float = doc(30.0, "Seconds a client has to send a request's head (from connecting, or from the previous response) and, again, its body; then the connection is closed (408 for a body).", gt=0, le=3600)
    max_connections: int = doc(1024, "Open connections at most (lowered to the open-file limit less a reserve); beyond it, new ones get 503 and are closed at once.", ge=1, le=1_000_000)
    playground: bool = doc(True, "Serve the browser playground at / and its /v1/londinium routes (model details, scoring, corpus search, reports); false: the OpenAI API only.")


@dataclass
class IndexConfig:
    """`londinium index build`: a BM25 search index over the corpus documents (docs/search.md)."""

    splits: list[str] = doc(["train", "val", "test"], "Corpus splits indexed (each hit says which split it is in).", nonempty=True, choices=("train", "val", "test"))
    k1: float = doc(1.5, "BM25 term-frequency saturation (bm25s' default).", gt=0, le=100)
    b: float = doc(0.75, "BM25 length normalisation: 0 none, 1 full (bm25s' default).", **SHARE)
    snippet_chars: int = doc(240, "Characters of document text around the best match that a hit shows.", ge=20, le=100_000)
    folding: str = doc("profile", "How words are keyed for matching: 'profile' folds each source as the corpus profile says (period-london: 'vpon' finds 'upon'; neutral and your own corpora: lower case only), 'none' or 'early-modern' folds every document so (docs/search.md).",
                       choices=("profile", "none", "early-modern"))


@dataclass
class RetrieveConfig:
    """`londinium index vectors`, `londinium embed`, `londinium ask`: embeddings, hybrid retrieval and
    grounded answers with citations (docs/rag.md). The defaults were chosen on the retrieval eval (docs/LOG.md)."""

    embedder: str = doc("corpus", "Embedding model: 'corpus' (static word vectors learned from the corpus by `index vectors`), 'model' (a trained run's mean-pooled hidden states), 'sentence-transformers' (a local model folder), 'wordllama' (the static model in the wordllama wheel), 'openai' (any OpenAI-compatible /v1/embeddings).",
                        choices=("corpus", "model", "sentence-transformers", "wordllama", "openai"))
    embedder_path: str = doc("", "sentence-transformers: the model folder (e.g. one with config_sentence_transformers.json).", path=True)
    embedder_run: str = doc("", "model: the training run whose hidden states embed; empty: train.run_name.", **RUN_OR_EMPTY)
    embedder_url: str = doc("", "openai: the base URL, e.g. http://127.0.0.1:8000/v1 ($OPENAI_API_KEY or serve.api_key is sent).")
    embedder_model: str = doc("", "openai: the model id to send.")
    dim: int = doc(256, "corpus: dimensions of the learned word vectors.", ge=8, le=2048)
    passage_chars: int = doc(250, "A document is cut into passages of at most this many characters (at blank lines, then line and sentence ends) for the vector index and citations.", ge=50, le=100_000)
    mode: str = doc("bm25", "Retrieval: 'bm25' (the search index), 'vector' (the vector index) or 'hybrid' (both, fused; needs `londinium index vectors`).", choices=("bm25", "vector", "hybrid"))
    fusion: str = doc("weighted", "How hybrid fuses the two rankings: 'rrf' (reciprocal-rank fusion) or 'weighted' (min-max normalised scores).", choices=("rrf", "weighted"))
    rrf_k: int = doc(60, "Reciprocal-rank fusion constant: a document at rank r adds 1 / (rrf_k + r).", ge=1, le=10_000)
    vector_weight: float = doc(0.2, "Share of the vector ranking in fusion (1 - it: BM25's).", **SHARE)
    depth: int = doc(20, "Candidates each retriever gives fusion.", ge=1, le=100)
    k: int = doc(5, "Passages `ask` retrieves and cites at most.", ge=1, le=100)
    min_support: float = doc(0.5, "`ask` refuses when the best passage's support (query words found in it, and its similarity) is below this; calibrated on the retrieval eval.", **SHARE)
    answer: str = doc("extractive", "`ask`'s answer: 'extractive' (quote the best passage) or 'generate' (a model writes it from numbered passages).", choices=("extractive", "generate"))


@dataclass
class McpConfig:
    """`londinium mcp`: the model and corpus as MCP tools (docs/mcp.md). The model served, its device and
    the API key come from [serve], so `londinium serve` and `londinium mcp` serve the same model under one key."""

    host: str = doc("127.0.0.1", "Address the streamable HTTP transport binds (--http); anything but loopback without serve.api_key prints a warning.", nonempty=True)
    port: int = doc(8001, "TCP port of the streamable HTTP transport (8001: next to `londinium serve`'s 8000).", ge=1, le=65535)
    max_prompt_chars: int = doc(8000, "Longest prompt, passage or continuation a tool accepts, in characters.", ge=1, le=10_000_000)
    surprising_tokens: int = doc(10, "Most surprising tokens score_text lists.", ge=0, le=1000)


# --------------------------------------------------------------------------------------------------
# The whole config


@dataclass
class Config:
    preset: str = doc("", "Preset applied under the file's values: " + ", ".join(["tiny", "small", "slm", "regular"]) + ".",
                      choices=("", "tiny", "small", "slm", "regular"))
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sft: SftConfig = field(default_factory=SftConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    rl: RlConfig = field(default_factory=RlConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    retrieve: RetrieveConfig = field(default_factory=RetrieveConfig)
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
        # The recipe with the lowest validation bits per byte for the old default's wall clock on
        # the 2-core CPU (benchmarks/recipe_search.py, 2026-12-01, equal wall-clock budgets, stages
        # and figures in docs/LOG.md "The default recipe"). At a quarter budget: a 2,048-token
        # vocabulary beat 1,024, 4,096 and 8,192 (fewer bytes per token, but ~2x the steps of 8,192:
        # the head is most of a 128-wide model's work); Llama blocks beat GPT-2's by 0.09-0.23 bits
        # per byte; warmup-stable-decay beat cosine by 0.05; batch 8 beat 16 by 0.05 and 32 by 0.2
        # (more updates). Deeper or wider shapes, context 512, Muon at 0.05 and untied embeddings
        # lost; Muon at 0.02, lr 4e-3, context 128 and torch.compile gained < 0.02 in one seed each
        # (compile needs a C++ toolchain and its cold compile was not charged) and were not taken.
        # max_steps: as long as the old default's 1,100 steps of batch 16 x vocabulary 8,192 took
        # (in-process interleaved timing: 415 vs 92 ms a step).
        "tokenizer": {"vocab_size": 2048},
        "model": {"n_layer": 2, "n_head": 4, "n_embd": 128, "context": 256,
                  "positions": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False},
        "train": {"max_steps": 4800, "batch_size": 8, "learning_rate": 2e-3, "warmup_steps": 440,
                  "schedule": "wsd", "eval_every": 600},
        # quickstart's assistant (docs/LOG.md 2026-12-06, "quickstart ends with an assistant", and
        # 2026-12-06, "a longer SFT"): on the 4,800-step base, replay is what limits forgetting; with 6
        # of 8 rows replayed pre-training text, more steps taught more (period 38% -> 80-89%, format
        # 94% -> 97-98% from 600 to 2,400 steps) and forgot no more, and lr 3e-4 forgot least:
        # +0.014 bits per byte (5e-4: +0.022). 2,400 steps of ~110-token rows are ~22% of
        # pre-training's compute; 3,600 taught no more.
        "sft": {"max_steps": 2400, "learning_rate": 3e-4, "replay_share": 0.75, "eval_every": 800},  # lr, replay: the defaults
        # 100 held-out items a task and split: the assistant's task table in about a minute (± ~5 points)
        "tasks": {"eval_items": 100},
    },
    "small": {
        "tokenizer": {"vocab_size": 8192},
        "model": {"n_layer": 6, "n_head": 6, "n_embd": 384, "context": 256},
        "train": {"schedule": "wsd", "max_steps": 5000, "batch_size": 16, "learning_rate": 1e-3},
    },
    "slm": {
        "tokenizer": {"vocab_size": 16384},
        "model": {"n_layer": 12, "n_head": 12, "n_embd": 768, "context": 1024},
        "train": {"schedule": "wsd", "max_steps": 20000, "batch_size": 8, "batch_tokens": 131072, "learning_rate": 6e-4, "warmup_steps": 1000},
    },
    "regular": {
        "tokenizer": {"vocab_size": 32768},
        "model": {"n_layer": 24, "n_head": 16, "n_embd": 1024, "context": 1024},
        "train": {"schedule": "wsd", "max_steps": 50000, "batch_size": 8, "batch_tokens": 262144, "learning_rate": 3e-4, "warmup_steps": 2000},
    },
}


# --------------------------------------------------------------------------------------------------
# Relations between fields: each names its keys, says when the values fit, and the rule in words.
# Checked (with every field's own rule) by `validate`, which `load_config` and every stage call.


@dataclass(frozen=True)
class Relation:
    keys: tuple[str, ...]  # "section.key", the first key's section is where it is reported
    ok: Any  # (values of keys, in order) -> bool; called only when every key's own rule holds
    rule: str


def _kv(n_head: int, n_kv_head: int) -> int:
    return n_kv_head or n_head


RELATIONS: tuple[Relation, ...] = (
    Relation(("corpus.val_fraction", "corpus.test_fraction"), lambda v, t: v + t < 1,
             "val_fraction + test_fraction must be < 1 (the rest is the train split)"),
    Relation(("model.n_embd", "model.n_head"), lambda e, h: e % h == 0, "n_embd must be divisible by n_head"),
    Relation(("model.n_head", "model.n_kv_head"), lambda h, kv: _kv(h, kv) <= h and h % _kv(h, kv) == 0,
             "n_head must be divisible by n_kv_head (0: n_head), and n_kv_head <= n_head"),
    Relation(("model.positions", "model.n_embd", "model.n_head"), lambda p, e, h: p != "rope" or (e // h) % 2 == 0,
             "rotary positions need an even head size n_embd / n_head"),
    Relation(("model.mlp_ratio", "model.n_embd"), lambda r, e: int(r * e) >= 1, "the MLP's hidden width int(mlp_ratio * n_embd) must be >= 1"),
    Relation(("model.top_k", "model.n_experts"), lambda k, n: n == 0 or k <= n, "top_k must be <= n_experts (when n_experts > 0)"),
    Relation(("export.dtype", "export.format"),
             lambda d, f: d in (("float32", "bfloat16", "float16") if f == "hf" else ("float32", "float16", "q8_0")),
             "hf takes float32, bfloat16 or float16; gguf takes float32, float16 or q8_0"),
)


def _section_name(obj: Any) -> str:
    for name, cls in SECTIONS.items():
        if type(obj) is cls:
            return name
    raise TypeError(f"not a config section: {obj!r}")


def validate(cfg: Any, origin: str = "config") -> None:
    """Raise ConfigError naming `section.key`, the value and the rule for the first value out of
    range: every field's own rule, then the relations (all of them for a Config; for one section,
    those within it). Stages call it on what they are given, so a config built in Python is held
    to the same rules as one loaded from TOML."""
    sections = {name: getattr(cfg, name) for name in SECTIONS} if isinstance(cfg, Config) else {_section_name(cfg): cfg}
    if isinstance(cfg, Config):
        _check(Config, "preset", cfg.preset, f"{origin}: preset")
    for name, section in sections.items():
        for f in dataclasses.fields(section):
            _check(type(section), f.name, getattr(section, f.name), f"{origin}: {name}.{f.name}")
    for r in RELATIONS:
        if all(k.split(".")[0] in sections for k in r.keys):
            values = [getattr(sections[k.split(".")[0]], k.split(".")[1]) for k in r.keys]
            if not r.ok(*values):
                shown = ", ".join(f"{k} = {v!r}" for k, v in zip(r.keys, values))
                raise ConfigError(f"{origin}: {shown}: {r.rule}")


def _check(cls: type, key: str, value: Any, where: str) -> None:
    """The field's own rule (and its type, for values set in Python)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == key)
    _coerce(value, _field_types(cls)[key], where)
    rule = f.metadata.get("rule")
    problem = rule.problem(value) if rule else None
    if problem:
        raise ConfigError(f"{where} = {value!r}: {problem}")


# --------------------------------------------------------------------------------------------------
# Loading, overriding, saving


def check_field(cls: type, key: str, value: Any, where: str) -> None:
    """Raise ConfigError `where = value: problem` when `value` breaks field `cls.key`'s type or rule:
    for values read from files other than our TOML (an export's config.json names its own keys)."""
    _check(cls, key, value, where)


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
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{where}: {value} is too large for a float") from None
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    return value


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def resolve_path(cls: type, key: str, value: Any, relative_to: str | Path) -> Any:
    """The value of field `cls.key` with a relative path made absolute against `relative_to` (and
    `~` expanded); values of other fields, empty values and names such as 'best' unchanged. Purely
    textual: nothing is looked up on disk at load time, the stage that uses the path checks it."""
    kind = next(f for f in dataclasses.fields(cls) if f.name == key).metadata.get("path")
    if kind and isinstance(value, list):  # a list of files: each item as a path
        return [resolve_path(cls, key, v, relative_to) for v in value]
    if not kind or not isinstance(value, str) or not value or (isinstance(kind, str) and re.fullmatch(kind, value)):
        return value
    return os.path.abspath(os.path.join(relative_to, os.path.expanduser(value)))


def _apply(cfg: Config, data: dict[str, Any], origin: str, relative_to: str | Path | None) -> None:
    """Apply a nested {section: {key: value}} mapping onto cfg, validating every key; relative paths
    are resolved against `relative_to` (None: the mapping holds no paths, as a preset)."""
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
            value = _coerce(value, hints[key], f"{origin}: {name}.{key}")
            _check(type(section), key, value, f"{origin}: {name}.{key}")
            if relative_to is not None:
                value = resolve_path(type(section), key, value, relative_to)
            setattr(section, key, value)


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse `section.key=value`; the value is read as a TOML literal, else as a bare string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. --set train.max_steps=2000")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = loads_toml(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, key, value


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    preset: str | None = None,
    base: str | Path | None = None,
) -> Config:
    """Build the effective config: defaults < preset < file < overrides.

    `base` is a config a stage saved (a run's `config.toml`), laid over the defaults: then only what
    is given explicitly (`preset`, the file's preset and values, `overrides`) changes it, which is
    how a resumed run keeps the config it was trained with.

    Relative paths resolve against the folder of the file that holds them (`path`, `base`), and
    against the current directory for `overrides` (typed on a command line).
    """
    file_data: dict[str, Any] = {}
    if path is not None:
        file_data = read_toml(path, "config file", ConfigError)
    override_data: dict[str, dict[str, Any]] = {}
    for text in overrides or []:
        section, key, value = parse_override(text)
        override_data.setdefault(section, {})[key] = value

    name = preset or file_data.get("preset") or ""
    cfg = Config()
    if base is not None:
        _apply(cfg, read_toml(base, "saved config", ConfigError), str(base), _folder_of(base))
    if name:
        if name not in PRESETS:
            raise ConfigError(f"unknown preset '{name}'; known presets: {', '.join(PRESETS)}")
        _apply(cfg, PRESETS[name], f"preset {name}", None)
    _apply(cfg, file_data, str(path) if path else "config", _folder_of(path) if path is not None else None)
    _apply(cfg, override_data, "--set", os.getcwd())
    cfg.preset = name or cfg.preset  # without an explicit preset, a base keeps its own
    validate(cfg)
    return cfg


def _folder_of(path: str | Path) -> str:
    """The absolute folder of a config file, as named (a link to a config is not followed: its
    paths are relative to where the user put the link)."""
    return os.path.dirname(os.path.abspath(path))


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
                lines.append(f"# {f.metadata['doc']}" + (f" {PATH_NOTE}" if f.metadata.get("path") else ""))
            lines.append(tomli_w.dumps({f.name: getattr(obj, f.name)}).strip())
        lines.append("")

    if isinstance(cfg, Config):
        render_section(None, cfg)
        for name in SECTIONS:
            render_section(name, getattr(cfg, name))
    else:
        render_section(None, cfg)
    return "\n".join(lines)
