"""Check an export directory before anything is built from it: an export is untrusted input.

    checked = check_export("exports/main-step-1100")   # ExportError naming the file, or the plan to load
    model, tokenizer = load_export(checked)             # (londinium.model.from_hf)

A directory decides nothing about what is allocated until it has shown that its files agree:

1. Every file read must be a regular file inside the directory: shard names from the index may
   not be absolute, climb out with `..`, or be links that lead outside.
2. When `londinium.json` is there (a `londinium export`), each file read must have the size and
   sha256 it recorded; when it is not (a plain transformers directory), that is said once.
3. config.json's values are held to our config's rules (`model_config_from_hf`), and the tokenizer
   may have no more tokens than the model's vocabulary (nor, unread, more bytes than such a
   vocabulary needs).
4. The weights' safetensors headers (read by the safetensors library, no tensor loaded) must hold
   exactly the parameters that config describes, counted by `model.info` arithmetic before any
   module exists, then name by name and shape by shape from a model built on the meta device;
   only float32, bfloat16 and float16 tensors are accepted.
5. Every tensor must be finite (read one at a time, so memory stays at the largest tensor).

So a config asking for terabytes over a small file is refused by arithmetic, and no allocation
is larger than what the files on disk hold. The record is an integrity check, not a signature:
whoever can write the directory can rewrite or remove it, which is why steps 3-5 hold without it.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from londinium.config import ModelConfig
from londinium.export.hf import INDEX_FILE, SINGLE_FILE
from londinium.export.run import RECORD_FILE
from londinium.files import loads_json, path_kind, sha256_file
from londinium.model.from_hf import ExportError, model_config_from_hf

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
# No real config, index, record or tokenizer comes near this (a 256k-token tokenizer.json is ~35 MB);
# past it a file is refused before it is read into memory.
MAX_JSON_BYTES = 64 * 2**20
# A tokenizer.json needs some tens of bytes per token (GPT-2's 27, Llama 3's 71, Gemma's 133, with
# scores and pretty-printing); past this budget for the model's vocabulary it is refused unread, since
# the tokenizers library holds ~45 times the file in memory (144 MB took 6.6 GB and 49 s).
TOKENIZER_BYTES = (1 << 20, 512)  # fixed part, bytes per token of the vocabulary
# The safetensors dtypes we load (what `londinium export` writes); int8 and friends are quantised
# formats our loader does not dequantise (GGUF is the quantised export).
WEIGHT_DTYPES = ("F32", "BF16", "F16")

log = logging.getLogger("londinium.export")


@dataclass(frozen=True)
class CheckedExport:
    """An export directory whose files passed `check_export`: what `load_export` builds."""

    directory: Path
    config: ModelConfig
    weight_files: tuple[Path, ...]
    tokenizer_file: Path
    tokenizer: Any  # the tokenizers.Tokenizer, loaded once
    verified: bool  # every file read matched londinium.json's size and sha256


def check_export(directory: str | Path, say: Callable[[str], None] = log.warning) -> CheckedExport:
    """Check everything about an export directory that decides what would be built; ExportError
    naming the file and what is wrong. `say` gets the one line about a missing londinium.json."""
    from londinium.tokenizer.codec import load_tokenizer

    given = Path(directory)
    if not given.is_dir():
        kind = path_kind(given, follow=True)
        what = "no such directory" if kind == "missing" else f"a {kind}, not a directory"
        raise ExportError(f"{given}: {what}; give a directory written by `londinium export`")
    root = given.resolve()
    if not (root / CONFIG_FILE).exists():
        raise ExportError(f"{given}: no {CONFIG_FILE}: not a transformers export directory (see `londinium export`)")
    config_file = _member(root, CONFIG_FILE, str(given))
    tokenizer_file = _member(root, TOKENIZER_FILE, str(given))
    weight_files, weight_map = _weight_files(root, given)
    record = _record(root, say)
    if record is not None:
        index = [_member(root, INDEX_FILE, str(given))] if weight_map is not None else []
        for path in (config_file, tokenizer_file, *index, *weight_files):
            _verify(path, root, record)

    cfg = model_config_from_hf(_read_json(config_file), str(config_file))
    headers = _headers(root, weight_files, weight_map)
    _match(cfg, headers, config_file)  # first: the vocabulary the tokenizer is measured by is now the weights'
    _tokenizer_size(tokenizer_file, cfg.vocab_size)
    tokenizer = load_tokenizer(tokenizer_file)
    if tokenizer.get_vocab_size() > cfg.vocab_size:
        raise ExportError(f"{tokenizer_file} has {tokenizer.get_vocab_size():,} tokens but {config_file} gives the model "
                          f"a vocabulary of {cfg.vocab_size:,}: they do not belong together")
    for path in weight_files:
        _finite(path)
    return CheckedExport(given, cfg, tuple(weight_files), tokenizer_file, tokenizer, verified=record is not None)


# ---- files -----------------------------------------------------------------------------------------


def _member(root: Path, name: Any, source: str) -> Path:
    """The regular file `name` inside `root`, which a hostile index may not lead out of."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts or "\\" in name:
        raise ExportError(f"{source}: file name {name!r} is not a plain name inside the export directory; refusing to read it")
    path = root / name
    if not path.resolve().is_relative_to(root):
        raise ExportError(f"{source}: {name} is a link that leads outside the export directory; refusing to read it")
    if not path.exists():
        raise ExportError(f"{source}: {name} is missing; export again (or copy the whole directory)")
    if not path.resolve().is_file():
        raise ExportError(f"{path}: not a regular file")
    return path


