"""What `londinium bench serve` writes and prints: bench/<name>/results.json, report.md, two plots,
and the side-by-side table of two result files (`--compare A.json B.json`)."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from londinium.bench.serve_bench import BenchError
from londinium.files import (create_temporary_dir, disk_full_guard, ensure_dir, loads_json, remove_stale_temporaries, replace_dir,
                             require_file, write_bytes, write_json, write_text)
from londinium.outputs import check_target, holds_only, siblings

# (row label, key in a level, stat or None, how to print it)
ROWS: list[tuple[str, str, str | None, str]] = [
    ("Successful requests", "completed", None, "{:d}"),
    ("Failed requests", "failed", None, "{:d}"),
    ("Duration (s)", "duration_s", None, "{:.2f}"),
    ("Total input tokens", "total_input_tokens", None, "{:d}"),
    ("Total generated tokens", "total_output_tokens", None, "{:d}"),
    ("Request throughput (req/s)", "request_throughput", None, "{:.2f}"),
    ("Output token throughput (tok/s)", "output_throughput", None, "{:.1f}"),
    ("Total token throughput (tok/s)", "total_token_throughput", None, "{:.1f}"),
    ("Request goodput (req/s)", "goodput", None, "{:.2f}"),
] + [(f"{title} {stat} (ms)", key, stat, "{:.2f}")
     for title, key in (("TTFT", "ttft_ms"), ("TPOT", "tpot_ms"), ("ITL", "itl_ms"), ("E2EL", "e2el_ms"))
     for stat in ("mean", "median", "p90", "p99")]


def _value(level: dict, key: str, stat: str | None) -> Any:
    v = level.get(key)
    return v.get(stat) if stat is not None and isinstance(v, dict) else v


def _fmt(v: Any, fmt: str) -> str:
    if v is None:
        return "-"
    return fmt.format(int(v)) if fmt == "{:d}" else fmt.format(v)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render_table(results: dict) -> str:
    """The vLLM-style figures, one column per level of the sweep (Markdown)."""
    levels = results["levels"]
    rows = [[label, *(_fmt(_value(lv, key, stat), fmt) for lv in levels)] for label, key, stat, fmt in ROWS
            if key != "goodput" or any(lv.get("goodput") is not None for lv in levels)]
    return _md_table(["metric", *(lv["label"] for lv in levels)], rows)


def render_report(results: dict) -> str:
    spec = results["spec"]
    lengths = f"prompts from {spec['prompts_file']}" if spec["prompts_file"] else \
        f"held-out prompts of {spec['input_len']} tokens"
    if spec["range_ratio"]:
        lengths += f" (lengths ±{spec['range_ratio']:.0%})"
    out = [f"# Serving benchmark `{results['name']}`\n",
           f"{results['base_url']}, model `{results['model']}`, {results['created']}: {spec['num_prompts']} requests per level, "
           f"{lengths}, {spec['output_len']} output tokens "
           f"({'fixed with ignore_eos' if results['ignore_eos'] else 'the server refused ignore_eos: outputs may stop early'}), "
           f"greedy, {spec['warmup']} warm-up request(s) excluded, seed {spec['seed']}."
           + (f" Goodput SLOs: {', '.join(f'{k} <= {v:g} ms' for k, v in spec['goodput'].items())}." if spec["goodput"] else "")
           + "\n\n", render_table(results)]
    for lv in results["levels"]:
        if lv["errors"]:
            out.append(f"\nErrors at {lv['label']}:\n\n" + "".join(f"- {n} x {msg}\n" for msg, n in lv["errors"].items()))
        if lv["completed"] and lv["usage_reported"] < lv["completed"]:
            out.append(f"\nAt {lv['label']} the server sent no usage for {lv['completed'] - lv['usage_reported']} of "
                       f"{lv['completed']} requests: their token counts are the workspace tokenizer's.\n")
        tc = lv["token_check"]
        if tc["prompt_checked"] and tc["prompt_matched"] != tc["prompt_checked"]:
            out.append(f"\nAt {lv['label']} the server counted {tc['prompt_checked'] - tc['prompt_matched']} of "
                       f"{tc['prompt_checked']} prompts differently from the workspace tokenizer (not this model's tokenizer?).\n")
        if tc["output_checked"] and tc["output_matched"] != tc["output_checked"]:
            reasons = ", ".join(f"{n} {why}" for why, n in lv.get("finish_reasons", {}).items())
            out.append(f"\nAt {lv['label']} {tc['output_checked'] - tc['output_matched']} of {tc['output_checked']} outputs "
                       f"were not the requested length although the server took ignore_eos (finish reasons: {reasons}).\n")
        if tc["text_checked"]:
            out.append(f"\nAt {lv['label']} the workspace tokenizer re-encodes {tc['text_matched']} of {tc['text_checked']} "
                       f"outputs to the server's count.\n")
    out.append("\n![throughput](throughput.png)\n\n![latency](latency.png)\n")
    return "".join(out)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def plots(results: dict) -> dict[str, bytes]:
    """{kind: PNG bytes}: throughput (requests/s and output tokens/s per level) and latency.png (TTFT and TPOT
    median, p90, p99 per level)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    levels = results["levels"]
    x = list(range(len(levels)))
    labels = [lv["label"] for lv in levels]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(x, [lv["output_throughput"] for lv in levels], "o-", label="output tokens/s")
    ax.plot(x, [lv["total_token_throughput"] for lv in levels], "s--", label="total tokens/s")
    ax.set_ylabel("tokens/s")
    ax2 = ax.twinx()
    ax2.plot(x, [lv["request_throughput"] for lv in levels], "^:", color="grey", label="requests/s")
    ax2.set_ylabel("requests/s")
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="upper left")
    ax.set_xticks(x, labels)
    ax.set_xlabel("load")
    ax.grid(alpha=0.3)
    ax.set_title(f"{results['name']}: throughput ({results['model']})")
    out = {"throughput": _png(fig)}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for ax, key, title in ((axes[0], "ttft_ms", "TTFT"), (axes[1], "tpot_ms", "TPOT")):
        for stat, style in (("median", "o-"), ("p90", "s--"), ("p99", "^:")):
            ax.plot(x, [lv[key][stat] for lv in levels], style, label=stat)
        ax.set_xticks(x, labels)
        ax.set_xlabel("load")
        ax.set_ylabel("ms")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{results['name']}: latency percentiles ({results['model']})")
    out["latency"] = _png(fig)
    return out


