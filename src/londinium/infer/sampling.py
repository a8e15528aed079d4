"""Sampling controls: `SamplingParams`, and the logits processors that implement them on a batch.

Every control is one small processor that works on a whole batch `[B, V]` at once, with its setting
per row (a batch can mix a greedy request with a top-p one), so the decode loop pays one tensor op
per control per step, not one per sequence. A `LogitsPipeline` holds only the processors that some
row of the batch asks for, in the order `transformers` applies them:

    raw logits ─► repetition penalty ─► frequency/presence penalty ─► no-repeat n-gram ─► logit bias
               ─► temperature ─► top-k ─► top-p ─► min-p ─► sample (or argmax when temperature = 0)

Definitions, so the numbers match what users know:
- repetition penalty (`transformers`, from CTRL): a token already in the prompt or the output has
  its logit divided by the penalty when positive, multiplied by it when negative;
- frequency and presence penalties (OpenAI): `logit -= count * frequency_penalty + (count > 0) *
  presence_penalty`, counting tokens of the generated text only;
- no-repeat n-gram (`transformers`): a token that would complete an n-gram already present in the
  prompt or output is banned;
- logit bias (OpenAI): added to the logit of the token id; -100 bans a token, +100 all but forces it;
- top-p keeps the smallest set of most likely tokens whose probability reaches p; min-p keeps tokens
  whose probability is at least min_p times the most likely token's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Sequence

import torch

from londinium.errors import LondiniumError


class SamplingError(LondiniumError):
    """A sampling parameter is out of range; the message names the field and its valid range."""


@dataclass
class SamplingParams:
    """What to generate for one prompt. The defaults are the OpenAI API's (temperature 1, no limits)."""

    max_tokens: int = 64
    temperature: float = 1.0  # 0 means greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    min_p: float = 0.0  # 0: off
    repetition_penalty: float = 1.0  # 1: off
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    no_repeat_ngram_size: int = 0  # 0: off
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None  # None: drawn from torch's global generator (so torch.manual_seed applies)
    n: int = 1  # completions returned
    best_of: int | None = None  # samples drawn, the n with the highest mean log-probability returned
    logprobs: int | None = None  # None: none; k >= 0: each token's log-probability and its top k alternatives
    stop: list[str] = field(default_factory=list)  # stop strings, matched on decoded text, not returned
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    num_beams: int = 1  # > 1: beam search (deterministic; sampling controls other than penalties are off)
    length_penalty: float = 1.0  # beam search: score = sum of log-probs / length ** length_penalty
    truncate: bool = False  # drop tokens from the left of a prompt that does not fit, instead of refusing it
    constraint: Any = None  # a `londinium.infer.constrain.Constraint` the output must match (None: free text)

    @classmethod
    def from_config(cls, gen: Any, **overrides: Any) -> SamplingParams:
        """The `[generate]` section's defaults (a `GenerateConfig`), with `overrides` on top.

        The one place that decides defaults: the CLI's flags, the HTTP server and MCP all build their
        SamplingParams here, so a value set in `londinium.toml` means the same everywhere. A negative
        seed in the config means "a fresh seed each time" (None)."""
        values: dict[str, Any] = {name: getattr(gen, name) for name in CONFIG_FIELDS}
        values["stop"] = list(gen.stop)
        if values["seed"] is not None and values["seed"] < 0:
            values["seed"] = None
        values.update(overrides)
        return cls(**values)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def samples(self) -> int:
        """Sequences to decode for this request: best_of when set, else n."""
        return self.best_of if self.best_of is not None else self.n

    def replace(self, **changes: Any) -> SamplingParams:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return SamplingParams(**values)

    def validate(self, vocab_size: int | None = None) -> SamplingParams:
        """Raise SamplingError naming the first field out of range; return self for chaining."""

        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise SamplingError(f"sampling parameter {name} = {getattr(self, name)!r}: {rule}")

        need(isinstance(self.max_tokens, int) and self.max_tokens >= 1, "max_tokens", "must be an integer >= 1")
        need(_finite(self.temperature) and self.temperature >= 0, "temperature", "must be >= 0 (0 is greedy)")
        need(isinstance(self.top_k, int) and self.top_k >= 0, "top_k", "must be an integer >= 0 (0 is off)")
        need(_finite(self.top_p) and 0 < self.top_p <= 1, "top_p", "must be in (0, 1] (1 is off)")
        need(_finite(self.min_p) and 0 <= self.min_p <= 1, "min_p", "must be in [0, 1] (0 is off)")
        need(_finite(self.repetition_penalty) and self.repetition_penalty > 0, "repetition_penalty", "must be > 0 (1 is off)")
        need(_finite(self.frequency_penalty) and -2 <= self.frequency_penalty <= 2, "frequency_penalty", "must be in [-2, 2] (OpenAI's range)")
        need(_finite(self.presence_penalty) and -2 <= self.presence_penalty <= 2, "presence_penalty", "must be in [-2, 2] (OpenAI's range)")
        need(isinstance(self.no_repeat_ngram_size, int) and self.no_repeat_ngram_size >= 0, "no_repeat_ngram_size", "must be an integer >= 0 (0 is off)")
        need(isinstance(self.n, int) and self.n >= 1, "n", "must be an integer >= 1")
        need(self.best_of is None or (isinstance(self.best_of, int) and self.best_of >= self.n), "best_of", f"must be >= n ({self.n})")
        need(self.logprobs is None or (isinstance(self.logprobs, int) and 0 <= self.logprobs <= 20), "logprobs", "must be between 0 and 20 alternatives, or None")
        need(isinstance(self.num_beams, int) and self.num_beams >= 1, "num_beams", "must be an integer >= 1")
        need(self.num_beams == 1 or self.n <= self.num_beams, "n", f"beam search returns at most num_beams ({self.num_beams}) sequences")
        need(self.num_beams == 1 or self.best_of is None, "best_of", "does not apply to beam search (it keeps the best beams itself)")
        need(_finite(self.length_penalty), "length_penalty", "must be a finite number")
        need(self.constraint is None or self.num_beams == 1, "constraint", "does not apply to beam search; use num_beams = 1")
        need(all(isinstance(s, str) and s for s in self.stop), "stop", "must be a list of non-empty strings")
        need(self.seed is None or (isinstance(self.seed, int) and -2**63 <= self.seed < 2**64), "seed",
             "must be an integer in [-2**63, 2**64) (what a torch generator takes) or None")
        for name in ("logit_bias", "stop_token_ids"):
            ids = self.logit_bias.keys() if name == "logit_bias" else self.stop_token_ids
            for t in ids:
                if not isinstance(t, int) or t < 0 or (vocab_size is not None and t >= vocab_size):
                    span = f"0 .. {vocab_size - 1}" if vocab_size is not None else "ids are >= 0"
                    raise SamplingError(f"sampling parameter {name}: token id {t!r} is not in the vocabulary ({span})")
        for t, b in self.logit_bias.items():
            if not _finite(b) or not -100 <= b <= 100:
                raise SamplingError(f"sampling parameter logit_bias: bias {b!r} of token {t} must be in [-100, 100] (OpenAI's range)")
        return self


