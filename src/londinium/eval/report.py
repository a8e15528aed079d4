"""The report card: `eval/<run>/report.md` (tables, samples, plots) from the results dictionary.

`render_markdown` is a pure function of the results (so it is tested without a model); the plots
are written next to it by `write_plots`. results.json holds everything the Markdown shows and more.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any, Sequence

from londinium.files import write_bytes

PPL_PLOT = "perplexity_by_source.png"
LOSS_PLOT = "loss.png"


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; cells are escaped so a `|` in text does not break the row."""

    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _ppl_rows(name: str, block: dict[str, Any]) -> list[list[Any]]:
    t = block
    return [[name, t["docs"], f"{t['tokens']:,}", f"{t['bytes']:,}", _f(t["loss"]), _f(t["perplexity"], 2), _f(t["bits_per_byte"])]]


PPL_HEADER = ["", "docs", "tokens", "bytes", "loss (nats/token)", "perplexity", "bits/byte"]


def _perplexity_section(ppl: dict[str, Any]) -> list[str]:
    out = ["## Perplexity and bits per byte", "",
           "Each document is scored after `<|endoftext|>`, with a sliding window over long ones; perplexity is "
           "exp(total NLL / tokens), bits per byte is total NLL / ln 2 / UTF-8 bytes and does not depend on the "
           "tokenizer.", ""]
    for split, block in ppl.items():
        if split == "texts":
            continue
        sample = "" if block["docs_evaluated"] == block["docs_total"] else f" (a sample: round-robin by source, eval.max_docs = {block['docs_evaluated']})"
        out += [f"### Split `{split}`: {block['docs_evaluated']} of {block['docs_total']} documents{sample}", ""]
        rows = _ppl_rows("**all**", block["total"])
        rows += [r for name, t in block["by_source"].items() for r in _ppl_rows(f"source `{name}`", t)]
        if set(block["by_period"]) != {"unknown"}:  # a corpus whose sources state no period gets no period rows
            rows += [r for name, t in block["by_period"].items() for r in _ppl_rows(f"period {name}", t)]
        out += [table(PPL_HEADER, rows), ""]
    if ppl.get("texts"):
        out += ["### Text files", ""]
        rows = [r for name, t in ppl["texts"].items() for r in _ppl_rows(f"`{name}`", t)]
        out += [table(PPL_HEADER, rows), ""]
    return out


def _pm(x: Any, se: Any, scale: float = 100, digits: int = 1, unit: str = "%") -> str:
    """"41.3% ± 1.6" (a value and its standard error)."""
    if x is None:
        return "–"
    value = f"{scale * x:.{digits}f}{unit}"
    return value if se is None or not math.isfinite(se) else f"{value} ± {scale * se:.{digits}f}"


def _cloze_section(c: dict[str, Any], max_shown: int = 3) -> list[str]:
    s = c["summary"]
    if not s["overall"]["n"]:
        return ["## Cloze", "", f"Not measured: {c['note']}.", ""]
    out = ["## Cloze", "",
           f"{s['overall']['n']} items cut from {s['overall']['documents']} held-out `{c['split']}` documents (`{c['file']}`): "
           f"each shows {c['context_words']} words of a document and asks which of {c['choices']} words comes next; the "
           "distractors are words of the same corpus with the answer's case, ending and length, and a train-split frequency "
           "near its own. Each choice is scored by its log-likelihood after the passage. *accuracy* takes the highest sum, "
           "*accuracy/byte* the highest per byte; *margin* is log P(answer) − max log P(distractor) in nats (continuous: it "
           "moves before accuracy does). ± is one standard error, clustered by document; *chance* is 1 / choices and *by "
           f"frequency* what always choosing the most frequent word scores ({_pct(c['unigram_accuracy'])}).", ""]
    header = ["", "items", "accuracy", "accuracy/byte", "margin (nats)", "chance"]

    def row(name: str, b: dict[str, Any]) -> list[Any]:
        return [name, b["n"], _pm(b["accuracy"], b["accuracy_se"]), _pm(b["accuracy_norm"], b["accuracy_norm_se"]),
                _pm(b["margin"], b["margin_se"], 1, 3, ""), _pct(b["chance"])]

    rows = [row("**all**", s["overall"])] + [row(f"source `{k}`", b) for k, b in s["by_source"].items()]
    out += [table(header, rows), ""]
    scored = {r["id"]: r for r in c["items"]}
    examples = [x for x in c.get("examples", []) if x["id"] in scored][:max_shown]
    if examples:
        out += ["Examples (the end of the passage, the choices with the answer first, the model's choice):", ""]
        for x in examples:
            lp = scored[x["id"]]["logprobs"]
            choices = [x["answer"], *x["distractors"]]
            best = choices[max(range(len(lp)), key=lambda i: lp[i])]
            out.append(f"- …{one_line(x['prompt'][-100:])} → " + " / ".join(f"`{ch.strip()}`" for ch in choices)
                       + f": `{best.strip()}`")
        out.append("")
    return out


