"""Metrics of generated text: diversity, repetition, period vocabulary, anachronisms, BLEU and ROUGE.

All word-level metrics share one definition of a word (`words`): a run of letters or digits, with
inner apostrophes kept ("heav'n", "'tis" -> "tis"), lower-cased. BLEU and ROUGE are not
reimplemented: `sacrebleu` and `rouge-score` are the implementations papers report, so the figures
here can be compared with published ones.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from londinium.errors import LondiniumError
from londinium.files import require_file

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def words(text: str) -> list[str]:
    """Lower-cased words of `text` (letters and digits; inner apostrophes kept)."""
    return [w.replace("’", "'") for w in _WORD.findall(text.lower())]


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The n-grams of `tokens` in order (none when there are fewer than n tokens)."""
    return list(zip(*(tokens[i:] for i in range(n))))


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / all n-grams, pooled over `texts`. 0 when empty."""
    grams: list[tuple[str, ...]] = []
    for t in texts:
        grams.extend(ngrams(words(t), n))
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(text: str, n: int = 4) -> float:
    """rep-n (Welleck et al. 2019) of one text: the share of its n-grams that repeat an earlier one."""
    grams = ngrams(words(text), n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def mean_repetition(texts: Iterable[str], n: int = 4) -> float:
    """rep-n averaged over the texts that have at least one n-gram."""
    rates = [repetition_rate(t, n) for t in texts if len(words(t)) >= n]
    return sum(rates) / len(rates) if rates else 0.0


def load_word_list(path: str | Path) -> list[str]:
    """Words (or phrases) of a list file, one per line; `#` starts a comment. Lower-cased, in order.
    A file with no words is an empty list: the metrics it feeds are left out."""
    path = require_file(path, "word list", LondiniumError, "fix the path in londinium.toml ([eval]) or leave it empty for the corpus profile's list")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise LondiniumError(f"word list {path} is not UTF-8 text; save it as UTF-8, one word per line") from None
    out: list[str] = []
    for line in lines:
        entry = line.split("#", 1)[0].strip().lower()
        if entry and entry not in out:
            out.append(entry)
    return out


def period_share(texts: Iterable[str], vocabulary: Iterable[str]) -> float:
    """Share of all words in `texts` that belong to `vocabulary` (e.g. thou, hath, doth). 0 when empty."""
    vocab = {w.lower() for w in vocabulary}
    total = hits = 0
    for t in texts:
        ws = words(t)
        total += len(ws)
        hits += sum(w in vocab for w in ws)
    return hits / total if total else 0.0


def _entry_pattern(entry: str) -> re.Pattern[str]:
    # Whole words only ("radio" must not match "radiology"), with the common inflections so that
    # "railways" and "telegraphed" count; the words of a phrase may be separated by any whitespace.
    body = r"\s+".join(re.escape(part) for part in entry.split())
    return re.compile(rf"(?<![^\W_]){body}(?:s|es|ed|d|ing)?(?![^\W_])", re.IGNORECASE)


def find_anachronisms(texts: Iterable[str], entries: Iterable[str]) -> Counter[str]:
    """How often each entry of an anachronism list occurs in `texts` (entries never seen are absent)."""
    patterns = [(e, _entry_pattern(e)) for e in entries]
    found: Counter[str] = Counter()
    for t in texts:
        for entry, pattern in patterns:
            if k := len(pattern.findall(t)):
                found[entry] += k
    return found


def first_words(text: str, k: int) -> str:
    """The text up to and including its k-th whitespace-separated word (for length-matched comparison)."""
    parts = text.split()
    return " ".join(parts[:k])


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu's defaults: 13a tokenisation, 4-grams, brevity penalty), 0-100."""
    import sacrebleu

    if not hypotheses:
        return 0.0
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def rouge(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F1 (rouge-score, no stemming: period spellings stay as they are), 0-1."""
    from rouge_score import rouge_scorer

    keys = ("rouge1", "rouge2", "rougeL")
    if not hypotheses:
        return {k: 0.0 for k in keys}
    scorer = rouge_scorer.RougeScorer(list(keys), use_stemmer=False)
    sums = dict.fromkeys(keys, 0.0)
    for hyp, ref in zip(hypotheses, references):
        scores = scorer.score(ref, hyp)  # rouge-score's order is (target, prediction)
        for k in keys:
            sums[k] += scores[k].fmeasure
    return {k: v / len(hypotheses) for k, v in sums.items()}
