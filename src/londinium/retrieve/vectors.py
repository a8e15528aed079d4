"""`londinium index vectors`: the vector index, one embedding per passage of every indexed document.

    build_vectors(ws, cfg)     corpus splits -> vectors/{embeddings.npy, passages.npy, [embedder.npz], meta.json}
    VectorIndex.load(ws).search(query_vector, depth=50, keep=mask)   -> best passage of the best documents

The documents are those of the search index, in its order (`index.splits`), cut into passages by
`passages.passage_spans`; a passage is its document's number and character offsets, so a hit can be
cited and checked against the document text. With `retrieve.embedder = 'corpus'` the embedder is
learned here from the passages (`static.py`) and saved beside them. `meta.json` records the sha256
of the corpus splits embedded and the document ids in order; loading checks every file against the
hash the stage recorded in the manifest and against its own shape, so a stale, edited or damaged
index is one line naming the file and the command that rebuilds it.

Search is exact: one matrix-vector product over all passages (NumPy), the best passage per document
kept. On the default corpus (~31k passages x 256) that is ~2 ms, so an approximate index (usearch,
faiss) would buy nothing measurable here (docs/LOG.md).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from londinium.config import Config
from londinium.errors import LondiniumError
from londinium.files import sha256_file
from londinium.workspace import SPLITS, StageNotDone, Workspace

VECTORS_FORMAT = 1


class RetrieveError(LondiniumError):
    """The vector index is missing, stale or damaged, or a retrieval argument is invalid; the message says what to do."""


@dataclass
class VectorsSettings:
    """What the vector index depends on (its stage config): the embedder and the passages, not how they are searched."""

    splits: list[str]
    embedder: str
    embedder_path: str
    embedder_run: str
    embedder_url: str
    embedder_model: str
    dim: int
    passage_chars: int

    @classmethod
    def of(cls, cfg: Config) -> VectorsSettings:
        r = cfg.retrieve
        return cls(list(cfg.index.splits), r.embedder, r.embedder_path, r.embedder_run, r.embedder_url, r.embedder_model,
                   r.dim, r.passage_chars)


def vector_files(ws: Workspace, with_embedder: bool) -> list[Path]:
    return [ws.vectors_embeddings, ws.vectors_passages, *([ws.vectors_embedder] if with_embedder else []), ws.vectors_meta]


def build_vectors(ws: Workspace, cfg: Config, force: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build (or confirm up to date) the vector index of `ws`'s corpus; returns its meta.json."""
    from londinium.config import validate
    from londinium.data.documents import require_split

    validate(cfg)
    settings = VectorsSettings.of(cfg)
    inputs = [require_split(ws, s) for s in settings.splits]
    ran = ws.run_stage("vectors", settings, lambda: _build(ws, cfg, settings, log), inputs=inputs,
                       fingerprint={"format": VECTORS_FORMAT}, force=force, log=log)
    meta = json.loads(ws.vectors_meta.read_text(encoding="utf-8"))
    if ran:
        log(f"vectors: {meta['passages']:,} passages of {meta['documents']:,} documents, {meta['dim']} dimensions "
            f"({meta['embedder']}) in {meta['seconds']:.1f} s -> {ws.vectors_dir}")
    return meta


