"""`londinium eval --compare RUN_A RUN_B`: two report cards side by side, with the difference.

Only figures measured on the same instruments are compared: every evaluation records in
results.json what each block was measured on (the corpus split and how many of its documents, the
cloze set's sha256, the probe set's, the task set's items, the prompts and word lists of generation), and the comparison
refuses, naming the block, when a block both runs have was measured on different ones. On the same
cloze items the difference is paired, item by item, with its standard error. Bits per byte compare
across tokenizers; perplexity only within one (a note says so when the two runs used different
tokenizers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from londinium.errors import LondiniumError
from londinium.eval.report import table
from londinium.eval.stats import paired_difference
from londinium.files import write_json, write_text
from londinium.workspace import Workspace

# Which run is better on a metric: lower on these, closer to the held-out text on CLOSER_IS_BETTER
# (a sample is not better for being more diverse or more archaic than the corpus itself), higher
# on the rest.
LOWER_IS_BETTER = ("perplexity", "bits/byte", "loss", "mean rank", "rep-4", "anachronisms")
CLOSER_IS_BETTER = {"distinct-2": "distinct_2", "period words": "period_share"}


def read_results(ws: Workspace, run: str) -> dict[str, Any]:
    path = ws.eval_results(run)
    if not path.is_file():
        raise LondiniumError(f"run '{run}' has no evaluation ({path} is missing): run `londinium eval --run {run}` first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise LondiniumError(f"{path} is not valid JSON: re-run `londinium eval --run {run} --force`") from None


def flatten(results: dict[str, Any]) -> dict[str, float]:
    """The headline numbers of a results dict as {label: value}, in report order."""
    out: dict[str, float] = {}
    for split, block in results.get("perplexity", {}).items():
        if split == "texts":
            for name, t in block.items():
                out[f"`{Path(name).name}` bits/byte"] = t["bits_per_byte"]
            continue
        out[f"{split} perplexity"] = block["total"]["perplexity"]
        out[f"{split} bits/byte"] = block["total"]["bits_per_byte"]
        for source, t in block["by_source"].items():
            out[f"{split} `{source}` bits/byte"] = t["bits_per_byte"]
    # the multiple-choice blocks: accuracy, accuracy/byte, a third figure, and accuracy per group
    for block, groups, key, label in (("cloze", "by_source", "margin", "margin (nats)"), ("probes", "by_category", "mean_rank", "mean rank")):
        s = results.get(block, {}).get("summary", {})
        if s.get("overall", {}).get("n"):
            out[f"{block} accuracy"] = s["overall"]["accuracy"]
            out[f"{block} accuracy/byte"] = s["overall"]["accuracy_norm"]
            out[f"{block} {label}"] = s["overall"][key]
            for name, b in s[groups].items():
                out[f"{block} `{name}` accuracy"] = b["accuracy"]
    for name, t in results.get("tasks", {}).get("tasks", {}).items():
        for split, block in t["splits"].items():
            if block["summary"]["n"]:
                out[f"task {name} {split} {t['metric']}"] = block["summary"]["score"]
                out[f"task {name} {split} format"] = block["summary"]["format"]
    if gen := results.get("generation"):
        for key, m in gen["metrics"].items():
            if key == "reference":
                continue
            for label, k in (("distinct-2", "distinct_2"), ("rep-4", "rep_4"), ("period words", "period_share"),
                             ("anachronisms", "anachronisms"), ("BLEU", "bleu"), ("ROUGE-L", "rougeL")):
                if k in m:  # no word list, no column
                    out[f"T={key} {label}"] = m[k]
    return out


def targets(results: dict[str, Any]) -> dict[str, float]:
    """{label: the held-out reference's value} for the metrics where closer to it is better."""
    gen = results.get("generation")
    if not gen or "reference" not in gen["metrics"]:
        return {}
    ref = gen["metrics"]["reference"]
    return {f"T={key} {label}": ref[k] for key in gen["metrics"] if key != "reference" for label, k in CLOSER_IS_BETTER.items() if k in ref}


def _better(label: str, va: float, vb: float, target: float | None, run_a: str, run_b: str) -> str:
    if target is not None:
        da, db = abs(va - target), abs(vb - target)
        return "" if da == db else (run_a if da < db else run_b)
    if va == vb:
        return ""
    lower = any(label.endswith(s) for s in LOWER_IS_BETTER)
    return run_b if (vb < va) == lower else run_a


def _fmt(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def render_comparison(run_a: str, a: dict[str, Any], run_b: str, b: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(Markdown, JSON-able rows) of the two runs' headline numbers and B - A."""
    fa, fb = flatten(a), flatten(b)
    # the held-out text is the same when the corpus is; when it is not, neither run's is the target
    ta, tb = targets(a), targets(b)
    labels = list(fa) + [k for k in fb if k not in fa]
    rows, data = [], []
    for label in labels:
        va, vb = fa.get(label), fb.get(label)
        diff = vb - va if va is not None and vb is not None else None
        target = ta.get(label) if ta.get(label) == tb.get(label) else None
        better = _better(label, va, vb, target, run_a, run_b) if diff is not None else ""
        if label in ta and target is None:
            better = ""  # different held-out text: no common target to be close to
        rows.append([label, _fmt(va), _fmt(vb), "–" if diff is None else f"{diff:+.4g}", better])
        data.append({"metric": label, run_a: va, run_b: vb, "difference": diff, "better": better or None})
    lines = [f"# Evaluation: `{run_a}` vs `{run_b}`", ""]
    for run, r in ((run_a, a), (run_b, b)):
        ck, m = r.get("checkpoint", {}), r.get("model", {})
        lines.append(f"- `{run}`: checkpoint `{ck.get('name')}`, {m.get('params', 0) / 1e6:.2f} M parameters, context {m.get('context')}")
    if a.get("tokenizer_sha256") != b.get("tokenizer_sha256"):
        lines.append("- The runs use different tokenizers: compare bits per byte, not perplexity.")
    lines += ["", table(["metric", run_a, run_b, f"{run_b} − {run_a}", "better"], rows), "", *paired(run_a, a, run_b, b),
              "Better: lower perplexity, bits/byte, mean rank, rep-4 and anachronisms; distinct-2 and period "
              "words closer to the held-out text's own value; higher for the rest.", ""]
    return "\n".join(lines), {"runs": [run_a, run_b], "rows": data}


def check_instruments(run_a: str, a: dict[str, Any], run_b: str, b: dict[str, Any]) -> None:
    """Refuse (LondiniumError) when a block both runs have was measured on different instruments."""
    for run, r in ((run_a, a), (run_b, b)):
        if "instruments" not in r:
            raise LondiniumError(f"run '{run}' was evaluated before evaluations recorded their instruments, so it cannot be "
                                 f"compared safely: re-run `londinium eval --run {run} --force`")
    ia, ib = a["instruments"], b["instruments"]
    differ = [name for name in ia if name in ib and ia[name] != ib[name]]
    if differ:
        raise LondiniumError(f"eval --compare: '{run_a}' and '{run_b}' were measured on different instruments ({', '.join(differ)}: "
                             "another corpus build, cloze set, probe set, task set, [eval] sample size or prompts); evaluate both on the same "
                             f"ones (same corpus and [eval] settings: `londinium eval --run {run_a} --force` and the same for '{run_b}')")


def paired(run_a: str, a: dict[str, Any], run_b: str, b: dict[str, Any]) -> list[str]:
    """Markdown lines: B - A on the same cloze items and on the same probes, paired item by item,
    with standard errors (clustered by document for the cloze set)."""
    lines = []
    for block, name in (("cloze", "cloze items"), ("probes", "probes")):
        if block not in a or block not in b:
            continue
        ra, rb = ({r["id"]: r for r in x[block]["items"]} for x in (a, b))
        clusters = {i: r.get("doc", i) for i, r in ra.items()}
        correct = [{i: float(r["correct"]) for i, r in x.items()} for x in (ra, rb)]
        margin = [{i: r["logprobs"][0] - max(r["logprobs"][1:]) for i, r in x.items()} for x in (ra, rb)]
        acc, acc_se, n = paired_difference(*correct, clusters)
        gap, gap_se, _ = paired_difference(*margin, clusters)
        if n:
            lines.append(f"- On the same {n} {name}, paired: `{run_b}` − `{run_a}` accuracy {100 * acc:+.1f} ± {100 * acc_se:.1f} "
                         f"points, margin {gap:+.3f} ± {gap_se:.3f} nats.")
    if lines:
        lines = ["Paired item by item (± one standard error; clustered by document for the cloze set): a difference of more "
                 "than two standard errors is unlikely to be chance.", "", *lines, ""]
    return lines


def compare_runs(ws: Workspace, run_a: str, run_b: str) -> tuple[str, Path]:
    """Write eval/compare-A-vs-B.md and .json; returns (Markdown, path of the .md). Refuses runs
    measured on different instruments (`check_instruments`)."""
    a, b = read_results(ws, run_a), read_results(ws, run_b)
    check_instruments(run_a, a, run_b, b)
    md, data = render_comparison(run_a, a, run_b, b)
    path = ws.eval_compare(run_a, run_b)
    write_text(path, md)
    write_json(path.with_suffix(".json"), data)
    return md, path
