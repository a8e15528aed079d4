"""`londinium index build`: a lexical BM25 index over the corpus documents.

    build_index(ws, cfg)        corpus/{train,val,test}.jsonl -> index/{bm25/, documents.jsonl, meta.json}

Scoring is `bm25s`'s (Lucene's BM25 variant); londinium only decides what a *term* is: a word of the
document keyed by its source's folding (`Folding`): by default the corpus profile's, the one the
corpus stage groups near-duplicates with. A neutral corpus folds nothing but case, so "bit" never
finds "byte"; under period-london "vpon" and "upon" are one term, as are "haue" and "have", so a
query in modern spelling finds the First Folio text and the other way round. `index.folding`
overrides the profile for every document. `meta.json` records the folding of each source, and a
query is folded by each folding in use (`search.py`).

`spellings.json` lists, per folding, the spellings of each term found in the corpus
({"early-modern": {"upon": ["upon", "vpon"]}}), so the words a hit matched are found by plain string
search instead of folding every word of it.

The index holds no document text: `documents.jsonl` names each document (id, split, source, title,
period, and the licence from the sources registry) in index order, and `meta.json` records the
sha256 of the corpus splits it was built from, so a search reads the texts from the corpus and
refuses an index the corpus has since moved past. The whole directory is built next to the old one
and renamed into place, so a crash never leaves half an index.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from londinium.config import Config, IndexConfig
from londinium.errors import ConfigError
from londinium.files import fsync_dir, sha256_file, write_json, write_jsonl
from londinium.outputs import check_target, holds_only
from londinium.profiles.profile import FOLDINGS
from londinium.spelling import fold_word, words
from londinium.workspace import SPLITS, Workspace

INDEX_FORMAT = 3  # bump when the files change: the stage then rebuilds, and search refuses an older index


def validate_config(c: IndexConfig) -> None:
    """Raise ConfigError naming the first [index] key out of range."""

    def need(ok: bool, key: str, rule: str) -> None:
        if not ok:
            raise ConfigError(f"index.{key} = {getattr(c, key)!r}: {rule}")

    need(bool(c.splits) and all(s in SPLITS for s in c.splits) and len(set(c.splits)) == len(c.splits),
         "splits", "must name distinct splits among 'train', 'val', 'test'")
    need(c.k1 >= 0, "k1", "must be >= 0")
    need(0 <= c.b <= 1, "b", "must be in [0, 1]")
    need(c.snippet_chars >= 20, "snippet_chars", "must be >= 20")


@dataclass(frozen=True)
class Folding:
    """How the index keys the words of each source: `default` (a name in profiles.FOLDINGS), or a
    source's own in `by_source`."""

    default: str
    by_source: dict[str, str] = field(default_factory=dict)

    def of(self, source: str) -> str:
        return self.by_source.get(source, self.default)

    @classmethod
    def for_index(cls, ws: Workspace, c: IndexConfig) -> Folding:
        """`index.folding` for every document, or with "profile" the corpus profile's, per source."""
        if c.folding != "profile":
            return cls(c.folding)
        from londinium.profiles import profile_for

        profile = profile_for(ws)
        return cls(profile.folding, dict(profile.source_folding))


class TermFolder:
    """Text -> terms keyed by `fold` (by default the early-modern folding; the index's own is per
    source, see `Folding`), with a cache per distinct word (a corpus repeats its words: folding each
    occurrence afresh made snippets 10x slower than the BM25 look-up itself)."""

    def __init__(self, fold: Callable[[str], str] = fold_word) -> None:
        self._fold = fold
        self._cache: dict[str, str] = {}

    def fold(self, word: str) -> str:
        f = self._cache.get(word)
        if f is None:
            f = self._cache[word] = self._fold(word)
        return f

    def __call__(self, text: str) -> list[str]:
        """The folded terms of `text`, in order."""
        return [self.fold(w) for w in words(text)]

    def surface_forms(self) -> dict[str, list[str]]:
        """{folded term: the lower-cased spellings of it seen so far}, for finding matches in a text."""
        forms: dict[str, set[str]] = {}
        for word, folded in self._cache.items():
            forms.setdefault(folded, set()).add(word.lower())
        return {t: sorted(f) for t, f in sorted(forms.items())}


def iter_corpus(ws: Workspace, splits: list[str]) -> Iterator[tuple[str, dict]]:
    """(split, row) of every corpus document of `splits`, in the order the index numbers them."""
    from londinium.data.documents import iter_documents, require_split

    for split in splits:
        for row in iter_documents(require_split(ws, split)):
            yield split, row


def licenses(cfg: Config) -> dict[str, str]:
    """{source id: licence} from the sources registry the corpus was built from."""
    from londinium.corpus.sources import load_registry

    return {s.id: s.license for s in load_registry(cfg.corpus.sources or None)}