def _build(ws: Workspace, cfg: Config, settings: VectorsSettings, log: Callable[[str], None]) -> list[Path]:
    from londinium.files import replace_together, write_json
    from londinium.index.build import iter_corpus
    from londinium.progress import progress
    from londinium.retrieve.embedders import Embedder, open_embedder
    from londinium.retrieve.passages import passage_spans
    from londinium.retrieve.static import train_static

    t0 = time.time()
    ids, rows = [], []
    texts: list[str] = []
    for number, (_, row) in enumerate(iter_corpus(ws, settings.splits)):
        ids.append(row.get("id", ""))
        for start, end in passage_spans(row["text"], settings.passage_chars):
            rows.append((number, start, end))
            texts.append(row["text"][start:end])
    if not texts:
        raise RetrieveError(f"vectors: the corpus splits {', '.join(settings.splits)} hold no text; run `londinium corpus build` first")
    log(f"vectors: {len(texts):,} passages of {len(ids):,} documents")
    corpus_model = None
    if settings.embedder == "corpus":
        log(f"vectors: learning {settings.dim}-dimension word vectors from the corpus")
        corpus_model = train_static(texts, settings.dim)
        embedder = Embedder("corpus", corpus_model.dim, corpus_model.embed, {"kind": "corpus", "words": len(corpus_model.words)})
    else:
        embedder = open_embedder(ws, cfg)
    chunks = []
    step = 2048
    with progress(total=len(texts), desc="vectors: embedding", unit="passage") as bar:
        for i in range(0, len(texts), step):
            chunks.append(embedder.embed(texts[i:i + step]))
            bar.update(len(texts[i:i + step]))
    embeddings = np.concatenate(chunks).astype(np.float32)
    meta = {"format": VECTORS_FORMAT, "embedder": embedder.name, "about": embedder.about, "dim": embedder.dim,
            "documents": len(ids), "passages": len(texts), "ids": ids,
            "splits": {s: sha256_file(ws.corpus_split(s)) for s in settings.splits},
            "seconds": round(time.time() - t0, 3), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    files = vector_files(ws, corpus_model is not None)
    ws.vectors_dir.mkdir(parents=True, exist_ok=True)
    with replace_together(files) as temps:
        tmp = dict(zip(files, temps))
        with open(tmp[ws.vectors_embeddings], "wb") as f:
            np.save(f, embeddings)
        with open(tmp[ws.vectors_passages], "wb") as f:
            np.save(f, np.asarray(rows, dtype=np.int64))
        if corpus_model is not None:
            corpus_model.save(tmp[ws.vectors_embedder])
        write_json(tmp[ws.vectors_meta], meta)
    if corpus_model is None and ws.vectors_embedder.exists():
        ws.vectors_embedder.unlink()  # another embedder's leftover must not pass for this one
    return files


@dataclass
class VectorHit:
    document: int  # number in the search index's order
    passage: int
    start: int
    end: int
    score: float  # cosine similarity


class VectorIndex:
    """The loaded vector index; see the module docstring."""

    def __init__(self, embeddings: np.ndarray, passages: np.ndarray, meta: dict[str, Any]):
        self.embeddings, self.passages, self.meta = embeddings, passages, meta
        self.ids: list[str] = meta["ids"]
        self.embedder_name: str = meta["embedder"]
        # passages are in document order: each document's first passage, for the per-document maximum
        self._firsts = np.flatnonzero(np.r_[True, np.diff(passages[:, 0]) != 0])
        self._doc_of_first = passages[self._firsts, 0]

    @classmethod
    def load(cls, ws: Workspace) -> VectorIndex:
        """Load `ws`'s vector index; missing, stale (the corpus changed) or damaged is a RetrieveError naming the fix."""
        build = f"run `londinium index vectors -w {ws.root}`"
        rebuild = f"rebuild it with `londinium index vectors --force -w {ws.root}`"
        if not ws.vectors_meta.is_file():
            raise RetrieveError(f"no vector index in {ws.vectors_dir}: {build} first (or use --mode bm25)")
        entry = ws.manifest().get("vectors", {})
        with_embedder = any(rel.endswith(ws.vectors_embedder.name) for rel in entry.get("outputs", {}))
        try:
            ws.require_stage("vectors", vector_files(ws, with_embedder))
        except StageNotDone as e:
            raise RetrieveError(f"the vector index is damaged: {e}") from None
        try:
            meta = json.loads(ws.vectors_meta.read_text(encoding="utf-8"))
            embeddings = np.load(ws.vectors_embeddings, allow_pickle=False)
            passages = np.load(ws.vectors_passages, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise RetrieveError(f"the vector index in {ws.vectors_dir} does not read ({e}); {rebuild}") from None
        if not isinstance(meta, dict) or meta.get("format") != VECTORS_FORMAT:
            raise RetrieveError(f"{ws.vectors_meta}: format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                                f"this londinium reads {VECTORS_FORMAT}; {rebuild}")
        ids, splits = meta.get("ids"), meta.get("splits")
        if not (isinstance(ids, list) and all(isinstance(i, str) for i in ids) and isinstance(splits, dict)
                and all(s in SPLITS and isinstance(d, str) for s, d in splits.items()) and isinstance(meta.get("embedder"), str)):
            raise RetrieveError(f"{ws.vectors_meta}: needs 'ids' (strings), 'splits' (split: sha256) and 'embedder'; {rebuild}")
        for split, digest in splits.items():
            path = ws.corpus_split(split)
            if not path.is_file() or sha256_file(path) != digest:
                raise RetrieveError(f"the vector index in {ws.vectors_dir} was built from another {path} than the one there now: {build}")
        n = len(passages)
        if not (embeddings.ndim == 2 and embeddings.dtype == np.float32 and len(embeddings) == n and n > 0
                and np.isfinite(embeddings).all()):
            raise RetrieveError(f"{ws.vectors_embeddings}: not a finite float32 [passages, dim] array for {n} passages; {rebuild}")
        if not (passages.ndim == 2 and passages.shape[1] == 3 and passages.dtype.kind == "i" and (passages[:, 0] >= 0).all()
                and (passages[:, 0] < len(ids)).all() and (np.diff(passages[:, 0]) >= 0).all()
                and (passages[:, 1] >= 0).all() and (passages[:, 1] < passages[:, 2]).all()):
            raise RetrieveError(f"{ws.vectors_passages}: not [document, start, end] rows in document order; {rebuild}")
        return cls(embeddings, passages, meta)

    def check_against(self, documents: list[Any]) -> None:
        """Refuse a vector index whose documents (ids, order, lengths) are not the search index's."""
        if [d.id for d in documents] != self.ids:
            raise RetrieveError("the vector index and the search index hold different documents: run `londinium index build` "
                                "and `londinium index vectors` on the same corpus")
        lengths = np.array([len(d.text) for d in documents])
        if (self.passages[:, 2] > lengths[self.passages[:, 0]]).any():
            raise RetrieveError("the vector index has a passage beyond its document's end: rebuild it with `londinium index vectors --force`")

    def search(self, query: np.ndarray, depth: int, keep: np.ndarray | None = None) -> list[VectorHit]:
        """The `depth` documents whose best passage is most similar to `query` (a unit vector), best first;
        `keep` (a boolean per document) filters documents before ranking."""
        if query.shape != (self.embeddings.shape[1],):
            raise RetrieveError(f"the query embedding has shape {query.shape}, the vector index {self.embeddings.shape[1]} dimensions: "
                                f"embed with the index's embedder ({self.embedder_name})")
        scores = self.embeddings @ query
        best = np.maximum.reduceat(scores, self._firsts)  # per document that has passages
        if keep is not None:
            best = np.where(keep[self._doc_of_first], best, -np.inf)
        depth = min(depth, len(best))
        top = np.argpartition(-best, depth - 1)[:depth]
        top = top[np.argsort(-best[top], kind="stable")]
        hits = []
        for slot in top:
            if not np.isfinite(best[slot]):
                continue
            first = self._firsts[slot]
            last = self._firsts[slot + 1] if slot + 1 < len(self._firsts) else len(scores)
            p = first + int(np.argmax(scores[first:last]))
            hits.append(VectorHit(int(self._doc_of_first[slot]), p, int(self.passages[p, 1]), int(self.passages[p, 2]), float(best[slot])))
        return hits

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in self.meta.items() if k != "ids"}
