"""Queries against the corpus search index (built by `londinium index build`, see `build.py`).

    index = CorpusIndex.load(ws)
    for hit in index.search("to be or not to be", k=5, source="shakespeare", split="train"):
        hit.id, hit.title, hit.score, hit.snippet, hit.snippet_start, hit.matches
    index.get("kjv/...#3").text

A query is folded into terms exactly as documents were: by each folding the index records in
`meta.json` (`build.Folding`), its forms OR-ed, so under period-london "vpon" finds "upon" and on a
neutral corpus "bit" finds only "bit". Filters (source, split, a period range) become a weight mask on the BM25 scores, so the
top k are the best *matching* documents, not the best k filtered afterwards. Each hit carries the
passage where the query's terms cluster most densely, with its character offsets in the document
text (`text[hit.snippet_start:hit.snippet_end] == hit.snippet`) and those of every matched word.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from londinium.errors import LondiniumError
from londinium.files import sha256_file
from londinium.spelling import WORD, words
from londinium.workspace import SPLITS, Workspace

MAX_K = 100


class SearchError(LondiniumError):
    """The index is missing or stale, or a query or filter is invalid; the message says what to do."""


@dataclass
class Document:
    """A corpus document with its provenance."""

    id: str
    split: str
    source: str
    title: str
    period: list[int]
    license: str
    text: str

    def provenance(self) -> dict[str, Any]:
        """Everything but the text: what a citation needs."""
        return {k: v for k, v in asdict(self).items() if k != "text"} | {"chars": len(self.text)}


@dataclass
class Hit:
    """One search result: a document, its BM25 score and the passage that matched."""

    rank: int
    id: str
    source: str
    title: str
    period: list[int]
    split: str
    license: str
    score: float
    snippet: str
    snippet_start: int  # character offsets of the snippet in the document text
    snippet_end: int
    matches: list[list[int]] = field(default_factory=list)  # [start, end] of each matched word, document offsets

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


BM25_FILES = ("params.index.json", "vocab.index.json", "data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy")
DOCUMENT_FIELDS = {"id": str, "split": str, "source": str, "title": str, "license": str}


def index_files(ws: Workspace) -> list[Path]:
    """Every file a search reads from `ws`'s index (bm25s's file names, then londinium's)."""
    return [*(ws.index_bm25_dir / name for name in BM25_FILES), ws.index_documents, ws.index_spellings, ws.index_meta]


