"""Domain probes: multiple-choice questions scored by log-likelihood, not by generated text.

A probe is a prompt, its true continuation and wrong ones (distractors). The model scores each
choice by log P(choice | prompt) -- the sum of its tokens' log-probabilities -- and the probe is
right when the true one scores highest. Two readings are reported, as in lm-evaluation-harness:
`accuracy` uses the sum (favours short choices), `accuracy_norm` divides by the choice's UTF-8
bytes (length-fair, tokenizer-independent). `mean_rank` is the rank of the true choice by the sum
(1 = best), averaged: unlike accuracy it still moves when a model gets closer without winning.

A probe set is a TOML file (`[[probe]]` tables: id, category, prompt, answer, distractors, and
optional provenance: source, quote, speaker); see docs/evaluation.md. The default set for the
embedded corpus is `data_files/probes/period_london.toml`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from londinium.errors import LondiniumError
from londinium.eval.perplexity import model_device
from londinium.eval.stats import mean_se
from londinium.files import read_toml

REQUIRED = ("id", "prompt", "answer", "distractors")
OPTIONAL = ("category", "source", "quote", "speaker")


class ProbeError(LondiniumError):
    """A probe file is missing or malformed; the message names the file, the probe and the field."""


@dataclass(frozen=True)
class Probe:
    id: str
    prompt: str
    answer: str
    distractors: tuple[str, ...]
    category: str = "general"
    source: str = ""  # provenance: "package==version:path" of the text the fact was checked in
    quote: str = ""  # text found in `source` (default: prompt + answer)
    speaker: str = ""  # the speaker tag above `quote` in `source`

    @property
    def choices(self) -> tuple[str, ...]:
        """The true answer first, then the distractors."""
        return (self.answer, *self.distractors)


@dataclass(frozen=True)
class ProbeSet:
    name: str
    path: Path
    probes: tuple[Probe, ...]
    description: str = ""


def default_probe_file() -> Path:
    """The probe set for the embedded default corpus."""
    return Path(str(resources.files("londinium") / "data_files" / "probes" / "period_london.toml"))


def load_probes(path: str | Path | None = None) -> ProbeSet:
    """Read and validate a probe set; `None` or "" reads the default. Raises ProbeError naming the problem."""
    path = Path(path) if path else default_probe_file()
    data = read_toml(path, "probe file", ProbeError, "set eval.probe_file to a TOML probe set (docs/evaluation.md)")
    tables = data.get("probe")
    if not isinstance(tables, list) or not tables:
        raise ProbeError(f"probe file {path} has no [[probe]] tables; each needs {', '.join(REQUIRED)}")
    probes: list[Probe] = []
    seen: set[str] = set()
    for n, table in enumerate(tables, 1):
        probe = _validate(table, path, n)
        if probe.id in seen:
            raise ProbeError(f"{path}: probe #{n} repeats the id '{probe.id}'; ids must be unique")
        seen.add(probe.id)
        probes.append(probe)
    name = data.get("name", path.stem)
    return ProbeSet(str(name), path, tuple(probes), str(data.get("description", "")))


def _validate(table: Any, path: Path, n: int) -> Probe:
    where = f"{path}: probe #{n}"
    if not isinstance(table, dict):
        raise ProbeError(f"{where} is not a table")
    if isinstance(table.get("id"), str) and table["id"]:
        where = f"{path}: probe '{table['id']}'"
    unknown = sorted(set(table) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise ProbeError(f"{where}: unknown field(s) {', '.join(unknown)}; known fields: {', '.join(REQUIRED + OPTIONAL)}")
    for key in REQUIRED:
        if key not in table:
            raise ProbeError(f"{where}: missing field '{key}'")
    for key in ("id", "prompt", "answer", *OPTIONAL):
        if key in table and not isinstance(table[key], str):
            raise ProbeError(f"{where}: field '{key}' must be a string, got {table[key]!r}")
    for key in ("id", "prompt", "answer"):
        if not table[key].strip():
            raise ProbeError(f"{where}: field '{key}' is empty")
    distractors = table["distractors"]
    if not isinstance(distractors, list) or not distractors or not all(isinstance(d, str) and d.strip() for d in distractors):
        raise ProbeError(f"{where}: 'distractors' must be a list of at least one non-empty string")
    choices = [table["answer"], *distractors]
    if len(set(choices)) != len(choices):
        raise ProbeError(f"{where}: the answer and distractors must all differ")
    return Probe(
        id=table["id"], prompt=table["prompt"], answer=table["answer"], distractors=tuple(distractors),
        category=table.get("category") or "general", source=table.get("source", ""),
        quote=table.get("quote", ""), speaker=table.get("speaker", ""),
    )


# ---- scoring -------------------------------------------------------------------------------------


@dataclass
class ProbeResult:
    id: str
    category: str
    logprobs: list[float]  # sum of log-probabilities of each choice, answer first
    nbytes: list[int]  # UTF-8 bytes of each choice
    rank: int  # rank of the answer by logprob (1 = best)
    correct: bool  # the answer has the highest logprob
    correct_norm: bool  # the answer has the highest logprob per byte
    choices: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fit(prompt_ids: list[int], choices: list[list[int]], context: int) -> list[int]:
    """The prompt cut from the left so that it and the longest choice fit the context (the choice is
    kept whole: the last token is a target, not an input, hence context + 1)."""
    if not all(choices):
        raise ProbeError("a probe choice is empty (no tokens); every choice needs some text")
    longest = max(len(c) for c in choices)
    if longest >= context:
        raise ProbeError(f"a probe choice of {longest} tokens does not fit the model's context ({context}); shorten it")
    return prompt_ids[-(context + 1 - longest):]


def score_probes(
    model: torch.nn.Module,
    encode: Callable[[str], list[int]],
    probes: Sequence[Probe],
    bos_id: int,
    context: int,
    batch_size: int = 16,
) -> list[ProbeResult]:
    """Score every choice of every probe by its log-likelihood after `<|endoftext|>` + prompt.

    Prompt and choice are encoded separately and joined: the choice's tokens are then the same
    whichever prompt precedes it, and with a byte-level BPE whose pre-tokenizer splits before a
    space, this equals encoding the joined text when the choice starts with a space. The prompt is
    run once per probe and its keys and values are shared by the choices (`choice_logprobs`), so a
    probe costs its prompt once, not once per choice.
    """
    encoded = []
    for p in probes:
        choices = [encode(c) for c in p.choices]
        encoded.append((_fit([bos_id, *encode(p.prompt)], choices, context), choices))
    results: list[ProbeResult] = []
    for p, lp in zip(probes, choice_logprobs(model, encoded, context, batch_size)):
        nb = [len(c.encode("utf-8")) for c in p.choices]
        per_byte = [x / b for x, b in zip(lp, nb)]
        rank = 1 + sum(x > lp[0] for x in lp[1:])
        results.append(ProbeResult(
            id=p.id, category=p.category, logprobs=lp, nbytes=nb, rank=rank,
            correct=rank == 1 and lp[0] > max(lp[1:]),
            correct_norm=per_byte[0] > max(per_byte[1:]),
            choices=list(p.choices),
        ))
    return results


@torch.no_grad()
def choice_logprobs(model: torch.nn.Module, encoded: Sequence[tuple[list[int], list[list[int]]]], context: int,
                    batch_size: int = 16) -> list[list[float]]:
    """log P(choice | prompt), summed over the choice's tokens, for each (prompt ids, [choice ids])
    (prompt ids start with the document token; prompt + longest choice - 1 <= context).

    Batches of up to `batch_size` prompts of similar length, left-padded, are run once into a KV
    cache (its `pad` keeps padding out of attention and positions); the cache rows are repeated once
    per choice, and the choices (right-padded; causal attention keeps padding out of real positions)
    run after them. The first choice token is scored from the prompt's last logits."""
    device = model_device(model)
    out: list[list[float] | None] = [None] * len(encoded)
    for batch in _batches(encoded, context, batch_size):
        prompts = [encoded[i][0] for i in batch]
        width = max(len(p) for p in prompts)
        pad = torch.tensor([width - len(p) for p in prompts], device=device)
        idx = torch.tensor([[p[0]] * (width - len(p)) + p for p in prompts], device=device)
        choices = [c for i in batch for c in encoded[i][1]]
        owner = torch.tensor([b for b, i in enumerate(batch) for _ in encoded[i][1]], device=device)
        longest = max(len(c) for c in choices)
        cache = model.new_kv_cache(len(batch), max_len=width)
        cache.pad = pad
        last, _ = model(idx, kv_cache=cache, logits_to_keep=1)
        first = torch.log_softmax(last[:, 0].float(), -1)[owner]  # [choices, V]: the first token's distribution
        targets = torch.tensor([c + [c[0]] * (longest - len(c)) for c in choices], device=device)
        lp = first.gather(1, targets[:, :1]).double()  # [choices, 1]
        if longest > 1:
            rows = model.new_kv_cache(len(choices), max_len=width + longest - 1)
            for layer in range(len(rows.k)):  # each choice continues its own copy of its prompt
                rows.k[layer][:, :, :width] = cache.k[layer][owner]
                rows.v[layer][:, :, :width] = cache.v[layer][owner]
            rows.length, rows.pad = width, pad[owner]
            logits, _ = model(targets[:, :-1], kv_cache=rows)
            rest = torch.log_softmax(logits.float(), -1).gather(2, targets[:, 1:, None])[..., 0].double()
            lp = torch.cat([lp, rest], 1)
        k = 0
        for i in batch:
            n = len(encoded[i][1])
            out[i] = [float(lp[k + j, :len(c)].sum()) for j, c in enumerate(encoded[i][1])]
            k += n
    return out  # type: ignore[return-value]


