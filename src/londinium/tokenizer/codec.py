"""Loading the trained tokenizer, and encoding text without ever losing a character.

The tokenizer is a byte-level BPE: every string is first turned into its UTF-8 bytes, so any
character (accents in NFC or NFD, long s, emoji with joiners, unassigned code points) is
representable and `decode(encode(text)) == text` holds for every string. There is no normaliser on
purpose: NFC/NFD or case folding would change the text and break the round trip.

Control tokens (`<|endoftext|>`, `<|pad|>`, chat roles) are special tokens. A document that happens
to contain the literal text "<|endoftext|>" must not end the document in the middle, so londinium's
default is tiktoken's: special tokens in text are encoded as plain text, and only
`encode(..., allow_special=True)` turns them into control ids. `load_tokenizer` returns a
`tokenizers.Tokenizer` already in that safe mode (`encode_special_tokens = True`; the flag is not
stored in tokenizer.json, which keeps the Hugging Face convention so chat templates still work when
the exported tokenizer is used in `transformers` or vLLM).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Union

from tokenizers import Tokenizer

from londinium.errors import LondiniumError
from londinium.files import sha256_file
from londinium.workspace import Workspace

EOT = "<|endoftext|>"
PAD = "<|pad|>"
# Reserved for chat fine-tuning later; they exist from the start so the vocabulary never changes.
CHAT_ROLES = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
SPECIAL_TOKENS: tuple[str, ...] = (EOT, PAD, *CHAT_ROLES)

_SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")

PathOrWorkspace = Union[Workspace, str, os.PathLike]


def _tokenizer_path(ws_or_path: PathOrWorkspace) -> Path:
    return ws_or_path.tokenizer_file if isinstance(ws_or_path, Workspace) else Path(ws_or_path)


def load_tokenizer(ws_or_path: PathOrWorkspace) -> Tokenizer:
    """The workspace's tokenizer (or the tokenizer.json at a path), with special tokens in text kept as text."""
    path = _tokenizer_path(ws_or_path)
    if not path.is_file():
        raise LondiniumError(f"no tokenizer at {path}: run `londinium tokenizer train` first")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises plain Exception for malformed JSON
        raise LondiniumError(f"{path} is not a valid tokenizers JSON file ({e}); re-run `londinium tokenizer train --force`") from None
    missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
    if missing:
        raise LondiniumError(f"{path} lacks the special tokens {missing}; it was not made by `londinium tokenizer train`")
    tok.encode_special_tokens = True
    return tok


def tokenizer_sha256(ws_or_path: PathOrWorkspace) -> str:
    """sha256 of tokenizer.json: shards record it so they refuse to load with another tokenizer."""
    path = _tokenizer_path(ws_or_path)
    if not path.is_file():
        raise LondiniumError(f"no tokenizer at {path}: run `londinium tokenizer train` first")
    return sha256_file(path)


def special_token_ids(tok: Tokenizer) -> dict[str, int]:
    """{token: id} for every control token, e.g. `special_token_ids(tok)[EOT]`."""
    return {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}


def eot_id(tok: Tokenizer) -> int:
    """Id of `<|endoftext|>`, the separator between documents."""
    return tok.token_to_id(EOT)


def encode(tok: Tokenizer, text: str, allow_special: bool = False) -> list[int]:
    """Token ids of `text`. Literal control-token text becomes control ids only with allow_special."""
    if not allow_special:
        # A tokenizer from Tokenizer.from_file would map "<|endoftext|>" in text to the control id.
        tok.encode_special_tokens = True
        return tok.encode(text, add_special_tokens=False).ids
    ids: list[int] = []
    # re.split with a group puts the special tokens at odd positions.
    for i, part in enumerate(_SPECIAL_SPLIT.split(text)):
        if i % 2:
            ids.append(tok.token_to_id(part))
        elif part:
            ids.extend(encode(tok, part))
    return ids


def encode_batch(tok: Tokenizer, texts: Iterable[str], allow_special: bool = False) -> list[list[int]]:
    """`encode` for many texts at once; the Rust side spreads the batch over all cores."""
    texts = list(texts)
    if allow_special:
        return [encode(tok, t, allow_special=True) for t in texts]
    tok.encode_special_tokens = True
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def decode(tok: Tokenizer, ids: Iterable[int]) -> str:
    """Text of `ids`, control tokens included, so `decode(tok, encode(tok, text)) == text`."""
    return tok.decode(list(ids), skip_special_tokens=False)
