"""Token ids to text while it streams: whole UTF-8 characters only, stop strings cut before they show.

A byte-level BPE token is a run of bytes, not of characters: "é" may be split over two tokens and
an emoji over four. Decoding each token on its own would print U+FFFD halves, and re-decoding the
whole output every step costs O(length) per token. Instead each token id maps to its bytes (built
once from the vocabulary) and Python's incremental UTF-8 decoder turns the byte stream into text,
holding back an incomplete character until its last byte arrives. The result equals
`tokenizer.decode(ids)` (tested), with no re-decoding.

Stop strings are matched on that decoded text, so a stop string split across tokens still stops
generation. While the tail of the text could still become a stop string, it is held back, so the
caller never sees any part of a stop string, and the text returned ends just before it.
"""

from __future__ import annotations

import codecs
from functools import lru_cache
from typing import Sequence

from tokenizers import Tokenizer, decoders

from londinium.errors import LondiniumError


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's byte-to-unicode table: byte-level BPE writes byte b as a printable character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def token_bytes_table(tok: Tokenizer) -> list[bytes]:
    """`table[id]` is the bytes token `id` stands for; control tokens stand for their literal text,
    as `decode(..., skip_special_tokens=False)` shows them."""
    if not isinstance(tok.decoder, decoders.ByteLevel):
        raise LondiniumError("the generation engine needs a byte-level BPE tokenizer (ByteLevel decoder), as `londinium tokenizer train` makes")
    to_byte = _unicode_to_byte()
    added = {t.content for t in tok.get_added_tokens_decoder().values()}
    vocab = tok.get_vocab(with_added_tokens=True)
    table = [b""] * (max(vocab.values()) + 1)
    for piece, i in vocab.items():
        if piece in added:
            table[i] = piece.encode("utf-8")
        else:
            table[i] = bytes(to_byte[c] for c in piece)
    return table


class TextStream:
    """The text of one sequence as its tokens arrive. `push(id)` returns the text that became safe to
    show (complete characters, and no part of a possible stop string) and whether a stop string ended
    it; `finish()` returns whatever was held back when the sequence ends for another reason."""

    def __init__(self, table: Sequence[bytes], stop: Sequence[str] = ()):
        self.table = table
        self.stop = [s for s in stop if s]
        self.longest_stop = max((len(s) for s in self.stop), default=0)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""  # everything decoded so far (cut at the stop string once one matched)
        self.shown = 0  # characters of `text` already returned
        self.stopped = False

    def push(self, token_id: int) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        return self._add(self.decoder.decode(self.table[token_id]))

    def finish(self) -> str:
        """Flush: an incomplete character at the very end becomes U+FFFD (as `tokenizer.decode` does)."""
        if self.stopped:
            return ""
        delta, stopped = self._add(self.decoder.decode(b"", final=True))
        if stopped:
            return delta
        rest = self.text[self.shown:]
        self.shown = len(self.text)
        return delta + rest

    def _add(self, new: str) -> tuple[str, bool]:
        if not new:
            return "", False
        before = len(self.text)
        self.text += new
        if not self.stop:
            return self._release(len(self.text)), False
        # Only a stop string that ends in the new characters can be new.
        start = max(0, before - self.longest_stop + 1)
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        if hits:
            cut = min(hits)
            self.text = self.text[:cut]
            self.stopped = True
            return self._release(cut), True
        return self._release(len(self.text) - self._held()), False

    def _held(self) -> int:
        """Length of the longest tail of the unshown text that a stop string starts with."""
        tail = self.text[self.shown:]
        for k in range(min(self.longest_stop - 1, len(tail)), 0, -1):
            end = tail[-k:]
            if any(s.startswith(end) for s in self.stop):
                return k
        return 0

    def _release(self, upto: int) -> str:
        if upto <= self.shown:
            return ""
        out = self.text[self.shown:upto]
        self.shown = upto
        return out