def _tasks_section(t: dict[str, Any]) -> list[str]:
    how = f"{t['shots']}-shot: {t['shots']} solved train items before each question" if t["shots"] else "zero-shot"
    out = ["## Tasks", "",
           f"Held-out items of the task set (`londinium tasks build`, docs/tasks.md), asked through the chat template ({how}) "
           f"and answered greedily, at most {t['max_tokens']} tokens. *score* is accuracy (choice), exact match or chrF (0-100) as "
           "the task's metric says; *baseline* is the train split's most frequent answer (majority) or the input copied (copy), "
           "on the same items; *format* is the share of answers that ended with `<|end|>` in time with no role token in them. "
           "± is one standard error, clustered by document.", ""]
    rows = []
    for name, b in t["tasks"].items():
        for split, block in b["splits"].items():
            s = block["summary"]
            extra = f"; word accuracy {_pm(s['word_accuracy'], s['word_accuracy_se'])}" if "word_accuracy" in s else ""
            rows.append([f"`{name}`", split, b["metric"], s["n"], _pm(s["score"], s["score_se"]) + extra,
                         f"{_pm(s['baseline'], s['baseline_se'])} ({b['baseline']})", _pct(s["format"]), f"{s['shots']:.1f}"])
    out += [table(["task", "split", "metric", "items", "score", "baseline", "format", "shots"], rows), ""]
    return out


def _probe_section(probes: dict[str, Any]) -> list[str]:
    s = probes["summary"]
    out = [f"## {probes.get('title') or 'Probes'}", "",
           f"Probe set **{probes['name']}** (`{probes['file']}`), {s['overall']['n']} hand-written probes. Each choice is scored by "
           "its log-likelihood after the prompt; *accuracy* takes the highest sum, *accuracy/byte* the highest "
           "per byte; *mean rank* is the true answer's rank (1 is best); *chance* is 1 / choices. With few probes the "
           "standard error is large: rank models on the cloze set and bits per byte.", ""]
    header = ["", "probes", "accuracy", "accuracy/byte", "mean rank", "chance"]

    def row(name: str, b: dict[str, Any]) -> list[Any]:
        if not b.get("n"):
            return [name, 0, "–", "–", "–", "–"]
        return [name, b["n"], _pm(b["accuracy"], b.get("accuracy_se")), _pct(b["accuracy_norm"]), _f(b["mean_rank"], 2), _pct(b["chance"])]

    rows = [row("**all**", s["overall"])]
    rows += [row(f"category `{c}`", b) for c, b in s["by_category"].items()]
    if "clean" in s:
        rows += [row("not contaminated", s["clean"]), row("contaminated (flagged)", s["contaminated"])]
    out += [table(header, rows), ""]
    wrong = [p for p in probes["items"] if not p["correct"]]
    if wrong:
        out += ["<details><summary>Probes the model got wrong, with its choice</summary>", ""]
        rows = []
        for p in wrong:
            best = max(range(len(p["logprobs"])), key=lambda i: p["logprobs"][i])
            rows.append([p["id"], f"`{p['choices'][0].strip()}`", f"`{p['choices'][best].strip()}`", p["rank"]])
        out += [table(["probe", "answer", "model's choice", "rank"], rows), "", "</details>", ""]
    return out


def _contamination_section(c: dict[str, Any]) -> list[str]:
    out = ["## Contamination", "",
           f"Share of each item's word {c['ngram']}-grams found in the training split; flagged at "
           f"{_pct(c['threshold'])} or more. A score on a flagged item measures recall of training text.", ""]
    rows = [[kind, b["items"], b["flagged"], _pct(b["mean_share"])] for kind, b in c["summary"].items()]
    out += [table(["items", "count", "flagged", "mean share found"], rows), ""]
    flagged_refs = [i for i in c["items"] if i["kind"] == "reference" and i["flagged"]]
    if flagged_refs:
        out += ["**Warning:** held-out references found in the training split (near-duplicates across splits): "
                + ", ".join(f"`{i['id']}` ({_pct(i['share'])})" for i in flagged_refs), ""]
    return out


GEN_COLUMNS = [("words/sample", "mean_words"), ("distinct-1", "distinct_1"), ("distinct-2", "distinct_2"), ("rep-4", "rep_4"),
               ("period words", "period_share"), ("anachronisms", "anachronisms"), ("BLEU", "bleu"), ("ROUGE-1", "rouge1"),
               ("ROUGE-2", "rouge2"), ("ROUGE-L", "rougeL")]


def _gen_cell(m: dict[str, Any], key: str) -> str:
    if key == "mean_words":
        return _f(m[key], 1)
    if key == "period_share":
        return _pct(m[key])
    if key == "anachronisms":
        found = ", ".join(f"{w} x{n}" for w, n in m["anachronism_words"].items())
        return f"{m[key]}" + (f" ({found})" if found else "")
    return _f(m.get(key), 2 if key == "bleu" else 3)