class Damage:
    """Reads the index's files, each problem a one-line SearchError naming the file and the command
    that rebuilds the index. Even files the manifest vouches for are read this way: a manifest can
    be edited, and an index from another londinium or bm25s version matches its own record."""

    def __init__(self, ws: Workspace):
        self.rebuild = f"rebuild the index with `londinium index build --force -w {ws.root}`"

    def __call__(self, path: Any, what: str) -> SearchError:
        return SearchError(f"{path}: {what}; {self.rebuild}")

    def read_json(self, path: Path) -> Any:
        from londinium.files import loads_json

        try:
            return loads_json(path.read_bytes())
        except (OSError, ValueError) as e:  # ValueError: not JSON, not UTF-8
            raise self(path, f"not readable JSON ({e})") from None

    def documents(self, path: Path, splits: set[str]) -> list[dict]:
        """documents.jsonl's rows, each checked for the fields a hit reports."""
        from londinium.files import loads_json

        rows = []
        try:
            lines = path.read_bytes().splitlines()
        except OSError as e:
            raise self(path, f"not readable ({e.strerror})") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = loads_json(line)
            except ValueError as e:
                raise self(f"{path}:{n}", f"not JSON ({e})") from None
            if not isinstance(row, dict) or any(not isinstance(row.get(k), t) for k, t in DOCUMENT_FIELDS.items()):
                raise self(f"{path}:{n}", f"a row needs the string fields {', '.join(DOCUMENT_FIELDS)}")
            period = row.get("period")
            if not (isinstance(period, list) and len(period) == 2 and all(type(y) is int for y in period)):
                raise self(f"{path}:{n}", "'period' must be [first year, last year]")
            if row["split"] not in splits:
                raise self(f"{path}:{n}", f"split {row['split']!r} is not one meta.json lists")
            rows.append(row)
        return rows

    def bm25(self, directory: Path, num_docs: int) -> Any:
        """The bm25s index, its arrays checked against each other and the documents, so that no query
        can index outside them (bm25s trusts its files: a damaged one fails inside a search, or not at all)."""
        import bm25s

        try:
            retriever = bm25s.BM25.load(str(directory), show_progress=False)
        except Exception as e:  # bm25s reads JSON and .npy files with no checks: a damaged one raises anything
            raise self(self._unreadable(directory) or directory, f"bm25s cannot load it ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        scores, vocab = retriever.scores, retriever.vocab_dict
        data, indices, indptr = (np.asarray(scores.get(k)) for k in ("data", "indices", "indptr"))
        files = {k: directory / f"{k}.csc.index.npy" for k in ("data", "indices", "indptr")}
        if not (isinstance(vocab, dict) and all(isinstance(t, str) and type(i) is int for t, i in vocab.items())):
            raise self(directory / "vocab.index.json", "not a JSON object of term ids")
        if scores.get("num_docs") != num_docs:
            raise self(directory / "params.index.json", f"num_docs is {scores.get('num_docs')!r}, the index holds {num_docs} documents")
        try:
            kinds_ok = np.dtype(retriever.dtype).kind == "f" and np.dtype(retriever.int_dtype).kind in "iu"
        except TypeError:
            kinds_ok = False
        if not kinds_ok:
            raise self(directory / "params.index.json", "dtype and int_dtype must name a float and an integer type")
        for name, array, kind in (("data", data, "f"), ("indices", indices, "iu"), ("indptr", indptr, "iu")):
            if array.ndim != 1 or array.dtype.kind not in kind:
                raise self(files[name], "not a one-dimensional array of the right type")
        if not len(indptr) or indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] != len(data) or len(indices) != len(data):
            raise self(files["indptr"], "its offsets do not fit the data and indices arrays")
        if len(indices) and (indices.min() < 0 or indices.max() >= num_docs):
            raise self(files["indices"], f"a document number outside 0-{num_docs - 1}")
        if not np.all(np.isfinite(data)):
            raise self(files["data"], "a score that is not a finite number")
        if any(i < 0 or i >= len(indptr) - 1 for t, i in vocab.items() if t):  # bm25s maps "" to an id with no column
            raise self(directory / "vocab.index.json", "a term id with no column in the score arrays")
        return retriever

    @staticmethod
    def _unreadable(directory: Path) -> Path | None:
        """The first of the bm25s files that does not read on its own (to name it), if any."""
        from londinium.files import loads_json

        for name in BM25_FILES:
            path = directory / name
            try:
                if name.endswith(".npy"):
                    np.load(path, allow_pickle=False)
                elif not isinstance(loads_json(path.read_bytes()), dict):
                    return path
            except Exception:
                return path
        return None


def period_overlaps(period: Any, lo: int | None, hi: int | None) -> bool:
    """True when a document's [first, last] year range meets [lo, hi]; an unknown period meets none."""
    if lo is None and hi is None:
        return True
    if not (isinstance(period, (list, tuple)) and len(period) == 2) or tuple(period) == (0, 0):
        return False
    first, last = period
    return (lo is None or last >= lo) and (hi is None or first <= hi)


