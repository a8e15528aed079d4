"""The request classifier a route can order its backends by: TF-IDF word and bigram features and a
logistic regression (scikit-learn's, the field's standard), trained by `londinium gateway train-router`.

    report = train_router(examples, out="router.json")     # examples: [{"text", "label", "group"?}, ...]
    label, p = Classifier.load("router.json").predict("Where is the nearest pharmacy?")

The file is JSON (vocabulary, idf, coefficients, the held-out report), never a pickle: a router file
may come from anyone, and loading it runs no code. Prediction rebuilds the vectorizer from it.
Held-out accuracy is measured on examples the model did not see, split by `group` when examples
have one (two snippets of one document never straddle the split), and reported against the
majority baseline (always answering the most common label).

For the default corpus, `default_examples` labels snippets of the workspace's corpus `domain` and
snippets of Python's own docstrings (read from the standard library's source with `ast`, offline,
no module imported) `general`; the corpus's own split keeps train and held-out documents apart.
"""

from __future__ import annotations

import ast
import json
import random
import sysconfig
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from londinium.errors import LondiniumError
from londinium.files import write_json

FORMAT = "londinium-router/1"
VECTORIZER = {"ngram_range": (1, 2), "sublinear_tf": True, "lowercase": True, "max_features": 20000}


def _sklearn() -> Any:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise LondiniumError("the request classifier needs scikit-learn: pip install 'londinium[router]'") from None


class Classifier:
    def __init__(self, data: dict[str, Any], source: str = "router.json"):
        _sklearn()
        import numpy as np
        from sklearn.feature_extraction.text import TfidfVectorizer

        if data.get("format") != FORMAT:
            raise LondiniumError(f"{source} is not a router file from `londinium gateway train-router` (format {data.get('format')!r})")
        self.labels: list[str] = data["labels"]
        self.report: dict[str, Any] = data.get("report", {})
        params = {**VECTORIZER, "ngram_range": tuple(data["vectorizer"]["ngram_range"])}
        params.pop("max_features")
        self.vectorizer = TfidfVectorizer(vocabulary=data["vocabulary"], **params)
        self.vectorizer.idf_ = np.asarray(data["idf"], dtype=np.float64)
        self.coef = np.asarray(data["coef"], dtype=np.float64)
        self.intercept = np.asarray(data["intercept"], dtype=np.float64)

    @classmethod
    def load(cls, path: str | Path) -> "Classifier":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(data, str(path))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise LondiniumError(f"router file {path} cannot be read ({type(e).__name__}: {e}); train it again with "
                                 "`londinium gateway train-router`") from None

    def predict(self, text: str) -> tuple[str, float]:
        """The most likely label of `text` and its probability."""
        import numpy as np

        scores = (self.vectorizer.transform([text]) @ self.coef.T).ravel() + self.intercept
        if len(self.labels) == 2:  # scikit-learn's binary model scores the second label only
            p = 1.0 / (1.0 + np.exp(-scores[0]))
            return (self.labels[1], float(p)) if p >= 0.5 else (self.labels[0], float(1 - p))
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        best = int(probs.argmax())
        return self.labels[best], float(probs[best])


