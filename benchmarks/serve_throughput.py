"""Serving throughput under concurrency: `londinium serve` against `transformers serve` on the same weights.

    .venv/bin/python benchmarks/serve_throughput.py -w londinium-work --run main
    .venv/bin/python benchmarks/serve_throughput.py --levels 1,4,16 --requests 32 --max-tokens 64 --skip-peer

Three servers, one after another on the same machine: `londinium serve` (continuous batching) and
`transformers serve DIR --device cpu`, without and with `--continuous-batching`, serving the
`londinium export` of the same checkpoint (written here into a temporary directory). Each
gets the same streamed /v1/completions requests (the same prompts, greedy, `max_tokens` the same) at
concurrency 1, 4 and 16: `--requests` requests per level, `c` clients each sending its next request
as soon as the last one ended. The servers run side by side and are measured in alternation
(round by round, level by level), so load from elsewhere on a shared machine falls on all alike;
each figure is the median over the rounds. Every server runs with the same torch thread count
(`--threads`, 1 by default: on a busy machine a second OpenMP thread that gets descheduled stalls
every op of a one-sequence decode, which made c = 1 figures swing 20x between runs).

Figures per level: output tokens per second (the completions' tokens, counted by re-encoding the
returned text with our tokenizer, so both servers are counted alike, over the level's wall time) and
time to first token, p50 (request sent to the first chunk with text). The first row is the
ceiling under the server: the same requests submitted straight to an `EngineLoop` in the benchmark's
process, with no HTTP. Ratios: londinium at c
against its own c = 1, and against each peer at the same c.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from servers import free_port, start, stop

PROMPTS = ["Thou art", "The king", "O sweet", "Upon the sea", "Good morrow, my lord", "And the night",
           "Fair queen of", "Let me", "What light through", "My father", "Speak unto the", "The blood of",
           "Come, gentle", "Honour and shame", "In the house of", "Give me the"]


def build_export(ws, run: str, out: Path) -> Path:
    """The run's best checkpoint as a transformers directory, through `londinium export`."""
    from londinium.config import Config
    from londinium.export.run import export_run

    return export_run(ws, Config(), run=run, checkpoint="best", fmt="hf", out=out, log=lambda m: None)


