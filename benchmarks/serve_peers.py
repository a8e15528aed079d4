"""`londinium bench serve`'s sweep against the serving peers on the same weights, in one run.

    .venv/bin/python benchmarks/serve_peers.py -w londinium-work --run main
    .venv/bin/python benchmarks/serve_peers.py --concurrency 1,4,16 --num-prompts 64 --rounds 3 --no-llama-cpp

Servers, side by side on 127.0.0.1, every one with the same torch/OpenMP thread count (`--threads`,
1 by default: on a small shared CPU a spinning second thread stalls decode by 30x):
`londinium serve` over the run; `transformers serve` without and with `--continuous-batching` over
the run's `londinium export`; and llama.cpp's OpenAI-compatible server (`python -m
llama_cpp.server`, from `pip install 'llama-cpp-python[server]'`) over the GGUF export, with
`--interrupt_requests False` (its default cuts a running stream off when the next request comes).
All get the same held-out prompts through `londinium.bench.serve_bench` (vLLM's metrics), measured
in alternation, round by round with the order rotated, so load from elsewhere falls on all alike;
each figure is the median over the rounds. The last round of each server is written to
bench/peers-<server>/ for `londinium bench serve --compare`.

Printed: output tokens/s, TTFT p50 and TPOT p50 per server and concurrency, and londinium's output
tokens/s over each peer's at the same concurrency. Also each server's CPU time per output token (its
process's user + system time over the level, from /proc: Linux only), and the ratio of output tokens
per CPU-second: on a shared machine wall-clock throughput moves with everyone else's load (rounds
2-5x apart at a load average of 15), while the CPU a server spends on a token moves far less.

`--baseline SRC` adds `londinium serve` run from another source tree (`SRC` on PYTHONPATH, e.g. a
`git archive main src` of the main branch) as the server `londinium-base`, measured in the same
alternation: a change's effect on the served figures, against where it started.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import sys
import tempfile
from pathlib import Path

from servers import free_port, start, stop


def main() -> None:
    from londinium.bench.report import write_results
    from londinium.bench.serve_bench import BenchSpec, bench_serve_async, held_out_prompts, parse_levels
    from londinium.config import Config
    from londinium.export.run import export_run
    from londinium.model.load import load_run
    from londinium.tokenizer.codec import load_tokenizer
    from londinium.workspace import Workspace

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workspace", "-w", default="londinium-work")
    ap.add_argument("--run", default="main")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--num-prompts", type=int, default=64, help="measured requests per level and round")
    ap.add_argument("--input-len", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    ap.add_argument("--threads", type=int, default=1, help="threads of every server (OMP_NUM_THREADS, serve.threads, n_threads)")
    ap.add_argument("--no-transformers", action="store_true", help="leave out transformers serve")
    ap.add_argument("--no-llama-cpp", action="store_true", help="leave out llama.cpp's server")
    ap.add_argument("--baseline", metavar="SRC", help="also serve londinium from this source tree (on PYTHONPATH) as 'londinium-base'")
    ap.add_argument("--compile", action="store_true", help="londinium serves with generate.compile=true (an unmeasured round first compiles its shapes)")
    ap.add_argument("--quick", action="store_true", help="toy sizes, one round (seconds): that the script runs, not its figures")
    args = ap.parse_args()
    if args.quick:
        args.concurrency, args.num_prompts, args.input_len, args.output_len, args.rounds = "1,2", 2, 8, 4, 1
    ws = Workspace(args.workspace)
    tok = load_tokenizer(ws)
    levels = parse_levels(args.concurrency, None, None)
    caps = [lv.max_concurrency for lv in levels]
    context = load_run(ws, run=args.run).config.model.context
    tmp = Path(tempfile.mkdtemp(prefix="serve-peers-"))
    py = sys.executable
    ours = [py, "-m", "londinium", "serve", "-w", str(ws.root), "--run", args.run, "--port", "PORT",
            "--set", f"serve.max_running={max(caps)}", "--set", f"serve.threads={args.threads}",
            *(["--set", "generate.compile=true"] if args.compile else [])]
    servers: dict[str, list[str]] = {"londinium": ours}
    envs: dict[str, dict[str, str]] = {}
    if args.baseline:
        servers["londinium-base"] = ours
        envs["londinium-base"] = {"PYTHONPATH": str(Path(args.baseline).resolve())}
    if not args.no_transformers:
        hf = export_run(ws, Config(), run=args.run, fmt="hf", out=tmp / "hf", log=lambda m: None)
        for cb in (False, True):
            servers["transformers-cb" if cb else "transformers"] = [
                str(Path(py).with_name("transformers")), "serve", str(hf), "--device", "cpu", "--host", "127.0.0.1",
                "--port", "PORT", *(["--continuous-batching"] if cb else [])]
    if not args.no_llama_cpp:
        if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("starlette_context") is None:
            print("llama.cpp left out: pip install 'llama-cpp-python[server]'", file=sys.stderr)
        else:
            gguf = export_run(ws, Config(), run=args.run, fmt="gguf", out=tmp / "model.gguf", log=lambda m: None)
            servers["llama.cpp"] = [py, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", "PORT",
                                    "--n_threads", str(args.threads), "--n_ctx", str(context), "--interrupt_requests", "False"]
    prompts = held_out_prompts(ws, args.num_prompts + 1, args.input_len, args.output_len, 0.0, seed=0)
    procs, urls = {}, {}
    figures: dict[str, dict[str, list[tuple[float, ...]]]] = {name: {lv.label: [] for lv in levels} for name in servers}
    try:
        for name, cmd in servers.items():
            port = free_port()
            urls[name] = f"http://127.0.0.1:{port}"
            procs[name] = start([str(port) if c == "PORT" else c for c in cmd], urls[name], tmp / f"{name}.log", args.threads,
                                timeout=600 if args.compile else 180, env=envs.get(name))
        order = list(servers)
        load = [_load()]
        for r in range(-1 if args.compile else 0, args.rounds):
            for name in order[r % len(order):] + order[:r % len(order)]:
                spec = BenchSpec(base_url=urls[name] + "/v1", levels=levels, num_prompts=args.num_prompts, input_len=args.input_len,
                                 output_len=args.output_len, warmup=1, name=f"peers-{name.replace('.', '-')}")
                runs = []
                for level in levels:  # one level at a time, so each has its own CPU time
                    cpu = _cpu_s(procs[name].pid)
                    res = asyncio.run(bench_serve_async(BenchSpec(**{**vars(spec), "levels": [level]}).validate(), prompts, tok=tok))
                    cpu = _cpu_s(procs[name].pid) - cpu
                    lv = res["levels"][0]
                    runs.append(res)
                    if r < 0:
                        continue  # the compiling round: not measured
                    if lv["failed"]:
                        print(f"{name} {lv['label']}: {lv['failed']} failed: {lv['errors']}", file=sys.stderr)
                    tokens = lv["output_throughput"] * lv["duration_s"] + args.output_len  # the warm-up request's too
                    figures[name][lv["label"]].append((lv["output_throughput"], lv["ttft_ms"]["median"], lv["tpot_ms"]["median"],
                                                       1e6 * cpu / tokens if cpu == cpu else float("nan")))
                if r == args.rounds - 1:
                    write_results(ws, {**res, "spec": {**res["spec"], "levels": [x["spec"]["levels"][0] for x in runs]},
                                       "levels": [x["levels"][0] for x in runs]})
                print(f"round {r + 1}/{args.rounds}: {name} done", file=sys.stderr)
        load.append(_load())
    finally:
        for proc in procs.values():
            stop(proc)
    med = {n: {lab: [statistics.median(x[i] for x in rows) for i in range(4)] for lab, rows in f.items()} for n, f in figures.items()}
    labels = [lv.label for lv in levels]
    print(f"\n{args.rounds} rounds x {args.num_prompts} requests per level, {args.input_len}-token held-out prompts, "
          f"{args.output_len} output tokens, {args.threads} thread(s) per server; medians over rounds; "
          f"load average {load[0]} -> {load[1]}\n")
    print("| server | " + " | ".join(f"{lab} tok/s | {lab} TTFT p50 | {lab} TPOT p50 | {lab} CPU/token" for lab in labels) + " |")
    print("|---|" + "---:|" * (4 * len(labels)))
    for name, m in med.items():
        print(f"| {name} | " + " | ".join(f"{m[lab][0]:.0f} | {m[lab][1]:.1f} ms | {m[lab][2]:.2f} ms | {m[lab][3]:.0f} us"
                                          for lab in labels) + " |")
    print("\nlondinium / peer, output tokens/s (wall) and output tokens per CPU-second:\n")
    print("| peer | " + " | ".join(f"{lab} wall | {lab} CPU" for lab in labels) + " |")
    print("|---|" + "---:|" * (2 * len(labels)))
    for name in [n for n in med if n != "londinium"]:
        print(f"| {name} | " + " | ".join(f"{med['londinium'][lab][0] / max(med[name][lab][0], 1e-9):.2f}x | "
                                          f"{med[name][lab][3] / med['londinium'][lab][3]:.2f}x" for lab in labels) + " |")
    if len(labels) > 1:
        m = med["londinium"]
        print(f"\nlondinium {labels[-1]} / {labels[0]}: {m[labels[-1]][0] / max(m[labels[0]][0], 1e-9):.2f}x output tokens/s, "
              f"{m[labels[0]][3] / m[labels[-1]][3]:.2f}x output tokens per CPU-second")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (NaN where /proc is not there)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


if __name__ == "__main__":
    main()