def bench_files(ws: Any, name: str) -> list[str]:
    """The names of what `write_results` puts in bench/<name>/."""
    return [ws.bench_results(name).name, ws.bench_report_md(name).name,
            *(ws.bench_plot(name, kind).name for kind in ("throughput", "latency"))]


def check_bench_target(ws: Any, name: str) -> Path:
    """bench/<name>/ when results may be written there (`outputs.check_target`): absent, empty, or
    an earlier benchmark's four files and nothing else; else a PathError naming --name and why."""
    target = ws.bench_dir(name)
    return check_target(target, "--name", folder=True, ours=holds_only(bench_files(ws, name)),
                        keep={**ws.stage_outputs(), **siblings(target.parent, target)}, within=ws.output_folders())


def write_results(ws: Any, results: dict) -> Path:
    """bench/<name>/ built in a temporary folder beside it and renamed into place, so it is the old
    run's files, the new run's, or absent, never a mix; under the lock `bench/<name>`."""
    name = results["name"]
    with ws.lock(f"bench/{name}"):
        target = check_bench_target(ws, name)
        ensure_dir(target.parent)
        remove_stale_temporaries(target.parent, name=target.name)
        tmp = create_temporary_dir(target)
        with disk_full_guard(target, hint="choose another --workspace"):
            try:
                write_json(tmp / ws.bench_results(name).name, results)
                write_text(tmp / ws.bench_report_md(name).name, render_report(results))
                for kind, data in plots(results).items():
                    write_bytes(tmp / ws.bench_plot(name, kind).name, data)
                replace_dir(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)  # gone already after the rename
    return target


# ---- --compare -----------------------------------------------------------------------------------

COMPARE_ROWS = [r for r in ROWS if r[1] in ("request_throughput", "output_throughput", "total_token_throughput", "goodput")
                or r[2] in ("median", "p99")]


def load_results(path: str | os.PathLike) -> dict:
    p = require_file(path, "benchmark results", BenchError, hint="give a bench/<name>/results.json")
    try:
        results = loads_json(p.read_text(encoding="utf-8"))
        results["levels"][0]["label"]
    except Exception:
        raise BenchError(f"{p} is not a `londinium bench serve` results.json (no levels)") from None
    return results


def compare(a: dict, b: dict) -> str:
    """Levels present in both files, side by side: A, B and B/A for each figure (Markdown)."""
    by_label = {lv["label"]: lv for lv in b["levels"]}
    common = [lv for lv in a["levels"] if lv["label"] in by_label]
    if not common:
        raise BenchError(f"the two results share no load level ({', '.join(lv['label'] for lv in a['levels'])} vs "
                         f"{', '.join(by_label)}); compare runs of the same sweep")
    out = [f"A: {a['name']} ({a['base_url']}, {a['model']}, {a['created']})\n",
           f"B: {b['name']} ({b['base_url']}, {b['model']}, {b['created']})\n\n"]
    header = ["metric"]
    for lv in common:
        header += [f"A {lv['label']}", f"B {lv['label']}", "B/A"]
    rows = []
    for label, key, stat, fmt in COMPARE_ROWS:
        row, any_value = [label], False
        for la in common:
            va, vb = _value(la, key, stat), _value(by_label[la["label"]], key, stat)
            any_value |= va is not None or vb is not None
            ratio = f"{vb / va:.2f}x" if va and vb is not None else "-"
            row += [_fmt(va, fmt), _fmt(vb, fmt), ratio]
        if any_value:
            rows.append(row)
    return "".join(out) + _md_table(header, rows)