def registry_path(cfg: Config) -> Path:
    from londinium.corpus.sources import default_registry_path

    return Path(cfg.corpus.sources) if cfg.corpus.sources else default_registry_path()


def build_index(ws: Workspace, cfg: Config, force: bool = False, log: Callable[[str], None] = print,
                show_progress: bool = True) -> dict[str, Any]:
    """Build (or confirm up to date) the search index of `ws`'s corpus; returns its meta.json."""
    import json

    from londinium.data.documents import require_split

    validate_config(cfg.index)
    inputs = [*(require_split(ws, s) for s in cfg.index.splits), registry_path(cfg)]
    folding = Folding.for_index(ws, cfg.index)  # the profile's, resolved: a corpus rebuilt with another profile re-indexes
    ran = ws.run_stage("index", cfg.index, lambda: _build(ws, cfg, folding, log, show_progress), inputs=inputs,
                       fingerprint={"format": INDEX_FORMAT, "folding": [folding.default, folding.by_source]}, force=force, log=log)
    meta = json.loads(ws.index_meta.read_text(encoding="utf-8"))
    if ran:
        log(f"index: {meta['documents']:,} documents, {meta['terms']:,} terms, {meta['bytes'] / 1e6:.1f} MB "
            f"in {meta['seconds']:.1f} s -> {ws.index_dir}")
    return meta


def _build(ws: Workspace, cfg: Config, folding: Folding, log: Callable[[str], None], show_progress: bool) -> list[Path]:
    import bm25s
    from londinium.progress import on_terminal, progress

    t0 = time.time()
    # The old index is replaced only if it is one (a workspace may be a folder with an index/ of its own).
    check_target(ws.index_dir, "the index folder", folder=True, keep={},
                 ours=holds_only([*(p.name for p in (ws.index_documents, ws.index_spellings, ws.index_meta)),
                                  ws.stage_config_file("index").name], [ws.index_bm25_dir.name]))
    c = cfg.index
    license_of = licenses(cfg)
    folders: dict[str, TermFolder] = {}  # folding name -> its folder, for the foldings in use
    docs: list[dict] = []
    terms: list[list[str]] = []
    total_bytes = sum(ws.corpus_split(s).stat().st_size for s in c.splits)
    with progress(total=total_bytes, desc="index: folding", unit="B", unit_scale=True, disable=not show_progress, leave=False) as bar:
        for split, row in iter_corpus(ws, c.splits):
            docs.append({"id": row.get("id", ""), "split": split, "source": row.get("source") or "",
                         "title": row.get("title") or "", "period": row.get("period") or [0, 0],
                         "license": license_of.get(row.get("source") or "", ""), "chars": len(row["text"])})
            name = folding.of(row.get("source") or "")
            if name not in folders:
                folders[name] = TermFolder(FOLDINGS[name])
            terms.append(folders[name](row["text"]))
            bar.update(len(row["text"].encode("utf-8")))
    if not docs:
        raise ConfigError(f"index: the corpus splits {', '.join(c.splits)} hold no documents; run `londinium corpus build` first")
    log(f"index: {len(docs):,} documents from {', '.join(c.splits)}")
    retriever = bm25s.BM25(k1=c.k1, b=c.b)
    retriever.index(terms, show_progress=show_progress and on_terminal())  # bm25s draws tqdm bars

    # Built beside the old index, then swapped in: readers see the old index or the new one.
    tmp = ws.root / ".index.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    retriever.save(str(tmp / ws.index_bm25_dir.name), show_progress=False)
    write_jsonl(tmp / ws.index_documents.name, docs)
    write_json(tmp / ws.index_spellings.name, {name: f.surface_forms() for name, f in sorted(folders.items())})
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    meta = {
        "format": INDEX_FORMAT,
        "documents": len(docs),
        "terms": len(retriever.vocab_dict),
        "folding": {source: folding.of(source) for source in sorted({d["source"] for d in docs})},  # what search folds queries by
        "splits": {s: sha256_file(ws.corpus_split(s)) for s in c.splits},
        "bytes": sum(p.stat().st_size for p in files),
        "seconds": round(time.time() - t0, 3),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(tmp / ws.index_meta.name, meta)
    for p in tmp.rglob("*"):  # bm25s writes plain files: make them durable before the rename
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        else:
            fsync_dir(p)
    fsync_dir(tmp)
    old = ws.root / ".index.old"
    shutil.rmtree(old, ignore_errors=True)
    if ws.index_dir.exists():
        os.rename(ws.index_dir, old)
    os.rename(tmp, ws.index_dir)
    fsync_dir(ws.root)
    shutil.rmtree(old, ignore_errors=True)
    return sorted(p for p in ws.index_dir.rglob("*") if p.is_file())