def _split(examples: list[dict[str, Any]], held_out: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Examples marked `split` keep it (train vs anything else); the rest are split by group."""
    marked = [e for e in examples if e.get("split")]
    rest = [e for e in examples if not e.get("split")]
    train = [e for e in marked if e["split"] == "train"]
    test = [e for e in marked if e["split"] != "train"]
    groups = sorted({str(e.get("group", i)) for i, e in enumerate(rest)})
    random.Random(seed).shuffle(groups)
    held = set(groups[:max(1, round(len(groups) * held_out))]) if rest else set()
    for i, e in enumerate(rest):
        (test if str(e.get("group", i)) in held else train).append(e)
    return train, test


def train_router(examples: list[dict[str, Any]], out: str | Path, held_out: float = 0.2, seed: int = 0) -> dict[str, Any]:
    """Fit the classifier on labelled examples, measure it on the held-out part, write `out`; the report."""
    _sklearn()
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, classification_report

    for i, e in enumerate(examples):
        if not isinstance(e.get("text"), str) or not isinstance(e.get("label"), str) or not e["label"]:
            raise LondiniumError(f"example {i + 1}: needs a string 'text' and a non-empty string 'label'")
    train, test = _split(examples, held_out, seed)
    labels = sorted({e["label"] for e in train})
    if len(labels) < 2:
        raise LondiniumError(f"the examples have {len(labels)} label(s) in their training part; a classifier needs two or more")
    if not test:
        raise LondiniumError("no example is held out: give more examples (or groups) to measure the classifier on")
    vec = TfidfVectorizer(**VECTORIZER)
    x = vec.fit_transform([e["text"] for e in train])
    model = LogisticRegression(max_iter=2000, C=4.0).fit(x, [e["label"] for e in train])
    y_true = [e["label"] for e in test]
    y_pred = list(model.predict(vec.transform([e["text"] for e in test])))
    majority, count = Counter(e["label"] for e in train).most_common(1)[0]
    report = {
        "train_examples": len(train), "held_out_examples": len(test), "labels": list(model.classes_),
        "accuracy": accuracy_score(y_true, y_pred),
        "majority_label": majority, "majority_baseline": sum(y == majority for y in y_true) / len(y_true),
        "per_label": {k: {m: round(v, 4) for m, v in d.items()} for k, d in
                      classification_report(y_true, y_pred, output_dict=True, zero_division=0).items() if k in labels},
        "train_label_counts": dict(Counter(e["label"] for e in train)),
    }
    write_json(out, {"format": FORMAT, "labels": [str(c) for c in model.classes_], "vectorizer": {"ngram_range": list(VECTORIZER["ngram_range"])},
                     "vocabulary": {t: int(i) for t, i in vec.vocabulary_.items()}, "idf": vec.idf_.tolist(),
                     "coef": model.coef_.tolist(), "intercept": model.intercept_.tolist(), "report": report})
    return report


# ---- the default corpus: in-domain vs general --------------------------------------------------


def snippets(text: str, rng: random.Random, most: int, lo: int = 40, hi: int = 400) -> Iterable[str]:
    """Up to `most` request-sized windows of `text` (lo..hi characters, cut at spaces)."""
    words = text.split()
    for _ in range(most):
        if len(words) < 4:
            return
        n = rng.randint(max(3, lo // 6), max(4, hi // 6))
        start = rng.randint(0, max(0, len(words) - n))
        piece = " ".join(words[start:start + n])
        if len(piece) >= lo:
            yield piece[:hi]


def python_docstrings(limit: int) -> list[tuple[str, str]]:
    """(file, docstring) pairs from the standard library's source, parsed, never imported."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out: list[tuple[str, str]] = []
    for path in sorted(root.rglob("*.py")):
        if "test" in path.parts or "site-packages" in path.parts or "idlelib" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 120:
                    out.append((str(path.relative_to(root)), doc))
        if len(out) >= limit:
            break
    return out


def default_examples(ws: Any, per_label: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """`domain` snippets of the workspace corpus (its train split for training, val and test held
    out) and `general` snippets of Python's docstrings (split by source file), `per_label` each."""
    from londinium.files import read_jsonl

    rng = random.Random(seed)
    domain: list[dict[str, Any]] = []
    for split in ("train", "val", "test"):
        path = ws.corpus_split(split)
        if not path.is_file():
            raise LondiniumError(f"no corpus split at {path}: run `londinium corpus build` (or quickstart) first, "
                                 "or give labelled examples with --examples FILE.jsonl")
        docs = list(read_jsonl(path))
        rng.shuffle(docs)
        want, tag = (per_label * 8 // 10, "train") if split == "train" else (per_label // 10, "held-out")
        got = 0
        for d in docs:
            for s in snippets(d["text"], rng, 2):
                domain.append({"text": s, "label": "domain", "split": tag})
                got += 1
            if got >= want:
                break
    general = [{"text": s, "label": "general", "group": f}
               for f, doc in python_docstrings(per_label * 2) for s in snippets(doc, rng, 1)]
    rng.shuffle(general)
    return domain + general[:per_label]
