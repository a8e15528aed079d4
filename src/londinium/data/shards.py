"""`londinium data prepare`: each corpus split encoded into one flat NumPy memmap of token ids.

Layout of `shards/<split>.bin`: the ids of document 1, `<|endoftext|>`, document 2, `<|endoftext|>`,
... as little-endian uint16 (vocabularies up to 65,536) or uint32, with nothing else in the file, so
`np.memmap(path, dtype)` (or nanoGPT's loader) reads it. Every document, the last included, is
followed by `<|endoftext|>`, so `tokens == sum(len(encode(doc))) + documents`.

`shards/<split>.meta.json` says how to read it and what it was made from:

    {"dtype": "uint16", "vocab_size": 8192, "tokens": 5123456, "documents": 3010,
     "text_bytes": 19834211, "tokenizer_sha256": "...", "eot_id": 0, "split": "train"}

`text_bytes` (UTF-8 bytes of the documents' text, separators excluded) turns a loss in nats per
token into bits per byte, which compares across tokenizers. `tokenizer_sha256` lets the loader
refuse a shard made with another tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from tokenizers import Tokenizer
from londinium.progress import progress

from londinium.config import DataConfig, validate
from londinium.data.documents import iter_documents_sized, require_split
from londinium.files import atomic_write, write_json
from londinium.tokenizer.codec import encode_batch, eot_id, load_tokenizer, tokenizer_sha256
from londinium.workspace import SPLITS, Workspace

META_KEYS = ("dtype", "vocab_size", "tokens", "documents", "text_bytes", "tokenizer_sha256", "eot_id", "split")


def shard_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (vocab_size <= 65,536), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def encode_split(
    tok: Tokenizer,
    source: Path,
    bin_path: Path,
    meta_path: Path,
    split: str,
    tokenizer_hash: str,
    batch_docs: int = 256,
) -> dict:
    """Encode one JSONL split into `bin_path` + `meta_path` (both atomic). Returns the meta."""
    vocab_size = tok.get_vocab_size()
    dtype = shard_dtype(vocab_size)
    eot = eot_id(tok)
    tokens = documents = text_bytes = 0

    def flush(batch: list[str], f) -> None:
        nonlocal tokens
        if not batch:
            return
        # One batch call: the tokenizers library spreads the documents over all cores.
        flat: list[int] = []
        for ids in encode_batch(tok, batch):
            flat.extend(ids)
            flat.append(eot)
        f.write(np.asarray(flat, dtype=dtype).tobytes())
        tokens += len(flat)
        batch.clear()

    batch: list[str] = []
    with atomic_write(bin_path, "wb") as f, progress(
        total=source.stat().st_size, unit="B", unit_scale=True, desc=f"shards: encode {split}", disable=None
    ) as bar:
        for row, size in iter_documents_sized(source):
            text = row["text"]
            batch.append(text)
            documents += 1
            text_bytes += len(text.encode("utf-8"))
            bar.update(size)
            if len(batch) >= batch_docs:
                flush(batch, f)
        flush(batch, f)
    meta = {
        "dtype": dtype.name,
        "vocab_size": vocab_size,
        "tokens": tokens,
        "documents": documents,
        "text_bytes": text_bytes,
        "tokenizer_sha256": tokenizer_hash,
        "eot_id": eot,
        "split": split,
    }
    write_json(meta_path, meta)
    return meta


def prepare_shards(ws: Workspace, cfg: DataConfig, force: bool = False, log: Callable[[str], None] = print) -> bool:
    """The shards stage: encode train, val and test with the workspace tokenizer. Returns True if it ran."""
    validate(cfg)
    sources = {split: require_split(ws, split) for split in SPLITS}
    ws.require_stage("tokenizer", [ws.tokenizer_file])  # the tokenizer the last finished stage wrote
    tok_hash = tokenizer_sha256(ws)

    def run() -> list[Path]:
        tok = load_tokenizer(ws)
        outputs: list[Path] = []
        for split, source in sources.items():
            meta = encode_split(tok, source, ws.shard_bin(split), ws.shard_meta(split), split, tok_hash, cfg.encode_batch_docs)
            bpt = meta["text_bytes"] / max(meta["tokens"] - meta["documents"], 1)
            log(f"shards: {split}: {meta['documents']:,} documents, {meta['tokens']:,} tokens ({meta['dtype']}), {bpt:.2f} bytes per token")
            outputs += [ws.shard_bin(split), ws.shard_meta(split)]
        return outputs

    return ws.run_stage(
        "shards",
        cfg,
        run,
        inputs=[*sources.values(), ws.tokenizer_file],
        fingerprint={"tokenizer_sha256": tok_hash},
        force=force,
        log=log,
    )
