"""Which training recipe gives the best model for the same wall-clock budget? Measure candidates.

    .venv/bin/python benchmarks/recipe_search.py --base WS --root DIR --budget-s 120 --seeds 1337 1338 \
        --candidate base \
        --candidate v2k tokenizer.vocab_size=2048 \
        --candidate v2k-llama tokenizer.vocab_size=2048 model.positions=rope model.norm=rmsnorm model.mlp=swiglu

Every candidate is the `tiny` preset plus its `section.key=value` changes, trained by the real
trainer (`londinium train`, one process at a time, all cores) and scored by the real eval stage on
the **validation** split (bits per byte, which compares across tokenizers; the cloze margin; the domain probes where the profile has them).
The test split is never read here.

1. Workspaces: one per vocabulary size under `--root` (`ws-<V>`), each a copy of the corpus of
   `--base` (a workspace where `londinium corpus build` ran, e.g. quickstart's) with its own
   tokenizer and shards.
2. Calibration: every candidate's model and optimisers are built in this process as the trainer
   builds them and timed in alternating rounds of a few steps each, so a busy moment on the
   machine falls on all of them alike; a candidate's step time is the median of its rounds, and
   its first step's excess over that is its start-up cost (e.g. `torch.compile`), which counts
   against the budget. (Timing whole short training runs one after another was tried first: on
   this shared machine the same candidate's pace varied by up to 30% between runs.)
3. Quality: each candidate trains the number of steps its calibrated speed fits in `--budget-s`
   (start-up included), warm-up a fixed share of them and the schedule over all of them, seeds
   interleaved; so a noisy moment during one run changes no step count. Then `londinium eval`
   scores its last checkpoint on the validation split.

Results accumulate in `--root/results.json` (keyed by candidate, seed and budget, so stages of a
search add to one file), with `report.md` and `recipe.png` next to it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from londinium.errors import ConfigError
from londinium.files import atomic_write, write_json, write_text
from londinium.train.monitor import read_metrics
from londinium.workspace import Workspace

LONDINIUM = [sys.executable, "-m", "londinium"]
EVAL_SETTINGS = ['eval.splits=["val"]', "eval.prompts=0"]  # validation only; no samples (not scored)


def sh(cmd: list[str], log: Path) -> None:
    with log.open("a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise SystemExit(f"recipe_search: command failed (exit {r.returncode}), see {log}: {' '.join(cmd)}")


def sets(changes: dict[str, str]) -> list[str]:
    return [a for k, v in changes.items() for a in ("--set", f"{k}={v}")]


def workspace(root: Path, base: Path, vocab: str, log: Path) -> Path:
    """The workspace for one vocabulary size: the base's corpus, its own tokenizer and shards."""
    ws = root / f"ws-{vocab}"
    if (ws / "shards").is_dir():
        return ws
    tmp = root / f".ws-{vocab}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copytree(base / "corpus", tmp / "corpus")
    manifest = json.loads((base / "manifest.json").read_text())
    (tmp / "manifest.json").write_text(json.dumps({"corpus": manifest["corpus"]}, indent=2))
    tok = {"tokenizer.vocab_size": vocab, "tokenizer.compare_gpt2": "false", "tokenizer.compare_sources": "false"}
    sh(LONDINIUM + ["tokenizer", "train", "-w", str(tmp), "--preset", "tiny"] + sets(tok), log)
    sh(LONDINIUM + ["data", "prepare", "-w", str(tmp), "--preset", "tiny"] + sets(tok), log)
    tmp.rename(ws)
    return ws


def train(ws: Path, run: str, changes: dict[str, str], log: Path) -> list[dict]:
    sh(LONDINIUM + ["train", "-w", str(ws), "--preset", "tiny", "--run", run, "--force"] + sets(changes), log)
    return read_metrics(Workspace(ws).metrics_file(run))


