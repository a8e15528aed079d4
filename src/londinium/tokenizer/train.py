"""`londinium tokenizer train`: byte-level BPE on the corpus's train split, saved for tokenizers and transformers.

Why these choices:
- Byte-level BPE (GPT-2's scheme) with the full 256-byte initial alphabet: any string encodes, and
  decoding gives it back exactly. The seed project's tokenizer normalised and lost spaces, newlines
  and accents.
- No normaliser and `add_prefix_space=False`: both would change the text.
- `use_regex=True`: GPT-2's pre-tokenisation regex keeps merges inside words (" thou", " hath"),
  so frequent period words become single tokens by themselves; nothing is hard-coded as "special".
- Only control tokens are special tokens (see `codec.SPECIAL_TOKENS`); they get the first ids, so
  `<|endoftext|>` is id 0 in every londinium vocabulary.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from londinium.config import TokenizerConfig, validate
from londinium.data.documents import iter_documents, iter_texts, require_split
from londinium.errors import LondiniumError
from londinium.files import write_json, write_text
from londinium.tokenizer.codec import CHAT_ROLES, EOT, PAD, SPECIAL_TOKENS
from londinium.workspace import Workspace, default_cache_dir



def validate_config(cfg: TokenizerConfig) -> None:
    """The [tokenizer] rules (declared in config.py, next to each field)."""
    validate(cfg)


def new_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE with londinium's lossless settings."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    min_frequency: int = 2,
    length: int | None = None,
    show_progress: bool | None = None,
) -> Tokenizer:
    """Train a byte-level BPE of `vocab_size` (special tokens included) on `texts`."""
    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        # All 256 bytes from the start, even ones the corpus never shows: nothing is ever unknown.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        # The trainer's own progress bars (with rates); only on a terminal, like tqdm's disable=None.
        show_progress=sys.stderr.isatty() if show_progress is None else show_progress,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=length)
    tok.encode_special_tokens = True
    return tok


def save_tokenizer(tok: Tokenizer, ws: Workspace) -> list[Path]:
    """Write tokenizer.json and the transformers directory (atomically, file by file)."""
    write_text(ws.tokenizer_file, tok.to_str(pretty=True))
    return [ws.tokenizer_file, *save_transformers(tok, ws.tokenizer_hf_dir)]


def save_transformers(tok: Tokenizer, directory: Path) -> list[Path]:
    """Save as a `transformers` fast tokenizer directory (bos/eos = <|endoftext|>, pad = <|pad|>).

    `AutoTokenizer.from_pretrained(directory)` loads it as a `PreTrainedTokenizerFast`. The two small
    JSON files are written directly rather than through `transformers.save_pretrained`, so training a
    tokenizer needs neither transformers nor its slow import; tests load the result with the real
    transformers to keep this honest.
    """
    specials = {"bos_token": EOT, "eos_token": EOT, "pad_token": PAD, "additional_special_tokens": list(CHAT_ROLES)}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **specials,
        "unk_token": None,  # byte-level: nothing is ever unknown
        # transformers' default clean-up turns " ." into "." and would break the round trip.
        "clean_up_tokenization_spaces": False,
    }
    files = {
        directory / "tokenizer.json": lambda p: write_text(p, tok.to_str(pretty=True)),
        directory / "tokenizer_config.json": lambda p: write_json(p, config),
        directory / "special_tokens_map.json": lambda p: write_json(p, specials),  # read by older transformers
    }
    for path, write in files.items():
        write(path)
    return list(files)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def train_tokenizer(
    ws: Workspace,
    cfg: TokenizerConfig,
    cache_dir: str | Path = "",
    download_timeout_s: float = 60.0,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> bool:
    """The tokenizer stage: train on the train split, save, write the report. Returns True if it ran.

    `cache_dir` is the download cache for GPT-2's reference files (corpus.cache_dir; "" = the default).
    """
    from londinium.eval.text_metrics import load_word_list
    from londinium.profiles import profile_for
    from londinium.tokenizer import gpt2, report

    validate_config(cfg)
    train_path, val_path = require_split(ws, "train"), require_split(ws, "val")
    period_list = profile_for(ws).path("period_words")  # the report's "Period words" table, for a profile with a list
    period_words = load_word_list(period_list) if period_list else []

    # Fetched before the up-to-date check so that a report made offline (without GPT-2) is redone
    # once the reference becomes available; the tokenizer itself comes out identical.
    gpt2_files, gpt2_note = None, None
    if cfg.compare_gpt2:
        try:
            gpt2_files = gpt2.gpt2_files(Path(cache_dir) if cache_dir else default_cache_dir(), timeout_s=download_timeout_s, log=log)
        except LondiniumError as e:
            gpt2_note = f"GPT-2 comparison skipped: {e}"
            log(f"tokenizer: warning: {gpt2_note}")
    else:
        gpt2_note = "GPT-2 comparison switched off (tokenizer.compare_gpt2 = false)"

    def run() -> list[Path]:
        n_docs = _count_lines(train_path)
        if n_docs == 0:
            raise LondiniumError(f"{train_path} has no documents: check the corpus report {ws.corpus_report_md}")
        log(f"tokenizer: training byte-level BPE, vocabulary {cfg.vocab_size}, on {n_docs} documents of {train_path}")
        tok = train_bpe(iter_texts(train_path), cfg.vocab_size, cfg.min_frequency, length=n_docs)
        if tok.get_vocab_size() < cfg.vocab_size:
            log(f"tokenizer: note: the corpus only supports {tok.get_vocab_size()} tokens (min_frequency {cfg.min_frequency}), fewer than the {cfg.vocab_size} asked for")
        outputs = save_tokenizer(tok, ws)
        outputs += report.write_report(ws, report.build_report(
            tok,
            cfg,
            val_docs=list(iter_documents(val_path)),
            train_path=train_path,
            gpt2_tok=gpt2.gpt2_tokenizer(gpt2_files) if gpt2_files else None,
            gpt2_note=gpt2_note,
            log=log,
            period_words=period_words,
        ))
        log(f"tokenizer: wrote {ws.tokenizer_file} and {ws.tokenizer_report_md}")
        return outputs

    return ws.run_stage(
        "tokenizer", cfg, run, inputs=[train_path, val_path], fingerprint={"gpt2_reference": gpt2_files is not None, "period_words": period_words},
        force=force, log=log
    )

