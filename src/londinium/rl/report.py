"""What an RL run shows: its curves (`runs/<run>/rl.png`) and a Markdown report (`runs/<run>/rl.md`),
both made from its metrics.jsonl, so they can be made again at any time from what was logged.

    write_report(ws, "sft-rl")   # after every `londinium rl`, and after a resume

Panels: reward (mean, with the group-free std as a band) and frac_reward_zero_std; held-out pass@1
and pass@k; KL to the reference and the policy's entropy; answer length and the rollout's share of
each step's time.
"""

from __future__ import annotations

import io
from statistics import fmean
from typing import Any

from londinium.files import write_bytes, write_text
from londinium.train.monitor import pyplot, read_metrics
from londinium.workspace import Workspace


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    got = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [s for s, _ in got], [v for _, v in got]


def plot(rows: list[dict[str, Any]], title: str) -> bytes:
    plt = pyplot()
    train = [r for r in rows if r.get("type") == "train"]
    evals = [r for r in rows if r.get("type") == "eval"]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), dpi=100)
    (a, b), (c, d) = axes
    s, m = _series(train, "reward_mean")
    a.plot(s, m, lw=1.2, label="reward (mean)")
    a.plot(*_series(train, "frac_reward_zero_std"), lw=1, ls="--", label="frac_reward_zero_std")
    a.set_title("rollouts")
    for key in [k for k in (evals[0] if evals else {}) if k.startswith("pass@")]:
        b.plot(*_series(evals, key), "o-", label=f"held-out {key}")
    b.set_title("held-out prompts")
    c.plot(*_series(train, "entropy"), lw=1.2, label="entropy (nats/token)")
    c.plot(*_series(train, "kl"), lw=1.2, label="KL to the base (k3)")
    c.set_title("policy")
    d.plot(*_series(train, "response_length"), lw=1.2, label="answer length (tokens)")
    d2 = d.twinx()
    d2.plot(*_series(train, "rollout_share"), lw=0.8, color="grey", ls="--", label="rollout share of step time")
    d2.set_ylim(0, 1)
    d.set_title("answers and time")
    for ax in (a, b, c, d):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def markdown(rows: list[dict[str, Any]], run: str) -> str:
    train = [r for r in rows if r.get("type") == "train"]
    evals = [r for r in rows if r.get("type") == "eval"]
    lines = [f"# RL run {run}", "", "![curves](rl.png)", ""]
    if train:
        first, last = train[0], train[-1]
        fresh = [r for r in train if not r.get("reused")]
        share = [r["rollout_share"] for r in fresh if r.get("rollout_share") is not None]
        lines += ["| | first step | last step |", "|---|---:|---:|"]
        for key in ("reward_mean", "frac_reward_zero_std", "entropy", "kl", "response_length"):
            if first.get(key) is not None:
                lines.append(f"| {key} | {first[key]:.4f} | {last[key]:.4f} |")
        seconds = last.get("elapsed_s") or 0
        lines += ["", f"{last['step']} steps in {seconds:.0f} s ({60 * last['step'] / seconds:.1f} steps/minute)" if seconds else "",
                  f"rollout share of a step's time (rollouts sampled this step): mean {fmean(share):.2f}" if share else "", ""]
    if evals:
        keys = [k for k in evals[0] if k.startswith("pass@")]
        lines += ["| step | " + " | ".join(keys) + " |", "|---:|" + "---:|" * len(keys)]
        lines += [f"| {r['step']} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |" for r in evals]
    return "\n".join(lines).rstrip() + "\n"


def write_report(ws: Workspace, run: str) -> tuple[str, str]:
    """rl.png and rl.md of run `run`, from its metrics; returns their paths."""
    rows = read_metrics(ws.metrics_file(run))
    png, md = ws.rl_report(run)
    write_bytes(png, plot(rows, f"RL run {run}"))
    write_text(md, markdown(rows, run))
    return str(png), str(md)