def _batches(encoded: Sequence[tuple[list[int], list[list[int]]]], context: int, batch_size: int) -> list[list[int]]:
    """Indices of `encoded` in batches by prompt length, each fitting the context when padded."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    batches: list[list[int]] = []
    width = longest = 0
    for i in order:
        prompt, choices = encoded[i]
        w, c = max(width, len(prompt)), max(longest, max(len(x) for x in choices))
        if batches and len(batches[-1]) < batch_size and w + c - 1 <= context:
            batches[-1].append(i)
            width, longest = w, c
        else:
            batches.append([i])
            width, longest = len(prompt), max(len(x) for x in choices)
    return batches


def summarize(results: Sequence[ProbeResult], flagged: set[str] | None = None) -> dict[str, Any]:
    """Accuracy (with its standard error), length-normalised accuracy, mean rank and chance level: overall, by category, and
    split into probes flagged as contaminated and clean ones when `flagged` is given."""

    def block(rs: Sequence[ProbeResult]) -> dict[str, Any]:
        if not rs:
            return {"n": 0}
        return {
            "n": len(rs),
            "accuracy": sum(r.correct for r in rs) / len(rs),
            "accuracy_se": mean_se([float(r.correct) for r in rs])[1],
            "accuracy_norm": sum(r.correct_norm for r in rs) / len(rs),
            "mean_rank": sum(r.rank for r in rs) / len(rs),
            "chance": sum(1 / len(r.logprobs) for r in rs) / len(rs),
        }

    out: dict[str, Any] = {"overall": block(results), "by_category": {}}
    for cat in sorted({r.category for r in results}):
        out["by_category"][cat] = block([r for r in results if r.category == cat])
    if flagged is not None:
        out["contaminated"] = block([r for r in results if r.id in flagged])
        out["clean"] = block([r for r in results if r.id not in flagged])
    return out
