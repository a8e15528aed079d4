"""Perplexity and bits-per-byte of a model on documents, with a sliding window over long ones.

Definitions (so the figures mean what readers expect):
- every document is scored as the model saw documents in training: after one `<|endoftext|>`, so
  each of its tokens -- the first included -- is predicted from what precedes it;
- loss = total negative log-likelihood (nats) / tokens; perplexity = exp(loss), i.e. the exp of
  the mean token NLL over *all* tokens, not a mean of per-window perplexities;
- bits-per-byte = total NLL / ln 2 / UTF-8 bytes of the text. Unlike perplexity it does not depend
  on the tokenizer, so models with different vocabularies compare on it.

A document longer than the context is scored with a sliding window (the method of the
`transformers` perplexity guide): windows of `context` tokens start every `stride` tokens and each
scores only the tokens the previous window did not, so every token is scored exactly once and,
after the first window, with at least `context - stride` tokens before it. When the text fits in
one window this is the plain computation.

Windows from many documents are sorted by length and batched (right-padded; padding is never a
target and causal attention never lets a real position see it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from londinium.errors import ConfigError

Row = tuple[list[int], list[int]]  # (input ids, target ids with -1 where a position is not scored)


@dataclass
class Tally:
    """Sums over some set of documents; the derived figures are properties."""

    docs: int = 0
    tokens: int = 0
    bytes: int = 0
    nll: float = 0.0  # nats, summed over tokens

    def add(self, tokens: int, nbytes: int, nll: float, docs: int = 1) -> None:
        self.docs += docs
        self.tokens += tokens
        self.bytes += nbytes
        self.nll += nll

    @property
    def loss(self) -> float:
        return self.nll / self.tokens if self.tokens else float("nan")

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.tokens else float("nan")

    @property
    def bits_per_byte(self) -> float:
        return self.nll / math.log(2) / self.bytes if self.bytes else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "loss": self.loss, "perplexity": self.perplexity, "bits_per_byte": self.bits_per_byte}


def sliding_windows(ids: Sequence[int], context: int, stride: int) -> list[Row]:
    """Rows that score `ids[1:]` given what precedes each token, each token exactly once.

    `ids` starts with the token everything is conditioned on (`<|endoftext|>`), so a sequence of
    L ids has L - 1 targets. Each row's input is at most `context` ids.
    """
    if context < 1 or not 1 <= stride <= context:
        raise ConfigError(f"sliding window: need 1 <= stride ({stride}) <= context ({context})")
    n_targets = len(ids) - 1
    rows: list[Row] = []
    scored = 0  # targets 1..scored are done
    begin = 0
    while scored < n_targets:
        end = min(begin + context, n_targets)  # inputs ids[begin:end] predict ids[begin+1:end+1]
        inputs = list(ids[begin:end])
        targets = list(ids[begin + 1:end + 1])
        new = end - scored  # the last `new` targets are not scored yet
        targets[: len(targets) - new] = [-1] * (len(targets) - new)
        rows.append((inputs, targets))
        scored = end
        begin += stride
    return rows


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def score_rows(
    model: torch.nn.Module,
    rows: Sequence[Row],
    batch_size: int = 16,
    pad_id: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[torch.Tensor]:
    """Per-position NLL (nats, float64 on CPU) of each row's targets; 0 where the target is -1.

    `model(idx, logits_to_keep=k)` must return `(logits, _)` as `londinium.model.gpt.GPT` does. Rows are batched by
    length to waste little on padding; the result is in the order of `rows`.
    """
    device = model_device(model)
    out: list[torch.Tensor | None] = [None] * len(rows)

    def first_scored(i: int) -> int:
        return next((k for k, t in enumerate(rows[i][1]) if t != -1), len(rows[i][1]))

    # Longest first, and among equal lengths the rows that score fewest positions together: a
    # window after the first scores only its last `stride` positions, so a batch of such windows
    # needs the output head over those positions only (the head is a large share of a small model).
    starts = [first_scored(i) for i in range(len(rows))]
    order = sorted(range(len(rows)), key=lambda i: (len(rows[i][0]), starts[i]), reverse=True)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        width = len(rows[batch[0]][0])
        idx = torch.full((len(batch), width), pad_id, dtype=torch.long)
        tgt = torch.full((len(batch), width), -1, dtype=torch.long)
        for b, i in enumerate(batch):
            inputs, targets = rows[i]
            idx[b, : len(inputs)] = torch.tensor(inputs, dtype=torch.long)
            tgt[b, : len(targets)] = torch.tensor(targets, dtype=torch.long)
        keep = width - min(starts[i] for i in batch)
        logits, _ = model(idx.to(device), logits_to_keep=max(1, keep))
        # float32 logits, cross-entropy per position; summed later in float64 so long texts keep precision
        nll = F.cross_entropy(logits.float().flatten(0, 1), tgt[:, width - logits.shape[1]:].to(device).flatten(),
                              ignore_index=-1, reduction="none")
        full = torch.zeros(len(batch), width, dtype=torch.float64)
        full[:, width - logits.shape[1]:] = nll.view(len(batch), -1).double().cpu()
        for b, i in enumerate(batch):
            out[i] = full[b, : len(rows[i][1])]
        if progress is not None:
            progress(int((tgt != -1).sum()))
    return out  # type: ignore[return-value]


def sequence_nll(model: torch.nn.Module, ids: Sequence[int], context: int, stride: int | None = None,
                 batch_size: int = 16) -> tuple[float, int]:
    """(total NLL in nats, tokens scored) of `ids[1:]` given `ids[0]` and the rest, sliding if needed."""
    rows = sliding_windows(ids, context, stride or max(1, context // 2))
    nll = score_rows(model, rows, batch_size)
    return float(sum(t.sum() for t in nll)), sum(sum(1 for x in r[1] if x != -1) for r in rows)


def period_label(period: Any) -> str:
    """A document's period as a table label: [1590, 1623] -> "1590-1623", [1611, 1611] -> "1611"."""
    if isinstance(period, (list, tuple)) and len(period) == 2 and all(isinstance(x, int) for x in period):
        if tuple(period) == (0, 0):
            return "unknown"
        return str(period[0]) if period[0] == period[1] else f"{period[0]}-{period[1]}"
    if period in (None, "", [], 0):
        return "unknown"
    return str(period)


