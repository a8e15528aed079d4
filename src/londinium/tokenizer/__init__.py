"""The tokenizer stage: a lossless byte-level BPE trained on the corpus, its report, and encode/decode.

    from londinium.tokenizer import load_tokenizer, encode, decode, eot_id
    tok = load_tokenizer(ws)                  # a tokenizers.Tokenizer; "<|endoftext|>" in text stays text
    ids = encode(tok, "Thou art.")            # encode(tok, text, allow_special=True) maps control tokens
    assert decode(tok, ids) == "Thou art."
"""

from londinium.tokenizer.codec import (
    CHAT_ROLES,
    EOT,
    PAD,
    SPECIAL_TOKENS,
    decode,
    encode,
    encode_batch,
    eot_id,
    load_tokenizer,
    special_token_ids,
    tokenizer_sha256,
)
from londinium.tokenizer.train import train_bpe, train_tokenizer

__all__ = [
    "CHAT_ROLES",
    "EOT",
    "PAD",
    "SPECIAL_TOKENS",
    "decode",
    "encode",
    "encode_batch",
    "eot_id",
    "load_tokenizer",
    "special_token_ids",
    "tokenizer_sha256",
    "train_bpe",
    "train_tokenizer",
]