# The SamplingParams fields that the [generate] config section sets a default for (same names).
CONFIG_FIELDS = ("max_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "frequency_penalty",
                 "presence_penalty", "no_repeat_ngram_size", "seed", "stop")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# ---- processors --------------------------------------------------------------------------------
#
# Each processor: `__call__(logits [B, V]) -> logits` (may work in place) and `observe(tokens [B])`,
# called after every step with the token each row took, for the ones that keep state.


class LogitsProcessor:
    # Attributes that hold one entry per row (tensors along dim 0, or lists): what `select` and
    # `extend` carry when the engine's running sequences leave and join.
    per_row: tuple[str, ...] = ()

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def observe(self, tokens: torch.Tensor) -> None:
        pass

    def select(self, rows: list[int]) -> None:
        """Keep these rows, in this order (sequences left the batch)."""
        for name in self.per_row:
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                setattr(self, name, value[torch.tensor(rows, dtype=torch.long, device=value.device)])
            else:
                setattr(self, name, [value[r] for r in rows])
        self._resized()

    def extend(self, other: LogitsProcessor) -> None:
        """Append the rows of `other`, a processor of the same kind built for the joining sequences."""
        for name in self.per_row:
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(self, name, torch.cat([mine, theirs]) if isinstance(mine, torch.Tensor) else mine + theirs)
        self._resized()

    def _resized(self) -> None:
        """Recompute what is derived from the per-row state."""

    def reorder(self, rows: torch.Tensor) -> None:
        """Beam search: row b now continues the sequence that was row `rows[b]`."""


