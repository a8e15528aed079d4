"""A static embedding learned from the corpus itself: word vectors from its co-occurrence counts.

    model = train_static(texts, dim=256)        # a few seconds to a minute on 2 cores
    model.embed(["Vpon this blasted heath"])    # [1, 256] float32, unit rows

Words are the search index's terms (spelling-folded, so "vpon" and "upon" are one word); their
vectors are the truncated SVD of the positive pointwise mutual information of words within a
window (Levy, Goldberg and Dagan 2015: "Improving distributional similarity with lessons learned
from word embeddings": context-distribution smoothing 0.75, eigenvalue weighting 0.5). A text's
embedding is the smooth-inverse-frequency weighted mean of its words' vectors, less the corpus's
common direction (Arora, Liang and Ma 2017, SIF). Generic embedders never saw "haue", "vnto" or
"hath"; these vectors are learned from nothing else, cost no download, and embed a query in
microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

WINDOW = 5  # words either side that count as context
SIF_A = 1e-3  # SIF's weight a / (a + p(word)): frequent words count less
MIN_COUNT = 3
MAX_VOCAB = 60_000


@dataclass
class StaticEmbedding:
    words: list[str]  # folded terms, in row order
    vectors: np.ndarray  # float32 [words, dim]
    weights: np.ndarray  # float32 [words]: SIF weights
    common: np.ndarray  # float32 [dim]: the direction removed from every text embedding (unit, or zeros)

    def __post_init__(self) -> None:
        from londinium.index.build import TermFolder

        self.row = {w: i for i, w in enumerate(self.words)}
        self._fold = TermFolder()

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def term_ids(self, text: str) -> list[int]:
        row = self.row
        return [row[t] for t in self._fold(text) if t in row]

    def bag(self, texts: Iterable[str]) -> object:
        """A sparse [texts, words] matrix of SIF weights (each occurrence adds its word's weight)."""
        from scipy.sparse import csr_matrix

        indptr, cols = [0], []
        for text in texts:
            cols.extend(self.term_ids(text))
            indptr.append(len(cols))
        cols_a = np.asarray(cols, dtype=np.int64)
        return csr_matrix((self.weights[cols_a], cols_a, np.asarray(indptr)), shape=(len(indptr) - 1, len(self.words)))

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length float32 rows, one per text; a text with no known word gets a row of zeros."""
        out = np.asarray(self.bag(texts) @ self.vectors, dtype=np.float32)
        out -= np.outer(out @ self.common, self.common)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)

    def save(self, path: Path) -> None:
        """An .npz of plain arrays (no pickle), written atomically."""
        import io

        from londinium.files import write_bytes

        buf = io.BytesIO()
        np.savez(buf, words=np.array(self.words, dtype=str), vectors=self.vectors, weights=self.weights, common=self.common)
        write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> StaticEmbedding:
        with np.load(path, allow_pickle=False) as f:
            words, vectors, weights, common = f["words"], f["vectors"], f["weights"], f["common"]
        if not (words.ndim == 1 and vectors.ndim == 2 and len(vectors) == len(words) == len(weights)
                and common.shape == (vectors.shape[1],) and np.isfinite(vectors).all() and np.isfinite(weights).all()):
            raise ValueError("its arrays do not fit together (words, vectors, weights, common)")
        return cls(words.tolist(), vectors.astype(np.float32), weights.astype(np.float32), common.astype(np.float32))


def train_static(texts: list[str], dim: int = 256, seed: int = 0) -> StaticEmbedding:
    """Learn word vectors from `texts` (PPMI + truncated SVD) and the SIF weights and common direction."""
    from collections import Counter

    from scipy.sparse import coo_matrix, csr_matrix

    from londinium.index.build import TermFolder

    fold = TermFolder()
    folded = [fold(t) for t in texts]
    counts = Counter(w for doc in folded for w in doc)
    words = [w for w, c in counts.most_common(MAX_VOCAB) if c >= MIN_COUNT]
    if len(words) < 2:
        raise ValueError(f"the corpus has {len(words)} words seen {MIN_COUNT} times or more: too few to learn word vectors")
    row = {w: i for i, w in enumerate(words)}
    vocab = len(words)
    rows, cols, vals = [], [], []
    for doc in folded:
        ids = np.array([row.get(w, -1) for w in doc], dtype=np.int64)
        for d in range(1, WINDOW + 1):  # each pair at distance d, both ways, weighted 1/d (word2vec's dynamic window)
            a, b = ids[:-d], ids[d:]
            keep = (a >= 0) & (b >= 0)
            rows.extend((a[keep], b[keep]))
            cols.extend((b[keep], a[keep]))
            vals.extend((np.full(int(keep.sum()), 1.0 / d, np.float32),) * 2)
    cooc = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(vocab, vocab)).tocsr()
    cooc.sum_duplicates()
    total = cooc.sum()
    word_p = np.asarray(cooc.sum(axis=1)).ravel() / total
    context = np.asarray(cooc.sum(axis=0)).ravel() ** 0.75
    context_p = context / context.sum()
    coo = cooc.tocoo()
    pmi = np.log(coo.data / total / (word_p[coo.row] * context_p[coo.col]))
    keep = pmi > 0
    ppmi = csr_matrix((pmi[keep].astype(np.float32), (coo.row[keep], coo.col[keep])), shape=(vocab, vocab))
    k = min(dim, vocab - 1)
    u, s = randomized_svd(ppmi, k, np.random.default_rng(seed))
    vectors = (u * np.sqrt(s)).astype(np.float32)
    if k < dim:
        vectors = np.pad(vectors, ((0, 0), (0, dim - k)))
    freq = np.array([counts[w] for w in words], dtype=np.float64)
    weights = (SIF_A / (SIF_A + freq / sum(counts.values()))).astype(np.float32)
    model = StaticEmbedding(words, vectors, weights, np.zeros(dim, np.float32))
    # SIF: remove the first principal direction of the texts' embeddings (what every text shares)
    sample = np.asarray(model.bag(texts[:20_000]) @ vectors, dtype=np.float32)
    if len(sample) > 1 and np.abs(sample).sum() > 0:
        _, _, vt = np.linalg.svd(sample, full_matrices=False)
        model.common = vt[0].astype(np.float32)
    return model


def randomized_svd(a: object, k: int, rng: np.random.Generator, oversample: int = 20, power: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The top-k left singular vectors and values of sparse `a` (Halko, Martinsson and Tropp 2011,
    algorithm 4.4: a random range refined by power iterations). ARPACK (scipy's svds) took 160 s for
    k = 256 on the default corpus's 22,514 words; this takes seconds. The range is orthonormalised by
    Cholesky QR (two small matrix products) rather than Householder QR, which cost ~9 s a call on a
    loaded 2-core machine; in float64 it is accurate enough for a basis that the next step refines."""

    def orthonormal(y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        gram = y.T @ y
        chol = np.linalg.cholesky(gram + 1e-10 * np.trace(gram) / len(gram) * np.eye(len(gram)))
        return np.linalg.solve(chol, y.T).T  # y @ inv(chol.T)

    q = orthonormal(a @ rng.standard_normal((a.shape[1], k + oversample)))
    for _ in range(power):
        q = orthonormal(a @ orthonormal(a.T @ q))
    b = np.asarray((a.T @ q).T)  # [k + oversample, columns]: a ~ q @ b
    values, vectors = np.linalg.eigh(b @ b.T)  # b = u s v^T: b b^T = u s^2 u^T, ascending
    top = np.argsort(values)[::-1][:k]
    return q @ vectors[:, top], np.sqrt(np.clip(values[top], 0, None))