def evaluate_documents(
    model: torch.nn.Module,
    encode_batch: Callable[[list[str]], list[list[int]]],
    docs: Iterable[dict],
    bos_id: int,
    context: int,
    stride: int | None = None,
    batch_size: int = 16,
    desc: str = "perplexity",
    show_progress: bool = True,
) -> dict[str, Any]:
    """Perplexity and bits-per-byte over `docs` (corpus rows: "text", "source", "period"), in total,
    by source and by period. `encode_batch` turns texts into token ids (no special tokens)."""
    from londinium.progress import progress

    docs = [d for d in docs if d.get("text")]
    stride = stride or max(1, context // 2)
    ids = encode_batch([d["text"] for d in docs])
    rows: list[Row] = []
    owner: list[int] = []
    for k, doc_ids in enumerate(ids):
        for row in sliding_windows([bos_id, *doc_ids], context, stride):
            rows.append(row)
            owner.append(k)
    n_tokens = sum(len(x) for x in ids)
    with progress(total=n_tokens, desc=desc, unit="tok", unit_scale=True, disable=not show_progress, leave=False) as bar:
        nll = score_rows(model, rows, batch_size, pad_id=bos_id, progress=bar.update)
    per_doc = [0.0] * len(docs)
    for k, t in zip(owner, nll):
        per_doc[k] += float(t.sum())

    total, by_source, by_period = Tally(), {}, {}
    for k, d in enumerate(docs):
        n_bytes = len(d["text"].encode("utf-8"))
        args = (len(ids[k]), n_bytes, per_doc[k])
        total.add(*args)
        by_source.setdefault(str(d.get("source") or "unknown"), Tally()).add(*args)
        by_period.setdefault(period_label(d.get("period")), Tally()).add(*args)
    return {
        "total": total.to_dict(),
        "by_source": {k: v.to_dict() for k, v in sorted(by_source.items())},
        "by_period": {k: v.to_dict() for k, v in sorted(by_period.items())},
    }