def _read_json(path: Path) -> Any:
    """A small JSON file of the export, size-checked before it is read."""
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise ExportError(f"{path}: {size:,} bytes is far past any real {path.name} ({MAX_JSON_BYTES // 2**20} MiB at most)")
    try:
        return loads_json(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{path}: not valid JSON ({e})") from None


def _tokenizer_size(path: Path, vocab_size: int) -> None:
    fixed, per_token = TOKENIZER_BYTES
    budget = min(MAX_JSON_BYTES, fixed + per_token * vocab_size)
    size = path.stat().st_size
    if size > budget:
        raise ExportError(f"{path}: {size:,} bytes is far past what a vocabulary of {vocab_size:,} needs ({budget:,} bytes "
                          "at most); not the tokenizer this model was exported with")


def _weight_files(root: Path, given: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The safetensors files to read, and the index's tensor -> file map when sharded."""
    if (root / SINGLE_FILE).exists() or (root / SINGLE_FILE).is_symlink():
        return [_member(root, SINGLE_FILE, str(given))], None
    index_file = root / INDEX_FILE
    if not (index_file.exists() or index_file.is_symlink()):
        raise ExportError(f"{given}: no {SINGLE_FILE} (or {INDEX_FILE}): not a transformers export")
    index = _read_json(_member(root, INDEX_FILE, str(given)))
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(k, str) and isinstance(v, str)
                                                                     for k, v in weight_map.items()):
        raise ExportError(f"{index_file}: expected a \"weight_map\" object of tensor names to shard file names")
    return [_member(root, name, str(index_file)) for name in sorted(set(weight_map.values()))], weight_map


def _record(root: Path, say: Callable[[str], None]) -> dict[str, Any] | None:
    """londinium.json's {file: {sha256, bytes}}; None (and one line said) when there is none."""
    path = root / RECORD_FILE
    if not (path.exists() or path.is_symlink()):
        say(f"{root}: no {RECORD_FILE}, so its files' hashes cannot be verified (not written by `londinium export`?)")
        return None
    record = _read_json(_member(root, RECORD_FILE, str(root)))
    files = ((record.get("export") or {}).get("files") if isinstance(record, dict) and isinstance(record.get("export"), dict)
             else None)
    if not isinstance(files, dict):
        say(f"{path} records no file hashes (export.files), so they cannot be verified")
        return None
    return files


def _verify(path: Path, root: Path, record: dict[str, Any]) -> None:
    entry = record.get(path.relative_to(root).as_posix())
    if not isinstance(entry, dict):
        entry = None
    if entry is None:
        raise ExportError(f"{path}: not among the files {root / RECORD_FILE} recorded: the directory changed after "
                          "export; export again")
    size = path.stat().st_size
    if entry.get("bytes") != size:
        recorded = entry.get("bytes")
        raise ExportError(f"{path}: {size:,} bytes, but {RECORD_FILE} recorded "
                          f"{f'{recorded:,}' if isinstance(recorded, int) else repr(recorded)}: the file changed "
                          "after export (truncated or replaced); export again")
    digest = sha256_file(path)
    if entry.get("sha256") != digest:
        raise ExportError(f"{path}: sha256 {digest[:12]}... differs from {str(entry.get('sha256'))[:12]!r}... that "
                          f"{RECORD_FILE} recorded: the file changed after export; export again")


# ---- weights ---------------------------------------------------------------------------------------


def _headers(root: Path, files: list[Path], weight_map: dict[str, str] | None) -> dict[str, tuple[tuple[int, ...], str, Path]]:
    """{tensor: (shape, dtype, file)} from the safetensors headers, which the library validates
    (offsets inside the file, byte sizes equal to shape x dtype) without loading a tensor."""
    from safetensors import SafetensorError, safe_open

    out: dict[str, tuple[tuple[int, ...], str, Path]] = {}
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as f:
                found = {name: (tuple(f.get_slice(name).get_shape()), f.get_slice(name).get_dtype()) for name in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise ExportError(f"{path}: not a readable safetensors file ({e}); export again") from None
        for name, (shape, dtype) in found.items():
            if name in out:
                raise ExportError(f"{path}: tensor {name} is also in {out[name][2].name}")
            if weight_map is not None and weight_map.get(name) != path.relative_to(root).as_posix():
                raise ExportError(f"{path}: holds tensor {name}, which {INDEX_FILE} places in {weight_map.get(name)!r}")
            if dtype not in WEIGHT_DTYPES:
                raise ExportError(f"{path}: tensor {name} is {dtype}; londinium loads {', '.join(WEIGHT_DTYPES)} weights "
                                  "(a quantised model is exported as GGUF, see docs/export-gguf.md)")
            out[name] = (shape, dtype, path)
    if weight_map is not None:
        lost = sorted(set(weight_map) - set(out))
        if lost:
            raise ExportError(f"{INDEX_FILE} places tensor {lost[0]} in {weight_map[lost[0]]}, which does not hold it")
    return out


def _match(cfg: ModelConfig, headers: dict[str, tuple[tuple[int, ...], str, Path]], config_file: Path) -> None:
    """The tensors are exactly those of the model config.json describes: first by count (arithmetic,
    so a config asking for terabytes builds nothing), then by name and shape on the meta device,
    which names the tensor and file that differ. Within a factor of two of the parameters on disk,
    the meta model has no more modules than the files have tensors' worth of parameters."""
    from londinium.model.gpt import GPT
    from londinium.model.hf_layout import hf_layout
    from londinium.model.info import param_counts

    held = sum(math.prod(shape) for shape, _, _ in headers.values())
    described = param_counts(cfg).total  # a tied head counted once, as the export leaves it out
    if not held / 2 <= described <= 2 * held:
        files = sorted({path.name for _, _, path in headers.values()})
        raise ExportError(f"{config_file} describes a model of {described:,} parameters ({cfg.n_layer} layers, "
                          f"{cfg.n_embd} wide, vocabulary {cfg.vocab_size:,}) but the weights ({_names(files)}) hold {held:,}: "
                          "they do not belong together")
    with torch.device("meta"):
        expected = hf_layout(cfg).state_dict(GPT(cfg).state_dict())
    if cfg.tie_embeddings:
        expected.pop("lm_head.weight", None)
    for name, t in expected.items():
        if name not in headers:
            raise ExportError(f"the weights ({_names(sorted({p.name for _, _, p in headers.values()}))}) have no tensor "
                              f"{name}, which {config_file} needs")
        shape, _, path = headers[name]
        if shape != tuple(t.shape):
            raise ExportError(f"{path}: tensor {name} has shape {list(shape)}; {config_file} needs {list(t.shape)}")
    unexpected = sorted(set(headers) - set(expected))
    if unexpected:
        raise ExportError(f"{headers[unexpected[0]][2]}: tensor {unexpected[0]} is not part of the model {config_file} describes")


def _names(files: list[str]) -> str:
    return files[0] if len(files) == 1 else f"{files[0]} .. {files[-1]}"


def _finite(path: Path) -> None:
    """Refuse NaN or infinite weights: they would serve garbage with a 200."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                if not bool(torch.isfinite(f.get_tensor(name)).all()):
                    raise ExportError(f"{path}: tensor {name} holds NaN or infinite values; export a finite checkpoint")
    except (SafetensorError, OSError) as e:
        raise ExportError(f"{path}: cannot be read ({e})") from None