def generation_table(metrics: dict[str, Any]) -> str:
    """The generation metrics by temperature and for the reference; a column no row has (period words
    or anachronisms when the profile has no word list) is left out."""
    columns = [(label, key) for label, key in GEN_COLUMNS if any(key in m for m in metrics.values())]
    rows = [["held-out text (reference)" if name == "reference" else f"temperature {name}", *(_gen_cell(m, key) for _, key in columns)]
            for name, m in metrics.items()]
    return table(["", *(label for label, _ in columns)], rows)


def one_line(text: str) -> str:
    """A sample on one Markdown line: line breaks (and the blank lines around them) become " / "."""
    if not text:
        return "*(empty: the model ended the text at once)*"
    flat = re.sub(r"\s*\n\s*", " / ", text.strip())
    return flat or "*(only whitespace)*"


def _generation_section(g: dict[str, Any], max_shown: int = 4) -> list[str]:
    lists = any("period_share" in m for m in g["metrics"].values())
    out = ["## Generation", "",
           f"{len(g['prompts'])} prompts cut from held-out `{g['split']}` documents; {g['max_new_tokens']} new tokens "
           "per sample. distinct-n: unique n-grams / n-grams; rep-4: share of 4-grams repeating an earlier one in "
           "the same sample; " + ("period words: share of words in the period word list; " if lists else "")
           + "BLEU/ROUGE: first sample per prompt, cut to the reference's length, against the words that followed the "
           "prompt in the document.", ""]
    out += [generation_table(g["metrics"]), ""]
    out += ["### Samples", ""]
    by_prompt: dict[str, list[dict[str, Any]]] = {}
    for s in g["samples"]:
        by_prompt.setdefault(s["prompt_id"], []).append(s)
    for p in g["prompts"][:max_shown]:
        out += [f"**`{p['id']}`** ({p['source']})", "", "> " + p["prompt"].replace("\n", "\n> "), "",
                f"*Reference:* {p['reference']}", ""]
        for s in by_prompt.get(p["id"], []):
            if s["sample"] == 0:
                out.append(f"- *T = {s['temperature']:g}:* {one_line(s['text'])}")
        out.append("")
    if len(g["prompts"]) > max_shown:
        out += [f"All {len(g['samples'])} samples are in results.json.", ""]
    return out


def render_markdown(results: dict[str, Any], plots: dict[str, str] | None = None) -> str:
    """The report card as Markdown. `plots` maps a plot's title to its path relative to the report."""
    ck = results.get("checkpoint", {})
    model = results.get("model", {})
    out = [f"# Evaluation report: run `{results['run']}`", ""]
    facts = [f"checkpoint `{ck.get('name', '?')}` (step {ck.get('step', '?')})"]
    if model:
        facts.append(f"{model.get('params', 0) / 1e6:.2f} M parameters, context {model.get('context')}, vocabulary {model.get('vocab_size')}")
    if ck.get("val_loss") is not None:
        facts.append(f"validation loss at training time {_f(ck['val_loss'])}")
    if results.get("profile"):
        facts.append(f"corpus profile `{results['profile']}` (docs/profiles.md)")
    out += ["; ".join(facts) + ".", ""]
    if "perplexity" in results:
        out += _perplexity_section(results["perplexity"])
    if "cloze" in results:
        out += _cloze_section(results["cloze"])
    if "probes" in results:
        out += _probe_section(results["probes"])
    if "tasks" in results:
        out += _tasks_section(results["tasks"])
    if "contamination" in results:
        out += _contamination_section(results["contamination"])
    if "generation" in results:
        out += _generation_section(results["generation"])
    if plots:
        out += ["## Plots", ""]
        out += [f"![{title}]({path})\n" for title, path in plots.items()]
    out += ["---", f"Everything above, and every sample, is in `results.json`. Time: {_f(results.get('seconds'), 1)} s.", ""]
    return "\n".join(out)


def plot_perplexity_by_source(results: dict[str, Any], out: Path) -> bool:
    """Bar chart of bits per byte by source, one bar group per split. False when there is nothing to plot."""
    splits = {k: v for k, v in results.get("perplexity", {}).items() if k != "texts"}
    if not splits:
        return False
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    sources = sorted({s for b in splits.values() for s in b["by_source"]})
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(sources) + 2), 4), dpi=100)
    width = 0.8 / len(splits)
    for i, (split, block) in enumerate(splits.items()):
        values = [block["by_source"].get(s, {}).get("bits_per_byte", float("nan")) for s in sources]
        ax.bar([x + i * width for x in range(len(sources))], values, width, label=split)
    ax.set_xticks([x + width * (len(splits) - 1) / 2 for x in range(len(sources))], sources)
    ax.set_ylabel("bits per byte (lower is better)")
    ax.set_title(f"run {results['run']}: bits per byte by source")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes(out, buf.getvalue())
    return True