class Pace:
    """One candidate's model, optimisers and a batch, built as the trainer builds them, for timing."""

    def __init__(self, changes: dict[str, str]) -> None:
        import torch

        from londinium.config import load_config
        from londinium.model.gpt import GPT
        from londinium.train.optim import build_optimizers

        cfg = load_config(preset="tiny", overrides=[f"{k}={v}" for k, v in changes.items()])
        cfg.model.vocab_size = cfg.tokenizer.vocab_size
        torch.manual_seed(0)
        self.tc, self.model = cfg.train, GPT(cfg.model).train()
        self.opt = build_optimizers(self.model, cfg.train, torch.device("cpu"))
        self.forward = torch.compile(self.model) if cfg.train.compile else self.model
        data = torch.randint(0, cfg.model.vocab_size, (cfg.train.batch_size, cfg.model.context + 1))
        self.x, self.y = data[:, :-1].contiguous(), data[:, 1:].contiguous()
        self.times: list[float] = []
        t0 = time.perf_counter()
        self.step()  # the first step: torch.compile's work, allocations
        self.first_s = time.perf_counter() - t0

    def step(self) -> None:
        import torch

        self.opt.set_lr(1e-3)  # a small step: the weights stay sane over many timed steps
        _, loss = self.forward(self.x, self.y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tc.grad_clip)
        self.opt.step()
        self.opt.zero_grad()
        loss.item()

    def timed(self, steps: int) -> None:
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        self.times.append((time.perf_counter() - t0) / steps)


