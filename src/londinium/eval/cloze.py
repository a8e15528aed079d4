"""The cloze set as an instrument: its items scored by log-likelihood, with standard errors.

Each item (`londinium.tasks.cloze`) becomes a probe -- prompt, answer, distractors -- and is
scored by `probes.score_probes`, the one scorer of multiple-choice items. Per item the results keep the choices' log-likelihoods; from them:

- accuracy (highest sum) and accuracy/byte (highest per UTF-8 byte), as for the probes;
- margin: log P(answer) - max log P(distractor), in nats. It is continuous, so it moves when a model
  gets closer without winning, and it ranks models that accuracy cannot tell apart;
- standard errors of both, clustered by document (`stats.mean_se`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from londinium.eval.probes import Probe, score_probes
from londinium.eval.stats import mean_se
from londinium.tasks.items import TaskItem


def as_probes(items: Sequence[TaskItem]) -> list[Probe]:
    return [Probe(i.id, i.prompt, i.answer, i.distractors, category=i.source or "unknown") for i in items]


def score_cloze(model: torch.nn.Module, encode: Callable[[str], list[int]], items: Sequence[TaskItem], bos_id: int,
                context: int, batch_size: int = 16) -> list[dict[str, Any]]:
    """One row per item: id, doc, source, the choices' log-likelihoods (answer first), correct,
    correct_norm, margin."""
    rows = []
    for i, r in zip(items, score_probes(model, encode, as_probes(items), bos_id, context, batch_size)):
        lp = [round(x, 4) for x in r.logprobs]
        rows.append({"id": i.id, "doc": i.doc_id, "source": r.category, "logprobs": lp, "correct": r.correct,
                     "correct_norm": r.correct_norm, "margin": round(lp[0] - max(lp[1:]), 4)})
    return rows


def block(rows: Sequence[dict[str, Any]], chance: float) -> dict[str, Any]:
    """Accuracy, accuracy/byte and margin with their clustered standard errors."""
    if not rows:
        return {"n": 0}
    docs = [r["doc"] for r in rows]
    acc, acc_se = mean_se([float(r["correct"]) for r in rows], docs)
    norm, norm_se = mean_se([float(r["correct_norm"]) for r in rows], docs)
    margin, margin_se = mean_se([r["margin"] for r in rows], docs)
    return {"n": len(rows), "documents": len(set(docs)), "accuracy": acc, "accuracy_se": acc_se,
            "accuracy_norm": norm, "accuracy_norm_se": norm_se, "margin": margin, "margin_se": margin_se, "chance": chance}


def summarize(rows: Sequence[dict[str, Any]], chance: float) -> dict[str, Any]:
    """Overall and by source."""
    sources = sorted({r["source"] for r in rows})
    return {"overall": block(rows, chance), "by_source": {s: block([r for r in rows if r["source"] == s], chance) for s in sources}}
