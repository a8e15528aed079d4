"""The tokenizer report: how well it compresses the domain, measured, next to GPT-2 on the same text.

Everything is measured on the validation split (text the tokenizer never saw):
- bytes per token and tokens per word, ours and GPT-2's;
- per source, a same-size tokenizer trained on the *other* sources only, to show what training on
  the domain buys (a source's spelling and vocabulary are learnt from its own train documents);
- vocabulary utilisation, the longest tokens, which frequent words became single tokens, and a
  round trip of every validation document;
- for a corpus whose profile has a period word list (period-london), how the list's most frequent
  words are split; a corpus without one gets no such table.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

from tokenizers import Tokenizer

from londinium.config import TokenizerConfig
from londinium.data.documents import iter_documents
from londinium.files import write_json, write_text
from londinium.tokenizer.codec import SPECIAL_TOKENS, decode, encode_batch, special_token_ids
from londinium.workspace import Workspace

PERIOD_WORDS_SHOWN = 9
_WORD = re.compile(r"[^\W\d_]+")  # letters only: accented letters and long s count, digits do not
LONGEST = 15
FREQUENT_WORDS = 25


def compression(tok: Tokenizer, texts: Sequence[str]) -> dict[str, Any]:
    """Tokens, bytes per token and tokens per whitespace-separated word of `texts` under `tok`."""
    tokens = sum(len(ids) for ids in encode_batch(tok, texts))
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    words = sum(len(t.split()) for t in texts)
    return {
        "tokens": tokens,
        "bytes_per_token": round(n_bytes / tokens, 4) if tokens else None,
        "tokens_per_word": round(tokens / words, 4) if words else None,
    }


def _pieces(tok: Tokenizer, text: str) -> list[str]:
    return [decode(tok, [i]) for i in encode_batch(tok, [text])[0]]


def _token_bytes(tok: Tokenizer, token_id: int) -> int:
    # A byte-level token's string has one character per byte (GPT-2's byte-to-unicode table).
    token = tok.id_to_token(token_id)
    return len(token.encode("utf-8")) if token in SPECIAL_TOKENS else len(token)


def round_trip(tok: Tokenizer, docs: Sequence[dict], ids_per_doc: Sequence[list[int]]) -> dict[str, Any]:
    """Check decode(encode(text)) == text for every document; name the first failures."""
    decoded = tok.decode_batch([list(ids) for ids in ids_per_doc], skip_special_tokens=False)
    failures = [d.get("id", i) for i, (d, text) in enumerate(zip(docs, decoded)) if text != d["text"]]
    return {"documents": len(docs), "failures": len(failures), "failed_ids": failures[:10]}


def _by_source(
    tok: Tokenizer,
    cfg: TokenizerConfig,
    val_docs: Sequence[dict],
    train_path: Path,
    gpt2_tok: Tokenizer | None,
    log: Callable[[str], None],
) -> tuple[list[dict[str, Any]], str | None]:
    from londinium.tokenizer.train import train_bpe

    val_by_source: dict[str, list[str]] = defaultdict(list)
    for d in val_docs:
        val_by_source[str(d.get("source", "?"))].append(d["text"])
    train_sources = Counter(str(row.get("source", "?")) for row in iter_documents(train_path))
    if not val_by_source:
        return [], "the validation split is empty"
    if len(train_sources) < 2:
        return [], "only one source in the train split: no other sources to train a comparison tokenizer on"
    rows = []
    for source, texts in sorted(val_by_source.items()):
        others = (row["text"] for row in iter_documents(train_path) if str(row.get("source", "?")) != source)
        t0 = time.time()
        without = train_bpe(others, cfg.vocab_size, cfg.min_frequency, show_progress=False)
        log(f"tokenizer: report: trained a {without.get_vocab_size()}-token tokenizer without '{source}' in {time.time() - t0:.1f} s")
        row = {
            "source": source,
            "documents": len(texts),
            "bytes": sum(len(t.encode("utf-8")) for t in texts),
            "ours": compression(tok, texts)["bytes_per_token"],
            "without_source": compression(without, texts)["bytes_per_token"],
            "gpt2": compression(gpt2_tok, texts)["bytes_per_token"] if gpt2_tok else None,
        }
        rows.append(row)
    return rows, None


def build_report(
    tok: Tokenizer,
    cfg: TokenizerConfig,
    val_docs: Sequence[dict],
    train_path: Path | None = None,
    gpt2_tok: Tokenizer | None = None,
    gpt2_note: str | None = None,
    log: Callable[[str], None] = print,
    period_words: Sequence[str] = (),
) -> dict[str, Any]:
    """All the report's measurements as a JSON-ready dict. `period_words`: the corpus profile's period
    word list; its most frequent words in the validation split get the "Period words" table."""
    texts = [d["text"] for d in val_docs]
    vocab_size = tok.get_vocab_size()
    ids_per_doc = encode_batch(tok, texts)
    used = {i for ids in ids_per_doc for i in ids}
    words = Counter(w for t in texts for w in _WORD.findall(t))

    # Longest tokens with a letter in them; whitespace runs (indentation) are counted separately,
    # since they would otherwise fill the list and hide the words.
    ordinary = [i for i in range(vocab_size) if tok.id_to_token(i) not in SPECIAL_TOKENS]
    whitespace = [i for i in ordinary if not decode(tok, [i]).strip()]
    longest = sorted((i for i in ordinary if _WORD.search(decode(tok, [i]))), key=lambda i: (-_token_bytes(tok, i), i))[:LONGEST]

    lower = Counter()
    for w, n in words.items():
        lower[w.lower()] += n
    shown = sorted((w for w in period_words if " " not in w and lower[w]), key=lambda w: -lower[w])[:PERIOD_WORDS_SHOWN]
    period = []
    for word in shown:
        count = lower[word]
        row: dict[str, Any] = {"word": word, "count": count, "ours": _pieces(tok, " " + word), "ours_sentence_start": _pieces(tok, word.capitalize())}
        if gpt2_tok:
            row["gpt2"] = _pieces(gpt2_tok, " " + word)
        period.append(row)

    # Frequent validation words that are one token for us (mid-sentence form, with its space) and,
    # when GPT-2 is at hand, several tokens for GPT-2: the words domain training made cheap.
    single = []
    for w, n in words.most_common():
        if len(w) < 3 or len(encode_batch(tok, [" " + w])[0]) != 1:
            continue
        gpt2_n = len(encode_batch(gpt2_tok, [" " + w])[0]) if gpt2_tok else None
        if gpt2_tok and gpt2_n == 1:
            continue
        single.append({"word": w, "count": n, "gpt2_tokens": gpt2_n})
        if len(single) >= FREQUENT_WORDS:
            break

    by_source, by_source_note = [], "switched off (tokenizer.compare_sources = false)"
    if cfg.compare_sources and train_path is not None:
        by_source, by_source_note = _by_source(tok, cfg, val_docs, train_path, gpt2_tok, log)

    return {
        "vocab_size": vocab_size,
        "vocab_size_requested": cfg.vocab_size,
        "special_tokens": special_token_ids(tok),
        "validation": {
            "documents": len(texts),
            "bytes": sum(len(t.encode("utf-8")) for t in texts),
            "words": sum(len(t.split()) for t in texts),
        },
        "ours": compression(tok, texts),
        "gpt2": compression(gpt2_tok, texts) if gpt2_tok else None,
        "gpt2_note": gpt2_note,
        "utilisation": {"used": len(used), "vocab_size": vocab_size, "share": round(len(used) / vocab_size, 4)},
        "round_trip": round_trip(tok, val_docs, ids_per_doc),
        "longest_tokens": [{"id": i, "text": decode(tok, [i]), "bytes": _token_bytes(tok, i)} for i in longest],
        "whitespace_tokens": {"count": len(whitespace), "longest_bytes": max((_token_bytes(tok, i) for i in whitespace), default=0)},
        "period_words": period,
        "single_token_words": single,
        "by_source": by_source,
        "by_source_note": by_source_note,
    }


def _num(value: float | None) -> str:
    return "–" if value is None else str(value)


def _visible(piece: str) -> str:
    # Markdown tables cannot hold newlines, and code spans trim spaces: show them as ␣, \n, \t, \r.
    return piece.replace(" ", "␣").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r").replace("|", "\\|")


def _cell(pieces: list[str]) -> str:
    return " · ".join(f"`{_visible(p)}`" for p in pieces)


def render_markdown(r: dict[str, Any]) -> str:
    v, ours, gpt2 = r["validation"], r["ours"], r["gpt2"]
    out = [
        "# Tokenizer report",
        "",
        f"Byte-level BPE, {r['vocab_size']} tokens ({r['vocab_size_requested']} requested), trained on the train split. "
        f"Measured on the validation split: {v['documents']} documents, {v['bytes']:,} bytes, {v['words']:,} words.",
        "",
        "## Compression (validation split)",
        "",
        "| tokenizer | vocabulary | tokens | bytes per token | tokens per word |",
        "|---|---:|---:|---:|---:|",
        f"| londinium (this corpus) | {r['vocab_size']} | {ours['tokens']:,} | {_num(ours['bytes_per_token'])} | {_num(ours['tokens_per_word'])} |",
    ]
    if gpt2:
        out.append(f"| GPT-2 | 50257 | {gpt2['tokens']:,} | {_num(gpt2['bytes_per_token'])} | {_num(gpt2['tokens_per_word'])} |")
        if ours["tokens"]:
            out += ["", f"GPT-2 needs {gpt2['tokens'] / ours['tokens']:.2f}x as many tokens as londinium's tokenizer for the same text."]
    if r["gpt2_note"]:
        out += ["", f"Note: {r['gpt2_note']}"]
    out += ["", "## What domain training buys (bytes per token on each source's validation text)", ""]
    if r["by_source"]:
        out += [
            "Each source is measured with our tokenizer, with a same-size tokenizer trained on the other sources only, and with GPT-2.",
            "",
            "| source | documents | bytes | ours | without this source | GPT-2 |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for s in r["by_source"]:
            out.append(f"| {s['source']} | {s['documents']} | {s['bytes']:,} | {_num(s['ours'])} | {_num(s['without_source'])} | {_num(s['gpt2'])} |")
    else:
        out.append(f"Not measured: {r['by_source_note']}.")
    u, rt = r["utilisation"], r["round_trip"]
    out += [
        "",
        "## Vocabulary",
        "",
        f"- Utilisation: {u['used']:,} of {u['vocab_size']:,} tokens ({u['share']:.1%}) occur in the validation split.",
        f"- Round trip: decode(encode(text)) == text for {rt['documents'] - rt['failures']} of {rt['documents']} validation documents"
        + (f"; FAILED for {rt['failed_ids']}" if rt["failures"] else "."),
        "- Special tokens: " + ", ".join(f"`{t}` = {i}" for t, i in r["special_tokens"].items()) + " (text that spells them is encoded as plain text unless asked).",
        "",
        "### Longest tokens",
        "",
        f"Tokens with a letter in them, longest first. Besides these, {r['whitespace_tokens']['count']} tokens are runs of "
        f"whitespace only (up to {r['whitespace_tokens']['longest_bytes']} bytes; indentation and line breaks).",
        "",
        "| id | bytes | token |",
        "|---:|---:|---|",
    ]
    out += [f"| {t['id']} | {t['bytes']} | {_cell([t['text']])} |" for t in r["longest_tokens"]]
    if r["period_words"]:  # only for a corpus whose profile has a period word list
        out += ["", "### Period words", "", "The period word list's most frequent words in the validation split, and how each is split "
                "mid-sentence (with its leading space, shown as ␣) and at a sentence start.", ""]
        head = "| word | count | ours | ours, sentence start |" + (" GPT-2 |" if gpt2 else "")
        out += [head, "|---|---:|---|---|" + ("---|" if gpt2 else "")]
        for p in r["period_words"]:
            out.append(f"| {p['word']} | {p['count']} | {_cell(p['ours'])} | {_cell(p['ours_sentence_start'])} |" + (f" {_cell(p['gpt2'])} |" if gpt2 else ""))
    out += ["", "### Frequent words that became single tokens", ""]
    if gpt2:
        out.append("The most frequent validation words that are one token for us but several for GPT-2 (mid-sentence form):")
    else:
        out.append("The most frequent validation words that are one token for us (mid-sentence form):")
    out.append("")
    out.append(", ".join(f"{w['word']} ({w['count']}" + (f", GPT-2: {w['gpt2_tokens']}" if w["gpt2_tokens"] else "") + ")" for w in r["single_token_words"]) or "none")
    return "\n".join(out) + "\n"


def write_report(ws: Workspace, report: dict[str, Any]) -> list[Path]:
    """The report (from `build_report`) as JSON and Markdown, each written atomically."""
    write_json(ws.tokenizer_report_json, report)
    write_text(ws.tokenizer_report_md, render_markdown(report))
    return [ws.tokenizer_report_json, ws.tokenizer_report_md]