class CorpusIndex:
    """The loaded index with the documents' texts; see the module docstring."""

    def __init__(self, retriever: Any, documents: list[Document], spellings: dict[str, dict[str, list[str]]],
                 folding: dict[str, str], snippet_chars: int = 240):
        """`spellings`: {folding: {term: its spellings}}; `folding`: {source: the folding of its documents}."""
        from londinium.index.build import TermFolder
        from londinium.profiles.profile import FOLDINGS

        self.retriever = retriever
        self.documents = documents
        self.by_id = {d.id: i for i, d in enumerate(documents)}
        self.spellings = spellings
        self.folding = folding
        self.snippet_chars = snippet_chars
        self.sources = sorted({d.source for d in documents})
        self.splits = sorted({d.split for d in documents})
        self._folders = {name: TermFolder(FOLDINGS[name]) for name in sorted(set(folding.values()))}
        # documents each term occurs in (bm25s keeps one sparse column per term)
        self._doc_freq = np.diff(np.asarray(retriever.scores["indptr"]))
        self._source = np.array([d.source for d in documents], dtype=object)
        self._split = np.array([d.split for d in documents], dtype=object)

    @classmethod
    def load(cls, ws: Workspace, snippet_chars: int = 240) -> CorpusIndex:
        """Load `ws`'s index and the corpus texts it was built from. A missing index, one built from
        another corpus than the one there now, or a damaged one (a file changed since `londinium
        index build` wrote it, or one that does not read as what that command writes) is a
        SearchError naming the file and the command that rebuilds it."""
        from londinium.data.documents import iter_documents
        from londinium.index.build import INDEX_FORMAT
        from londinium.profiles.profile import FOLDINGS
        from londinium.workspace import StageNotDone

        build = f"run `londinium index build -w {ws.root}`"
        if not ws.index_dir.exists():
            raise SearchError(f"no search index in {ws.index_dir}: {build} first")
        try:  # every file as the index stage recorded it (the manifest holds their sha256)
            ws.require_stage("index", index_files(ws))
        except StageNotDone as e:
            raise SearchError(f"the search index is damaged: {e}") from None
        damaged = Damage(ws)
        meta = damaged.read_json(ws.index_meta)
        if not isinstance(meta, dict):
            raise damaged(ws.index_meta, "not a JSON object")
        if meta.get("format") != INDEX_FORMAT:
            raise SearchError(f"the search index in {ws.index_dir} has format {meta.get('format')!r}, this londinium reads {INDEX_FORMAT}: {build}")
        splits, count = meta.get("splits"), meta.get("documents")
        if not (isinstance(splits, dict) and splits and all(s in SPLITS and isinstance(d, str) for s, d in splits.items())):
            raise damaged(ws.index_meta, f"'splits' must map corpus splits ({', '.join(SPLITS)}) to sha256 digests")
        if not (type(count) is int and count >= 0):
            raise damaged(ws.index_meta, "'documents' must be a count")
        for split, digest in splits.items():
            path = ws.corpus_split(split)
            if not path.is_file() or sha256_file(path) != digest:
                raise SearchError(f"the search index in {ws.index_dir} was built from another {path} than the one there now: {build}")
        rows = damaged.documents(ws.index_documents, set(splits))
        if len(rows) != count:
            raise damaged(ws.index_documents, f"{len(rows)} documents where meta.json says {count}")
        corpus = [(r.get("id", ""), r["text"]) for split in splits for r in iter_documents(ws.corpus_split(split))]
        if len(corpus) != len(rows) or any(r["id"] != doc_id for r, (doc_id, _) in zip(rows, corpus)):
            raise SearchError(f"the search index in {ws.index_dir} does not match the corpus ({len(rows)} vs {len(corpus)} documents, "
                              f"or other ids): {build}")
        docs = [Document(r["id"], r["split"], r["source"], r["title"], r["period"], r["license"], text) for r, (_, text) in zip(rows, corpus)]
        retriever = damaged.bm25(ws.index_bm25_dir, len(docs))
        folding = meta.get("folding")
        if not (isinstance(folding, dict) and all(f in FOLDINGS for f in folding.values()) and {d.source for d in docs} <= set(folding)):
            raise damaged(ws.index_meta, f"'folding' must map every indexed source to a folding ({', '.join(FOLDINGS)})")
        spellings = damaged.read_json(ws.index_spellings)
        if not (isinstance(spellings, dict) and set(spellings) == set(folding.values()) and all(
                isinstance(terms, dict) and all(isinstance(f, list) and all(isinstance(w, str) for w in f) for f in terms.values())
                for terms in spellings.values())):
            raise damaged(ws.index_spellings, "not a JSON object of the foldings meta.json names, each of lists of spellings")
        return cls(retriever, docs, spellings, folding, snippet_chars)

    # ---- look-ups -------------------------------------------------------------------------------

    def get(self, doc_id: str) -> Document:
        """The document with this id, or a SearchError that says how to find ids."""
        i = self.by_id.get(doc_id)
        if i is None:
            raise SearchError(f"no document with id {doc_id!r} in the corpus; ids come from search results (search_corpus, `londinium search`)")
        return self.documents[i]

    def period_range(self) -> tuple[int, int] | None:
        """The earliest and latest year of the documents with a known period."""
        known = [d.period for d in self.documents if tuple(d.period) != (0, 0)]
        return (min(p[0] for p in known), max(p[1] for p in known)) if known else None

    # ---- search ---------------------------------------------------------------------------------

    def _mask(self, source: str | None, split: str | None, period_from: int | None, period_to: int | None) -> np.ndarray | None:
        if source is not None and source not in self.sources:
            raise SearchError(f"source filter {source!r}: no such source in the index; sources: {', '.join(self.sources)}")
        if split is not None and split not in self.splits:
            raise SearchError(f"split filter {split!r}: not indexed; indexed splits: {', '.join(self.splits)}")
        if period_from is not None and period_to is not None and period_from > period_to:
            raise SearchError(f"period filter: period_from ({period_from}) is after period_to ({period_to})")
        if source is None and split is None and period_from is None and period_to is None:
            return None
        keep = np.ones(len(self.documents), dtype=bool)
        if source is not None:
            keep &= self._source == source
        if split is not None:
            keep &= self._split == split
        if period_from is not None or period_to is not None:
            keep &= np.array([period_overlaps(d.period, period_from, period_to) for d in self.documents])
        if not keep.any():
            raise SearchError(self._excluded_by(source, split, period_from, period_to))
        return keep.astype(np.float32)

    def _excluded_by(self, source: str | None, split: str | None, period_from: int | None, period_to: int | None) -> str:
        """Why the filters leave no document to search: what each filter keeps on its own."""
        parts = []
        if source is not None:
            parts.append(f"source {source!r} keeps {int((self._source == source).sum()):,}")
        if split is not None:
            parts.append(f"split {split!r} keeps {int((self._split == split).sum()):,}")
        if period_from is not None or period_to is not None:
            wanted = f"{'' if period_from is None else period_from}-{'' if period_to is None else period_to}"
            kept = sum(period_overlaps(d.period, period_from, period_to) for d in self.documents)
            known = self.period_range()
            parts.append(f"period {wanted} keeps {kept:,}" + (
                f" (the documents' periods span {known[0]}-{known[1]})" if known else
                " (no document has a known period: the sources registry gives them period = [0, 0]; "
                "leave the period filter out, or set `period` for the source)"))
        return f"no document of the {len(self.documents):,} indexed passes the filters: " + "; ".join(parts)

    def marked_terms(self, terms: list[str]) -> set[str]:
        """The query terms a snippet is placed by and marks: those in at most half the documents
        ("the", "and" would only pull the snippet anywhere and cost the most), all when none is."""
        vocab = self.retriever.vocab_dict
        rare = {t for t in terms if t in vocab and self._doc_freq[vocab[t]] <= len(self.documents) / 2}
        return rare or set(terms)

    def term_folder(self) -> Any:
        """The `TermFolder` of the index's folding when all its sources share one (every corpus but a
        registry mixing profiles), else None."""
        return next(iter(self._folders.values())) if len(self._folders) == 1 else None

    def query_terms(self, query: str) -> list[str]:
        """The terms of `query` under every folding the index uses, each word's distinct forms once:
        with one folding, the query folded as the documents were; with several (a source folded
        differently from the rest), the forms are OR-ed, as BM25 sums over a query's terms."""
        return [t for w in words(query) for t in dict.fromkeys(f.fold(w) for f in self._folders.values())]

    def search(self, query: str, k: int = 10, source: str | None = None, split: str | None = None,
               period_from: int | None = None, period_to: int | None = None) -> list[Hit]:
        """The k best-matching documents (fewer when fewer match), best first."""
        if not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise SearchError(f"k = {k!r}: ask for 1 to {MAX_K} results")
        terms = self.query_terms(query)
        if not terms:
            raise SearchError(f"query {query!r} has no words to search for")
        mask = self._mask(source, split, period_from, period_to)
        found, scores = self.retriever.retrieve([terms], k=min(k, len(self.documents)), show_progress=False,
                                                n_threads=0, weight_mask=mask)  # 0: no thread pool per call
        spelt: dict[str, tuple[list[str], list[str]]] = {}  # folding -> the spellings a snippet marks, and all the query's
        hits = []
        for i, score in zip(found[0].tolist(), scores[0].tolist()):
            if score <= 0:  # no query term in it (or filtered out)
                continue
            d = self.documents[i]
            folding = self.folding[d.source]
            folder = self._folders[folding]
            if folding not in spelt:  # the document's words were keyed by its own folding: so are its matches
                own, forms = folder(query), self.spellings[folding]
                spelt[folding] = ([f for t in self.marked_terms(own) for f in forms.get(t, ())],
                                  [f for t in set(own) for f in forms.get(t, ())])
            marked, every = spelt[folding]
            start, end, matches = snippet_span(d.text, marked, self.snippet_chars, folder.fold)
            if not matches and len(every) > len(marked):  # it matched on common words only
                start, end, matches = snippet_span(d.text, every, self.snippet_chars, folder.fold)
            hits.append(Hit(len(hits) + 1, d.id, d.source, d.title, d.period, d.split, d.license, round(float(score), 4),
                            d.text[start:end], start, end, matches))
        return hits