def calibrate(cands: dict[str, dict[str, str]], rounds: int, steps: int) -> dict[str, tuple[float, float]]:
    """{name: (seconds per step, start-up seconds)}: every candidate built in this process, then
    timed in `rounds` alternating rounds of `steps` steps each, so load from elsewhere on the
    machine falls on all of them alike; a step's time is the median of its rounds, the start-up
    the first step's excess over it (`torch.compile` compiles there)."""
    paces = {}
    for n, c in cands.items():
        try:
            paces[n] = Pace(c)
        except ConfigError as e:  # a misspelt key or a value out of range: name the candidate too
            raise SystemExit(f"recipe_search: candidate {n}: {e}") from None
    for p in paces.values():
        p.timed(2)  # warm
        p.times.clear()
    for r in range(rounds):
        for n in (list(paces) if r % 2 == 0 else list(paces)[::-1]):
            paces[n].timed(steps)
    return {n: (statistics.median(p.times), max(0.0, p.first_s - statistics.median(p.times))) for n, p in paces.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True, help="workspace whose corpus the candidates train on")
    ap.add_argument("--root", type=Path, required=True, help="where the per-vocabulary workspaces and results live")
    ap.add_argument("--budget-s", type=float, default=120.0, help="training seconds per candidate, start-up included")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1337])
    ap.add_argument("--candidate", nargs="+", action="append", required=True, metavar=("NAME", "KEY=VALUE"),
                    help="a candidate: its name, then section.key=value changes to the tiny preset")
    ap.add_argument("--calib-steps", type=int, default=5, help="steps per candidate per timing round")
    ap.add_argument("--calib-rounds", type=int, default=8)
    ap.add_argument("--warmup-share", type=float, default=100 / 1100, help="warm-up steps as a share of the steps (the tiny preset's)")
    ap.add_argument("--reference-steps", type=int, default=1100, help="the current default's steps: the first candidate's time for them is printed")
    ap.add_argument("--calibrate-only", nargs="*", default=[], metavar="NAME",
                    help="candidates only timed, not trained (e.g. the current default, to convert its steps into a budget)")
    args = ap.parse_args()

    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    log = root / "commands.log"
    cands: dict[str, dict[str, str]] = {}
    for name, *kv in args.candidate:
        bad = [x for x in kv if "=" not in x]
        if bad:
            raise SystemExit(f"recipe_search: candidate {name}: {bad[0]!r} is not section.key=value")
        cands[name] = dict(x.split("=", 1) for x in kv)
    vocab = {n: c.get("tokenizer.vocab_size", "8192") for n, c in cands.items()}
    for n, c in cands.items():
        c["tokenizer.vocab_size"] = vocab[n]
    spaces = {v: workspace(root, args.base.resolve(), v, log) for v in sorted(set(vocab.values()), key=int)}

    # 2. calibration, interleaved in this process
    plan = {}
    for n, (per_step, startup) in calibrate(cands, args.calib_rounds, args.calib_steps).items():
        steps = max(20, int((args.budget_s - startup) / per_step))
        plan[n] = {"s_per_step": per_step, "startup_s": startup, "steps": steps}
        print(f"{n}: {per_step * 1000:.0f} ms/step, start-up {startup:.1f} s -> {steps} steps in {args.budget_s:.0f} s", flush=True)
    first = next(iter(cands))
    print(f"{first} takes {args.reference_steps * plan[first]['s_per_step'] + plan[first]['startup_s']:.0f} s "
          f"for {args.reference_steps} steps on this machine now", flush=True)

    # 3. quality, seeds interleaved
    results_file = root / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else []
    for seed in args.seeds:
        for n, c in cands.items():
            if n in args.calibrate_only:
                continue
            ws, steps = spaces[vocab[n]], plan[n]["steps"]
            run = f"{n}-s{seed}-b{int(args.budget_s)}"
            t0 = time.time()
            m = train(ws, run, {**c, "train.seed": str(seed), "train.max_steps": str(steps),
                                "train.warmup_steps": str(max(1, round(args.warmup_share * steps))),
                                "train.eval_every": str(steps), "train.max_minutes": "0"}, log)
            wall = time.time() - t0
            sh(LONDINIUM + ["eval", "-w", str(ws), "--preset", "tiny", "--run", run, "--force"]
               + sets({**c, **dict(s.split("=", 1) for s in EVAL_SETTINGS)}), log)
            res = json.loads((ws / "eval" / run / "results.json").read_text())
            last = [r for r in m if r["type"] == "train"][-1]
            cloze = res["cloze"]["summary"]["overall"]  # every profile has the cloze set; probes only the period one
            probes = res["probes"]["summary"] if "probes" in res else None
            row = {"name": n, "seed": seed, "budget_s": args.budget_s, "changes": c, "steps": steps,
                   "train_s": last["elapsed_s"], "process_s": round(wall, 1), "tok_per_s": last["tok_per_s"],
                   "params": res["model"].get("params") if isinstance(res.get("model"), dict) else None,
                   "val_bpb": res["perplexity"]["val"]["total"]["bits_per_byte"],
                   "val_bpb_by_source": {s: v["bits_per_byte"] for s, v in res["perplexity"]["val"]["by_source"].items()},
                   "cloze_acc": cloze["accuracy"], "cloze_margin": cloze["margin"], "cloze_margin_se": cloze["margin_se"],
                   "probe_acc": probes["overall"]["accuracy"] if probes else None,
                   "probe_acc_norm": probes["overall"]["accuracy_norm"] if probes else None,
                   "probe_by_category": {k: v["accuracy"] for k, v in probes["by_category"].items()} if probes else {},
                   "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
            results = [r for r in results if (r["name"], r["seed"], r["budget_s"]) != (n, seed, args.budget_s)] + [row]
            write_json(results_file, results)
            print(f"{n} seed {seed}: {steps} steps in {row['train_s']:.0f} s ({row['tok_per_s']:,.0f} tok/s), "
                  f"val {row['val_bpb']:.4f} bpb, cloze margin {row['cloze_margin']:+.3f} nats", flush=True)
            shutil.rmtree(ws / "runs" / run / "checkpoints", ignore_errors=True)  # figures kept; weights not needed
    write_report(root, results)


def _mean(rows: list[dict], key: str, fmt: str) -> str:
    """The mean of `key` over rows that have it (older results lack the cloze columns, a neutral profile the probes)."""
    xs = [r[key] for r in rows if r.get(key) is not None]
    return fmt.format(statistics.mean(xs)) if xs else "-"


def write_report(root: Path, results: list[dict]) -> None:
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in results:
        groups.setdefault((r["name"], r["budget_s"]), []).append(r)
    order = sorted(groups, key=lambda k: (k[1], statistics.mean(r["val_bpb"] for r in groups[k])))
    lines = ["# Recipe search (validation split; bits per byte compare across tokenizers)", "",
             "Command: `benchmarks/recipe_search.py` (see its docstring). Mean over seeds; the spread is max - min.", "",
             "| budget s | candidate | changes to tiny | seeds | steps | train s | tok/s | val bpb | spread | cloze margin | probes |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k in order:
        rs = groups[k]
        bpb = [r["val_bpb"] for r in rs]
        ch = " ".join(f"{a.split('.', 1)[1]}={b}" for a, b in rs[0]["changes"].items())
        lines.append(f"| {k[1]:.0f} | {k[0]} | {ch} | {len(rs)} | {rs[0]['steps']} | {statistics.mean(r['train_s'] for r in rs):.0f} | {statistics.mean(r['tok_per_s'] for r in rs):,.0f} | "
                     f"{statistics.mean(bpb):.4f} | {max(bpb) - min(bpb):.4f} | {_mean(rs, 'cloze_margin', '{:+.3f}')} | {_mean(rs, 'probe_acc', '{:.1%}')} |")
    write_text(root / "report.md", "\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(order) + 1.5))
    for i, k in enumerate(order):
        ax.scatter([r["val_bpb"] for r in groups[k]], [i] * len(groups[k]), color="C0")
    ax.set_yticks(range(len(order)), [f"{n} ({b:.0f} s)" for n, b in order])
    ax.invert_yaxis()
    ax.set_xlabel("validation bits per byte (lower is better); one dot per seed")
    fig.tight_layout()
    with atomic_write(root / "recipe.png", "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