def _column(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """A per-row setting as a `[B, 1]` tensor that broadcasts over the vocabulary."""
    return torch.tensor(values, dtype=like.dtype, device=like.device)[:, None]


class RepetitionPenalty(LogitsProcessor):
    """CTRL's penalty as in `transformers`: tokens seen in the prompt or output are made less likely."""

    per_row = ("penalty", "seen")

    def __init__(self, penalty: Sequence[float], histories: Sequence[Sequence[int]], vocab_size: int, device: torch.device | str = "cpu"):
        self.penalty = torch.tensor(penalty, dtype=torch.float32, device=device)[:, None]
        self.seen = torch.zeros(len(histories), vocab_size, dtype=torch.bool, device=device)
        for b, ids in enumerate(histories):
            if ids:
                self.seen[b, torch.tensor(list(ids), dtype=torch.long, device=device)] = True
        self.rows = torch.arange(len(histories), device=device)

    def _resized(self) -> None:
        self.rows = torch.arange(len(self.penalty), device=self.penalty.device)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        p = self.penalty.to(logits.dtype)
        penalised = torch.where(logits < 0, logits * p, logits / p)
        return torch.where(self.seen, penalised, logits)

    def observe(self, tokens: torch.Tensor) -> None:
        self.seen[self.rows, tokens] = True

    def reorder(self, rows: torch.Tensor) -> None:
        self.seen = self.seen[rows]


class FrequencyPresencePenalty(LogitsProcessor):
    """OpenAI's penalties on the counts of each token in the generated text so far."""

    per_row = ("frequency", "presence", "counts")

    def __init__(self, frequency: Sequence[float], presence: Sequence[float], vocab_size: int, device: torch.device | str = "cpu"):
        self.frequency = torch.tensor(frequency, dtype=torch.float32, device=device)[:, None]
        self.presence = torch.tensor(presence, dtype=torch.float32, device=device)[:, None]
        self.counts = torch.zeros(len(frequency), vocab_size, dtype=torch.float32, device=device)
        self.rows = torch.arange(len(frequency), device=device)

    def _resized(self) -> None:
        self.rows = torch.arange(len(self.frequency), device=self.frequency.device)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits - self.counts * self.frequency - (self.counts > 0).float() * self.presence

    def observe(self, tokens: torch.Tensor) -> None:
        self.counts[self.rows, tokens] += 1

    def reorder(self, rows: torch.Tensor) -> None:
        self.counts = self.counts[rows]


class NoRepeatNGram(LogitsProcessor):
    """Ban any token that would repeat an n-gram of the prompt or output (`transformers`' rule).

    Keeps, per row, a map from each (n-1)-token prefix to the tokens that followed it, updated by one
    entry per step, so a step costs O(1) per row instead of rescanning the sequence.
    """

    per_row = ("sizes", "histories", "followers")

    def __init__(self, sizes: Sequence[int], histories: Sequence[Sequence[int]]):
        self.sizes = list(sizes)
        self.histories = [list(h) for h in histories]
        self.followers: list[dict[tuple[int, ...], set[int]]] = [{} for _ in sizes]
        for b, n in enumerate(self.sizes):
            h = self.histories[b]
            for i in range(len(h) - n + 1 if n else 0):
                self.followers[b].setdefault(tuple(h[i:i + n - 1]), set()).add(h[i + n - 1])

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        for b, n in enumerate(self.sizes):
            h = self.histories[b]
            if n and len(h) >= n - 1:
                banned = self.followers[b].get(tuple(h[len(h) - n + 1:]) if n > 1 else ())
                if banned:
                    logits[b, list(banned)] = -math.inf
        return logits

    def observe(self, tokens: torch.Tensor) -> None:
        for b, t in enumerate(tokens.tolist()):
            n, h = self.sizes[b], self.histories[b]
            h.append(t)
            if n and len(h) >= n:
                self.followers[b].setdefault(tuple(h[len(h) - n:-1]), set()).add(t)

    def reorder(self, rows: torch.Tensor) -> None:
        old_h, old_f = self.histories, self.followers
        self.histories = [list(old_h[r]) for r in rows.tolist()]
        self.followers = [{k: set(v) for k, v in old_f[r].items()} for r in rows.tolist()]


class LogitBias(LogitsProcessor):
    """OpenAI's logit_bias: a fixed number added to chosen tokens' logits."""

    per_row = ("bias",)

    def __init__(self, biases: Sequence[dict[int, float]], vocab_size: int, device: torch.device | str = "cpu"):
        self.bias = torch.zeros(len(biases), vocab_size, dtype=torch.float32, device=device)
        for b, bias in enumerate(biases):
            for t, v in bias.items():
                self.bias[b, t] = v

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits + self.bias

    def reorder(self, rows: torch.Tensor) -> None:
        self.bias = self.bias[rows]


class Temperature(LogitsProcessor):
    """Divide by the temperature (rows with temperature 0 are greedy: they are left as they are)."""

    per_row = ("t",)

    def __init__(self, temperature: Sequence[float], device: torch.device | str = "cpu"):
        self.t = torch.tensor([t if t > 0 else 1.0 for t in temperature], dtype=torch.float32, device=device)[:, None]

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits / self.t


class TopK(LogitsProcessor):
    """Keep the k most likely tokens of each row (k = 0: all of them)."""

    per_row = ("index",)

    def __init__(self, k: Sequence[int], vocab_size: int, device: torch.device | str = "cpu"):
        ks = [min(k_, vocab_size) if k_ > 0 else vocab_size for k_ in k]
        self.kmax = max(ks)
        self.index = torch.tensor(ks, dtype=torch.long, device=device)[:, None] - 1

    def _resized(self) -> None:
        self.kmax = int(self.index.max()) + 1 if len(self.index) else 1

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        threshold = logits.topk(self.kmax, dim=-1).values.gather(1, self.index)
        return keep_at_least(logits, logits, threshold)


def keep_at_least(logits: torch.Tensor, scores: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """`logits` where `scores >= threshold` (per row), -inf elsewhere: the filters' last op. On CPU
    through NumPy: torch's boolean-mask kernels (compare, masked_fill, where) took 100-400 us each
    on `[16, 8192]` here against ~20 us for arithmetic, NumPy's `where` about half as long."""
    if logits.device.type == "cpu" and not logits.requires_grad:
        import numpy as np

        kept = np.where(scores.numpy() >= threshold.numpy(), logits.numpy(), np.float32(-np.inf))
        return torch.from_numpy(kept.astype(logits.numpy().dtype, copy=False))
    return logits.masked_fill(scores < threshold, -math.inf)


def sorted_ascending(x: torch.Tensor) -> torch.Tensor:
    """The values of each row of `x` `[B, V]`, sorted ascending. On CPU through NumPy: torch's CPU sort
    always computes indices too and took ~30x longer here (8.7 ms against 0.27 ms for 16 rows of 8192)."""
    if x.device.type == "cpu":
        import numpy as np

        return torch.from_numpy(np.sort(x.numpy(), axis=-1))
    return x.sort(dim=-1).values


class TopP(LogitsProcessor):
    """Nucleus sampling: keep the smallest set of most likely tokens whose probability reaches p.

    `transformers`' rule, on sorted values only (no permutation to undo): counting from the least
    likely token up, drop the tokens whose cumulative probability is at most 1 - p; the most likely
    token always stays. The cut becomes a probability threshold per row, so the kept set is every
    token at least that likely (a tie at the threshold keeps all its tokens)."""

    per_row = ("p",)

    def __init__(self, p: Sequence[float], device: torch.device | str = "cpu"):
        self.p = torch.tensor(p, dtype=torch.float32, device=device)[:, None]

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        probs = logits.softmax(dim=-1)
        ascending = sorted_ascending(probs).to(probs.device)
        cdf = ascending.cumsum(dim=-1)
        cut = torch.searchsorted(cdf, (1.0 - self.p).to(cdf.dtype), right=True).clamp_(max=logits.shape[-1] - 1)
        # Rows with p = 1 keep everything (float rounding could otherwise drop a far tail): threshold 0.
        threshold = ascending.gather(1, cut) * (self.p < 1.0)
        return keep_at_least(logits, probs, threshold)


class MinP(LogitsProcessor):
    """Keep tokens whose probability is at least min_p times the top token's probability."""

    per_row = ("min_p",)

    def __init__(self, min_p: Sequence[float], device: torch.device | str = "cpu"):
        self.min_p = torch.tensor(min_p, dtype=torch.float32, device=device)[:, None]

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        probs = logits.softmax(dim=-1)
        threshold = probs.amax(dim=-1, keepdim=True) * self.min_p  # amax: no indices (max's cost ~10x here)
        return keep_at_least(logits, probs, threshold)


def _needed(params: Sequence[SamplingParams]) -> list[type[LogitsProcessor]]:
    """The processors some row of a batch asks for, in the order they apply."""
    out: list[type[LogitsProcessor]] = []
    if any(p.repetition_penalty != 1.0 for p in params):
        out.append(RepetitionPenalty)
    if any(p.frequency_penalty or p.presence_penalty for p in params):
        out.append(FrequencyPresencePenalty)
    if any(p.no_repeat_ngram_size for p in params):
        out.append(NoRepeatNGram)
    if any(p.logit_bias for p in params):
        out.append(LogitBias)
    sampling = [p for p in params if not p.greedy]
    # Warpers only change which token is sampled; for an all-greedy batch they cannot change the
    # argmax (nor do they on a greedy row of a mixed batch: each keeps the most likely token).
    if sampling:
        if any(p.temperature not in (0.0, 1.0) for p in params):
            out.append(Temperature)
        if any(p.top_k for p in sampling):
            out.append(TopK)
        if any(p.top_p < 1.0 for p in sampling):
            out.append(TopP)
        if any(p.min_p > 0.0 for p in sampling):
            out.append(MinP)
    return out


PENALTIES = (RepetitionPenalty, FrequencyPresencePenalty, NoRepeatNGram, LogitBias)


def _make(kind: type[LogitsProcessor], params: Sequence[SamplingParams], histories: Sequence[Sequence[int]],
          vocab_size: int, device: torch.device | str) -> LogitsProcessor:
    """The processor `kind` for rows following `params`, whose token histories are `histories`."""
    if kind is RepetitionPenalty:
        return RepetitionPenalty([p.repetition_penalty for p in params], histories, vocab_size, device)
    if kind is FrequencyPresencePenalty:
        return FrequencyPresencePenalty([p.frequency_penalty for p in params], [p.presence_penalty for p in params], vocab_size, device)
    if kind is NoRepeatNGram:
        return NoRepeatNGram([p.no_repeat_ngram_size for p in params], histories)
    if kind is LogitBias:
        return LogitBias([p.logit_bias for p in params], vocab_size, device)
    if kind is Temperature:
        return Temperature([p.temperature for p in params], device)
    if kind is TopK:
        return TopK([p.top_k for p in params], vocab_size, device)
    if kind is TopP:
        return TopP([p.top_p for p in params], device)
    return MinP([p.min_p for p in params], device)


class LogitsPipeline:
    """The processors a batch needs, applied in order; built by `build_pipeline`.

    Rows can join (`add_rows`) and leave (`keep_rows`) between steps, each keeping its own state (the
    tokens a penalty has seen), which is what the engine's continuous batching needs: the pipeline
    holds a processor only while some row asks for it.
    """

    def __init__(self, processors: list[LogitsProcessor], params: Sequence[SamplingParams] = (),
                 vocab_size: int = 0, device: torch.device | str = "cpu"):
        self.processors = processors
        self.params = list(params)
        self.vocab_size, self.device = vocab_size, device

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        for p in self.processors:
            logits = p(logits)
        return logits

    def observe(self, tokens: torch.Tensor) -> None:
        for p in self.processors:
            p.observe(tokens)

    def reorder(self, rows: torch.Tensor) -> None:
        for p in self.processors:
            p.reorder(rows)

    def add_rows(self, params: Sequence[SamplingParams], histories: Sequence[Sequence[int]]) -> None:
        """New rows join at the end: row len(self.params) + i follows params[i], having seen histories[i]."""
        old = self.params
        have = {type(p): p for p in self.processors}
        out = []
        for kind in _needed(old + list(params)):
            if kind in have:
                have[kind].extend(_make(kind, params, histories, self.vocab_size, self.device))
                out.append(have[kind])
            else:
                # The old rows did not ask for this processor, so their setting leaves them unchanged
                # whatever they have seen: an empty history is enough for them.
                out.append(_make(kind, old + list(params), [[] for _ in old] + list(histories), self.vocab_size, self.device))
        self.processors = out
        self.params = old + list(params)

    def keep_rows(self, rows: list[int]) -> None:
        """Keep only these rows, in this order; drop processors that no remaining row asks for."""
        self.params = [self.params[r] for r in rows]
        needed = set(_needed(self.params))
        self.processors = [p for p in self.processors if type(p) in needed]
        for p in self.processors:
            p.select(rows)

    def __len__(self) -> int:
        return len(self.processors)


def penalty_processors(params: Sequence[SamplingParams], histories: Sequence[Sequence[int]], vocab_size: int,
                       device: torch.device | str = "cpu") -> list[LogitsProcessor]:
    """The processors that change the model's scores (beam search uses these too)."""
    return [_make(k, params, histories, vocab_size, device) for k in _needed(params) if k in PENALTIES]


def build_pipeline(params: Sequence[SamplingParams], histories: Sequence[Sequence[int]], vocab_size: int,
                   device: torch.device | str = "cpu") -> LogitsPipeline:
    """The pipeline for a batch: row b follows `params[b]`; `histories[b]` is its prompt's token ids."""
    return LogitsPipeline([_make(k, params, histories, vocab_size, device) for k in _needed(params)],
                          params, vocab_size, device)


# ---- choosing the next token ---------------------------------------------------------------------


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator of its own for one sequence, so its samples do not depend on what it is batched with."""
    if seed is None:
        # Drawn from the global generator, so `torch.manual_seed` makes unseeded runs repeatable too.
        seed = int(torch.randint(0, 2**62, (1,)).item())
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def sample_seed(seed: int | None, index: int) -> int | None:
    """The seed of sample `index` of a request: the n samples of one seeded request differ, and the
    request is repeatable. (Python's hash of a tuple of ints is not randomised between runs.)"""
    if seed is None:
        return None
    return seed if index == 0 else hash((seed, index)) & (2**62 - 1)


class TokenChooser:
    """Pick each row's next token from processed logits: argmax for greedy rows, a sample otherwise.

    Sampling is inverse-CDF: one uniform number per row, drawn from that row's own generator, then
    one batched cumulative sum and binary search. So a seeded row samples the same tokens whether it
    runs alone or in a batch, and a step costs one random number per row rather than one per
    vocabulary entry (drawing V exponentials for the Gumbel-max trick took ~10x longer here).
    """

    def __init__(self, greedy: Sequence[bool], generators: Sequence[torch.Generator | None], device: torch.device | str = "cpu"):
        self.greedy = list(greedy)
        self.generators = list(generators)
        self.all_greedy = all(self.greedy)
        self.greedy_mask = torch.tensor(self.greedy, device=device)
        self.device = device

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.all_greedy:
            return logits.argmax(dim=-1)
        cdf = logits.softmax(dim=-1).cumsum(dim=-1)
        u = torch.cat([torch.rand(1, generator=g, device=self.device) if not greedy else torch.zeros(1, device=self.device)
                       for greedy, g in zip(self.greedy, self.generators)])
        # Scaled by the row's total so float rounding of the sum can never point past the last token;
        # `right=True` skips tokens of probability 0, whose CDF equals their predecessor's.
        sampled = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)
        sampled = sampled.clamp_(max=logits.shape[-1] - 1)
        if not any(self.greedy):
            return sampled
        return torch.where(self.greedy_mask, logits.argmax(dim=-1), sampled)