def find_words(text: str, spellings: Any, fold: Any) -> list[tuple[int, int, str]]:
    """(start, end, folded term) of each whole-word occurrence of `spellings` (lower case) in `text`,
    in order. A word is `spelling.WORD`'s: "heath" is not found in "heath's". str.find over the
    lower-cased text is ~10x faster than a regular expression of alternatives, which Python tries at
    every position."""
    low = text.lower()
    if len(low) != len(text):  # a character whose lower case is longer (rare): fold every word instead
        forms = set(spellings)
        return [(m.start(), m.end(), fold(m.group())) for m in WORD.finditer(text) if m.group().lower() in forms]
    found = []
    for form in set(spellings):
        pos = low.find(form)
        while pos != -1:
            end = pos + len(form)
            if _word_bounds(text, pos, end):
                found.append((pos, end, fold(text[pos:end])))
            pos = low.find(form, pos + 1)
    return sorted(found)


def _letter(ch: str) -> bool:
    return ch.isalnum() and not ch.isdecimal()  # WORD's [^\W\d_]


def _word_bounds(text: str, start: int, end: int) -> bool:
    """True when text[start:end] is a whole word: no letter (or letter and apostrophe) on either side."""
    if start > 0 and (_letter(text[start - 1]) or (start > 1 and text[start - 1] in "'’" and _letter(text[start - 2]))):
        return False
    n = len(text)
    return not (end < n and (_letter(text[end]) or (end + 1 < n and text[end] in "'’" and _letter(text[end + 1]))))


