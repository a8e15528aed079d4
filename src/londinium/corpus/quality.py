"""Quality scores and the filters built on them (thresholds live in `CorpusConfig`).

Each score is a share in [0, 1] so thresholds read the same for a sonnet and a book:

- `alpha_words`: whitespace tokens that contain a letter (tables of numbers, page furniture score low);
- `noise`: tokens that look like OCR damage: digits fused to letters ("1Well", "th3"), stray
  symbols inside a word ("w@s", "b|ue"), a letter repeated four or more times;
- `boilerplate`: non-empty lines that look like licence, e-text or website furniture;
- `english`: word tokens that are common English function words, counting the period's spellings
  (thou, thee, hath, doth, vnto, vpon, haue, ...). English prose scores 0.4-0.6; Latin scores
  under 0.1 because it shares almost none of them.

Code and tables (`blocks.parse`) are not prose: the four scores are taken over a text's prose
blocks only, and `code` records the share of its characters in code and tables. A text that is
nearly all code (fewer than 30 words of prose) is not judged by them at all; what happens to its
code is the source's `code` setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from londinium.corpus.blocks import Block

FUNCTION_WORDS = frozenset(
    """
    the a an and or nor but if then than so as of to in into on upon vpon vnto unto at by for from with
    without within against among amongst about through till vntill until ere
    i me my mine we us our ours you your yours ye thou thee thy thine he him his she her hers it its
    they them their theirs himself herself itself myself thyself selfe self
    this that these those which who whom whose what when where whither whence why how wherefore
    there here thence hence hither thither
    be is are am art was were wert been being bee
    have hath has had hast hadst haue
    do does doth did dost didst doe
    shall shalt will wilt would wouldst should shouldst can canst could couldst may mayst might must
    not no nay yea yes all any some every euery each both more most such own other
    now yet also too euen even ever euer never neuer only onely very
    o oh 'tis tis 'twas twas t' th' o'
    wee hee shee mee vs vp ouer
    """.split()
)

# "'tis" and "’tis" alike: period texts use both apostrophes
_FUNCTION_WORDS_ANY_APOSTROPHE = FUNCTION_WORDS | {w.replace("'", "’") for w in FUNCTION_WORDS}
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*['’]?", re.UNICODE)
_NOISY = re.compile(
    r"[0-9](?:(?<=[^\W\d_][0-9])|(?=[^\W\d_]))"  # digits fused to letters ("1Well", "th3")
    r"|[@#$%^=|\\~<>{}¬¦](?<=[^\W\d_].)(?=[^\W\d_])"  # a symbol inside a word ("w@s")
    r"|([^\W\d_])\1{3}"  # a letter four times ("aaaa")
    r"|[^\x00-\x7f\u00a0-\u024f\u1e00-\u1eff\u2010-\u206f\u0370-\u03ff\ufb00-\ufb06]",  # stray non-Latin glyphs
)
# Words that start every boilerplate pattern below: a line is only tested with the full pattern
# when it contains one of them (str.find is ~50x faster than the regex over a whole book).
_BOILERPLATE_KEYS = (
    "gutenberg", "text", "book", "copyright", "rights reserved", "licen", "http", "www.", ".com", ".org", ".net",
    ".edu", "@", "transcriber", "produced by", "proofread", "privacy", "terms of", "cookie", "click", "subscribe",
    "sign in", "log in", "donat", "trademark", "disclaimer", "warrant", "merchantab",
)
_BOILERPLATE_LINE = re.compile(
    r"gutenberg|\be-?texts?\b|\be-?books?\b|copyright|all rights reserved|\blicen[cs]e[ds]?\b.*\b(terms|agreement|distribut|permission)"
    r"|https?://|www\.|\.(com|org|net|edu)\b|@\w+\.\w|transcriber'?s? note|produced by|proofread"
    r"|privacy policy|terms of (use|service)|cookies?\b.*\b(accept|policy|consent)|click here|subscribe|sign in|log in\b"
    r"|donat(e|ion)s?\b|trademark|\bdisclaimer\b|\bwarrant(y|ies)\b|\bmerchantability\b",
    re.IGNORECASE,
)


def _boilerplate_lines(text: str) -> int:
    low = text.lower()
    candidates: set[int] = set()
    for key in _BOILERPLATE_KEYS:
        i = low.find(key)
        while i != -1:
            candidates.add(low.rfind("\n", 0, i) + 1)
            i = low.find(key, i + 1)
    hits = 0
    for start in candidates:
        end = text.find("\n", start)
        if _BOILERPLATE_LINE.search(text, start, end if end != -1 else len(text)):
            hits += 1
    return hits


PARAGRAPH_MIN_WORDS = 30  # shorter paragraphs ("Enter Prospero.") are too small to judge a language by


@dataclass
class Scores:
    chars: int
    alpha_words: float | None  # None: not judged (a text of code with too little prose to judge)
    noise: float | None
    boilerplate: float | None
    english: float | None
    code: float = 0.0  # share of the characters in code and table blocks

    def as_dict(self) -> dict[str, float | int]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


_NO_LETTER_TOKEN = re.compile(r"(?<!\S)(?:(?!\s)[\W\d_])+(?!\S)")


def _distinct_spans(text: str, pattern: re.Pattern, sep: str) -> int:
    """How many `sep`-delimited spans (tokens, lines) contain a match. Matches are rare, so this
    whole-text scan is several times faster than testing every token or line on its own."""
    starts = set()
    for m in pattern.finditer(text):
        starts.add(max(text.rfind(c, 0, m.start()) for c in sep))
    return len(starts)


def score(text: str, blocks: list[Block] | None = None) -> Scores:
    """The scores of `text`; given its `blocks`, the prose ones are taken over its prose only."""
    prose, code = text, 0.0
    if blocks is not None and any(b.verbatim for b in blocks):
        prose = "\n\n".join(b.text for b in blocks if not b.verbatim)
        code = sum(len(b.text) for b in blocks if b.verbatim) / (len(text) or 1)
        if len(prose.split()) < PARAGRAPH_MIN_WORDS:
            return Scores(len(text), None, None, None, None, code)
    n_tokens = len(prose.split())
    n = n_tokens or 1
    no_letter = len(_NO_LETTER_TOKEN.findall(prose))
    noisy = _distinct_spans(prose, _NOISY, " \t\n")
    lines = sum(1 for line in prose.split("\n") if line.strip())
    boiler = _boilerplate_lines(prose)
    return Scores(
        chars=len(text),
        alpha_words=(n_tokens - no_letter) / n,
        noise=noisy / n,
        boilerplate=boiler / (lines or 1),
        english=english_share(prose),
        code=code,
    )


def rejection_reason(s: Scores, cfg, check_length: bool = True) -> str | None:
    """The first failed filter as a short reason ("too-short", "not-english", ...), or None if it passes.

    `cfg` is a `CorpusConfig`. Segments of a kept text are checked without the length filter (the
    last piece of a book may be short and still good).
    """
    if check_length and s.chars < cfg.min_chars:
        return "too-short"
    if s.alpha_words is not None and s.alpha_words < cfg.min_alpha_words:
        return "few-alphabetic-words"
    if s.noise is not None and s.noise > cfg.max_noise:
        return "ocr-noise"
    if s.boilerplate is not None and s.boilerplate > cfg.max_boilerplate:
        return "boilerplate"
    if s.english is not None and s.english < cfg.min_english:
        return "not-english"
    return None


_WHY = {  # reason -> (score, setting, what the score is)
    "too-short": ("chars", "min_chars", "characters"),
    "few-alphabetic-words": ("alpha_words", "min_alpha_words", "share of words with a letter"),
    "ocr-noise": ("noise", "max_noise", "share of words that look like OCR damage"),
    "boilerplate": ("boilerplate", "max_boilerplate", "share of lines that look like licence or site furniture"),
    "not-english": ("english", "min_english", "share of words that are English function words"),
}


def explain(reason: str, s: Scores, cfg) -> str:
    """Why a text failed a filter, with its score and the setting: the detail of its rejection record."""
    score_name, setting, what = _WHY[reason]
    value = getattr(s, score_name)
    shown = f"{value:,}" if isinstance(value, int) else f"{value:.2f}"
    prose = " of its prose (code and tables are judged apart)" if s.code else ""
    return f"{what}{prose} {shown}, against corpus.{setting} = {getattr(cfg, setting)}"




def _english_counts(text: str) -> tuple[int, int]:
    """(function words, words). Lower-casing once and counting with a C-level map is ~3x faster
    than testing word by word in Python, which matters on a 17 MB corpus."""
    words = _WORD.findall(text.lower())
    return sum(map(_FUNCTION_WORDS_ANY_APOSTROPHE.__contains__, words)), len(words)


def english_share(text: str) -> float:
    hits, n = _english_counts(text)
    return hits / (n or 1)


def foreign_paragraph(paragraph: str, min_share: float) -> float | None:
    """The English share of a paragraph of 30+ words that falls below `min_share`, else None (keep it).

    Catches the Latin and Italian poems inside Milton's English volumes (0.00-0.08 measured) while
    dense English verse keeps well above the default 0.12 (0.15 at the lowest in Shakespeare).
    """
    # whitespace tokens bound the word count from above: most paragraphs of a play are a short
    # speech and are let through without running the word pattern at all
    if min_share <= 0 or paragraph.count(" ") + paragraph.count("\n") < PARAGRAPH_MIN_WORDS - 1:
        return None
    hits, n = _english_counts(paragraph)
    if n < PARAGRAPH_MIN_WORDS:
        return None
    share = hits / n
    return share if share < min_share else None