async def one(http: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int) -> tuple[float | None, str]:
    import json

    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    t0 = time.perf_counter()
    ttft, text = None, []
    async with http.stream("POST", f"{url}/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise SystemExit(f"{url}: HTTP {r.status_code}: {(await r.aread())[:500]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            piece = "".join(c.get("text") or "" for c in chunk.get("choices", []))
            if piece and ttft is None:
                ttft = time.perf_counter() - t0
            text.append(piece)
    return ttft, "".join(text)


async def level(url: str, model: str, concurrency: int, requests: int, max_tokens: int, count) -> tuple[float, float]:
    """(output tokens per second, TTFT p50 in seconds) at one concurrency."""
    todo = list(range(requests))
    ttfts: list[float] = []
    tokens = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        while todo:
            i = todo.pop()
            ttft, text = await one(http, url, model, PROMPTS[i % len(PROMPTS)], max_tokens)
            tokens += count(text)
            if ttft is not None:
                ttfts.append(ttft)

    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        await one(http, url, model, PROMPTS[0], 4)  # warm-up
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return tokens / wall, statistics.median(ttfts) if ttfts else float("nan")


ENGINE = "engine alone (EngineLoop, no HTTP)"


def engine_level(loop, concurrency: int, requests: int, max_tokens: int, count) -> tuple[float, float]:
    """The ceiling under the server: the same requests straight into an EngineLoop in this process,
    `concurrency` in flight at a time."""
    from londinium.infer.sampling import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    todo, inflight, tokens, ttfts = list(range(requests)), [], 0, []
    t0 = time.perf_counter()
    while todo or inflight:
        while todo and len(inflight) < concurrency:
            inflight.append(loop.submit(PROMPTS[todo.pop() % len(PROMPTS)], params))
        done = inflight.pop(0).result()
        tokens += count(done.text)
        ttfts.append(done.timing.ttft_s)
    return tokens / (time.perf_counter() - t0), statistics.median(ttfts)


def main() -> None:
    from londinium.tokenizer.codec import encode, load_tokenizer
    from londinium.workspace import Workspace

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workspace", "-w", default="londinium-work")
    ap.add_argument("--run", default="main")
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of every server (OMP_NUM_THREADS); 1 keeps a shared machine's figures steady")
    ap.add_argument("--skip-peer", action="store_true", help="only londinium serve")
    ap.add_argument("--quick", action="store_true", help="toy sizes, one round (seconds): that the script runs, not its figures")
    args = ap.parse_args()
    if args.quick:
        args.levels, args.requests, args.max_tokens, args.rounds = "1,2", 2, 4, 1
    ws = Workspace(args.workspace)
    tok = load_tokenizer(ws)
    levels = [int(x) for x in args.levels.split(",")]
    count = lambda text: len(encode(tok, text))  # noqa: E731

    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    servers: list[tuple[str, list[str], str]] = []
    port = free_port()
    servers.append(("londinium serve", [sys.executable, "-m", "londinium", "serve", "-w", str(ws.root), "--run", args.run,
                                        "--port", str(port), "--model-name", "bench",
                                        "--set", f"serve.max_running={max(levels)}", "--set", f"serve.threads={args.threads}",
                                        "--set", f"serve.request_log={tmp / 'requests.jsonl'}"], "bench"))
    if not args.skip_peer:
        export = build_export(ws, args.run, tmp / "hf")
        for cb in (False, True):
            servers.append((f"transformers serve{' --continuous-batching' if cb else ''}",
                            [str(Path(sys.executable).with_name("transformers")), "serve", str(export), "--device", "cpu", "--host", "127.0.0.1", "--port", "PORT",
                             *(["--continuous-batching"] if cb else [])], str(export)))
    # All servers run at once and are measured in alternation, level by level and round by round,
    # so load from other processes on a shared machine hits all of them alike; figures are medians.
    procs, urls, loop = {}, {}, None
    try:
        for name, cmd, model in servers:
            p = port if name == "londinium serve" else free_port()
            urls[name] = f"http://127.0.0.1:{p}"
            procs[name] = start([str(p) if c == "PORT" else c for c in cmd], urls[name], tmp / f"server-{len(procs)}.log", args.threads, ready="/health")
        import torch

        from londinium.infer.engine import Engine
        from londinium.infer.scheduler import EngineLoop
        from londinium.model.load import load_run

        torch.set_num_threads(args.threads)
        loop = EngineLoop(Engine.from_trained(load_run(ws, run=args.run)), max_running=max(levels))
        loop.start()
        samples: dict[str, dict[int, list[tuple[float, float]]]] = {name: {c: [] for c in levels} for name in [ENGINE, *urls]}
        for r in range(args.rounds):
            for c in levels:
                tps, ttft = engine_level(loop, c, max(args.requests, c), args.max_tokens, count)
                samples[ENGINE][c].append((tps, ttft))
                print(f"round {r + 1}  {ENGINE:42s} c={c:<3d} {tps:8.1f} tok/s  TTFT p50 {ttft * 1000:7.1f} ms", flush=True)
                for name, _, model in servers:
                    tps, ttft = asyncio.run(level(urls[name], model, c, max(args.requests, c), args.max_tokens, count))
                    samples[name][c].append((tps, ttft))
                    print(f"round {r + 1}  {name:42s} c={c:<3d} {tps:8.1f} tok/s  TTFT p50 {ttft * 1000:7.1f} ms", flush=True)
    finally:
        if loop is not None:
            loop.stop()
        for proc in procs.values():
            stop(proc)
    results = {name: {c: (statistics.median(t for t, _ in rows), statistics.median(f for _, f in rows)) for c, rows in by_c.items()}
               for name, by_c in samples.items()}

    ours = results["londinium serve"]
    print(f"\n{args.requests} requests per level, {args.max_tokens} new tokens, greedy, streamed /v1/completions, "
          f"median of {args.rounds} alternating rounds")
    print("| server | " + " | ".join(f"c={c} tok/s | c={c} TTFT p50" for c in levels) + " |")
    print("|---|" + "---|---|" * len(levels))
    for name, rows in results.items():
        print(f"| {name} | " + " | ".join(f"{rows[c][0]:.0f} | {rows[c][1] * 1000:.0f} ms" for c in levels) + " |")
    base = ours[levels[0]][0]
    for c in levels[1:]:
        print(f"londinium c={c} / its own c={levels[0]}: {ours[c][0] / base:.2f}x throughput "
              f"(the engine alone: {results[ENGINE][c][0] / results[ENGINE][levels[0]][0]:.2f}x)")
    for c in levels:
        print(f"londinium serve / the engine alone at c={c}: {ours[c][0] / results[ENGINE][c][0]:.2f}x")
    for name, rows in results.items():
        if name in ("londinium serve", ENGINE):
            continue
        for c in levels:
            print(f"londinium / {name} at c={c}: {ours[c][0] / rows[c][0]:.2f}x throughput, "
                  f"TTFT p50 {ours[c][1] * 1000:.0f} vs {rows[c][1] * 1000:.0f} ms")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