def snippet_span(text: str, spellings: Any, width: int, fold: Any) -> tuple[int, int, list[list[int]]]:
    """(start, end, matches) of the `width`-character passage of `text` where the most distinct terms
    occur, found by their `spellings` (lower case; `fold` turns a match into its term); matches are
    [start, end] of the matched words inside the passage."""
    found = find_words(text, spellings, fold)
    if not found:
        return 0, _cut_after(text, min(len(text), width), 1), []
    best, best_key = (0, 0), (-1, 0)
    j, seen = 0, {found[0][2]: 1}  # the window is found[i..j]; seen counts its terms
    for i in range(len(found)):  # two pointers: the widest window of matches that starts at match i
        if j < i:
            j, seen = i, {found[i][2]: 1}
        while j + 1 < len(found) and found[j + 1][1] - found[i][0] <= width:
            j += 1
            seen[found[j][2]] = seen.get(found[j][2], 0) + 1
        key = (len(seen), j - i + 1)
        if key > best_key:
            best, best_key = (i, j), key
        term = found[i][2]  # match i leaves the window
        seen[term] -= 1
        if not seen[term]:
            del seen[term]
    i, j = best
    lo, hi = found[i][0], found[j][1]
    pad = max(0, width - (hi - lo)) // 2
    start = _cut_before(text, max(0, lo - pad), lo)
    end = _cut_after(text, min(len(text), max(hi, start + width)), hi)
    matches = [[s, e] for s, e, _ in found if start <= s and e <= end]
    return start, end, matches


def _cut_before(text: str, pos: int, limit: int) -> int:
    """Move `pos` forward, at most to `limit`, to just after whitespace (a snippet never opens mid-word)."""
    while 0 < pos < limit and not text[pos - 1].isspace():
        pos += 1
    return pos


def _cut_after(text: str, pos: int, limit: int) -> int:
    """Move `pos` back, at least to `limit`, to whitespace (a snippet never closes mid-word)."""
    while limit < pos < len(text) and not text[pos].isspace():
        pos -= 1
    return pos


def render_hits(query: str, hits: list[Hit]) -> str:
    """Hits as readable text: rank, score, id, title and provenance, then the snippet on one line."""
    from londinium.eval.perplexity import period_label

    if not hits:
        return f"no document matches {query!r}\n"
    lines = []
    for h in hits:
        lines.append(f"{h.rank}. [{h.score:.3f}] {h.id}")
        period = period_label(h.period)
        period = "" if period == "unknown" else f", {period}"  # a source that states no period: nothing to say
        lines.append(f"   {h.title or '(untitled)'} | source {h.source}{period}, {h.split} split"
                     + (f" | {h.license}" if h.license else ""))
        lines.append(f"   chars {h.snippet_start}-{h.snippet_end}: {' '.join(h.snippet.split())}")
    return "\n".join(lines) + "\n"
