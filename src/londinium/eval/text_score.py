"""One text scored token by token, exactly as `londinium eval` scores a document.

    scored = score_text(model, tokenizer, token_bytes, "To be, or not to be", context=256)
    scored.bits_per_byte, scored.tally.perplexity
    for piece, nll in zip(scored.pieces, scored.nll): ...

The text is encoded without special tokens and scored after one `<|endoftext|>` with
eval/perplexity.py's sliding window and `score_rows`, and the total is summed one window at a time
as `evaluate_documents` sums it, so the loss, perplexity and bits per byte equal the report card's
on the same text. What this adds is the per-token view: each token's negative log-likelihood and
where it lies in the text (the MCP tool `score_text` and the playground's scoring use it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from londinium.eval.perplexity import Tally, score_rows, sliding_windows


@dataclass
class TextScore:
    """A text's tokens with their NLL (nats) and character spans, and the totals as eval adds them."""

    text: str
    ids: list[int]
    nll: list[float]  # per token
    spans: list[tuple[int, int]]  # character [start, end) of each token; see `token_spans`
    tally: Tally

    @property
    def bits_per_byte(self) -> float:
        return self.tally.bits_per_byte

    @property
    def pieces(self) -> list[str]:
        """The text cut at the tokens' starts: one piece per token, joined they are the text. A token
        that ends inside a multi-byte character gets an empty piece; the next one holds the character."""
        starts = [s for s, _ in self.spans]
        ends = [*starts[1:], len(self.text)]
        return [self.text[s:max(s, e)] for s, e in zip(starts, ends)]

    def probability(self, k: int) -> float:
        return math.exp(-self.nll[k])


def score_text(model: Any, tokenizer: Any, token_bytes: Sequence[bytes], text: str, context: int,
               stride: int = 0, batch_size: int = 16) -> TextScore:
    """Score `text` after `<|endoftext|>` (stride 0: half the context, as `[eval]` defaults)."""
    from londinium.tokenizer.codec import encode, eot_id

    bos = eot_id(tokenizer)
    ids = encode(tokenizer, text)
    rows = sliding_windows([bos, *ids], context, stride or max(1, context // 2))
    nll = score_rows(model, rows, batch_size, pad_id=bos)
    per_token = [float(t[k]) for (_, targets), t in zip(rows, nll) for k, target in enumerate(targets) if target != -1]
    total = 0.0
    for t in nll:  # evaluate_documents adds one float per window, in window order
        total += float(t.sum())
    tally = Tally()
    tally.add(len(ids), len(text.encode("utf-8")), total)
    return TextScore(text, ids, per_token, token_spans(text, [token_bytes[i] for i in ids]), tally)


def token_spans(text: str, pieces: list[bytes]) -> list[tuple[int, int]]:
    """Character [start, end) of each token in `text`, from the tokens' bytes (which add up to the
    text's UTF-8). A token that ends inside a multi-byte character is given the whole character."""
    char_of: list[int] = []  # byte offset -> index of the character that byte belongs to
    for i, ch in enumerate(text):
        char_of.extend([i] * len(ch.encode("utf-8")))
    char_of.append(len(text))
    spans, b = [], 0
    for piece in pieces:
        start, b = char_of[b], min(b + len(piece), len(char_of) - 1)
        end = char_of[b] if char_of[b] != char_of[b - 1] else char_of[b] + 1
        spans.append((start, end))
    return spans
