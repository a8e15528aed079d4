"""What `londinium gateway` adds in front of an upstream, against LiteLLM's proxy in front of the same
upstream, in the same run: added latency (sequential, non-streaming, p50/p99), added time to the
first stream chunk, latency and errors at a fixed request rate, usage and cost discrepancies between
what clients saw and the ledger, and the gateway's RSS over a soak.

    python benchmarks/gateway_overhead.py [--litellm PATH] [--requests 500] [--rate 200] [--rate-seconds 20]
                                          [--ledger-requests 10000] [--soak-seconds 600] [--json out.json]
    python benchmarks/gateway_overhead.py --quick      # the short run tests/integration/test_gateway_benchmark.py does

All processes run on 127.0.0.1: the canned upstream (benchmarks/gateway_upstream.py, answers at
once), the gateway (a key, limits and the SQLite ledger, as deployed), and LiteLLM's proxy when its
`litellm` command is given or on PATH (`pip install 'litellm[proxy]'`; run with a master key and no
database, so it checks no virtual key and writes no spend log: less work than the gateway does).
Requests go round-robin to the three targets, so load on the machine falls on all alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from servers import free_port, start, start_litellm, stop  # noqa: E402

HERE = Path(__file__).parent
BODY = {"model": "m", "prompt": "one two three four", "max_tokens": 16}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def start_all(work: Path, litellm: str | None) -> tuple[dict[str, str], list, str, subprocess.Popen]:
    up_port, gw_port = free_port(), free_port()
    procs = [start([sys.executable, str(HERE / "gateway_upstream.py"), "--port", str(up_port)],
                   f"http://127.0.0.1:{up_port}", work / "upstream.log", 1)]
    upstream = f"http://127.0.0.1:{up_port}/v1"
    cfg = work / "gateway.toml"
    cfg.write_text(f'[gateway]\nport = {gw_port}\nrequest_log = "{work / "requests.jsonl"}"\nhealth_interval_s = 0\n'
                   f'[[backends]]\nname = "up"\nbase_url = "{upstream}"\nmodel = "up"\ninput_price = 0.5\noutput_price = 1.5\n'
                   '[[routes]]\nalias = "m"\nbackends = ["up"]\n')
    made = subprocess.run([sys.executable, "-m", "londinium", "gateway", "keys", "create", "bench", "--rpm", "10000000",
                           "--tpm", "1000000000", "--config", str(cfg)], capture_output=True, text=True, check=True)
    secret = made.stdout.strip().splitlines()[-1]
    gateway = start([sys.executable, "-m", "londinium", "gateway", "--config", str(cfg)], f"http://127.0.0.1:{gw_port}",
                    work / "gateway.log", 1, ready="/health")
    procs.append(gateway)
    targets = {"direct": upstream, "gateway": f"http://127.0.0.1:{gw_port}/v1"}
    if litellm:
        proc, targets["litellm"] = start_litellm(litellm, "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/up\n"
                                                 f"      api_base: {upstream}\n      api_key: unused\ngeneral_settings:\n  master_key: sk-bench\n", work)
        procs.append(proc)
    return targets, procs, secret, gateway


def keys(secret: str) -> dict[str, dict[str, str]]:
    return {"direct": {}, "gateway": {"Authorization": f"Bearer {secret}"}, "litellm": {"Authorization": "Bearer sk-bench"}}


def sequential(targets: dict[str, str], headers: dict, n: int, stream: bool) -> dict[str, list[float]]:
    """Seconds per request (to the first content chunk when streaming), round-robin over the targets."""
    clients = {t: httpx.Client(headers=headers[t], timeout=30) for t in targets}
    out: dict[str, list[float]] = {t: [] for t in targets}
    body = {**BODY, "stream": stream}
    for i in range(n + 20):  # the first 20 rounds warm connections and caches
        for t, url in targets.items():
            st = time.perf_counter()
            if stream:
                with clients[t].stream("POST", url + "/completions", json=body) as r:
                    assert r.status_code == 200, (t, r.read())
                    took = None
                    for line in r.iter_lines():  # read to the end; the clock stops at the first text
                        if took is None and line.startswith("data:") and '"text"' in line:
                            took = time.perf_counter() - st
            else:
                r = clients[t].post(url + "/completions", json=body)
                assert r.status_code == 200, (t, r.text)
                took = time.perf_counter() - st
            if i >= 20:
                out[t].append(took)
    return out


async def at_rate(url: str, headers: dict, rate: float, seconds: float) -> tuple[list[float], int]:
    """Open-loop arrivals every 1/rate s for `seconds`: latencies and the count of failed requests."""
    latencies, errors = [], 0
    async with httpx.AsyncClient(headers=headers, timeout=30, limits=httpx.Limits(max_connections=400)) as client:
        async def one() -> None:
            nonlocal errors
            st = time.perf_counter()
            try:
                r = await client.post(url + "/completions", json=BODY)
                if r.status_code != 200:
                    errors += 1
                    return
            except httpx.HTTPError:
                errors += 1
                return
            latencies.append(time.perf_counter() - st)

        tasks, start_t = [], time.perf_counter()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start_t + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return latencies, errors


async def ledger_run(url: str, headers: dict, n: int, concurrency: int = 16) -> list[tuple[str, int, int]]:
    """`n` mixed requests (JSON, stream with usage, stream without: the chunks counted): (request id, prompt, completion) as seen."""
    seen: list[tuple[str, int, int]] = []
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(headers=headers, timeout=60) as client:
        async def one(i: int) -> None:
            body = {**BODY, "prompt": "w " * (1 + i % 7), "max_tokens": 1 + i % 16}
            async with sem:
                if i % 3 == 0:
                    r = await client.post(url + "/completions", json=body)
                    u = r.json()["usage"]
                    seen.append((r.headers["x-londinium-request-id"], u["prompt_tokens"], u["completion_tokens"]))
                    return
                body.update(stream=True, **({"stream_options": {"include_usage": True}} if i % 3 == 1 else {}))
                async with client.stream("POST", url + "/completions", json=body) as r:
                    chunks, usage = 0, None
                    async for line in r.aiter_lines():
                        if line.startswith("data: {"):
                            c = json.loads(line[6:])
                            usage = c.get("usage") or usage
                            chunks += sum(1 for ch in c.get("choices", []) if ch.get("text"))
                    prompt = usage["prompt_tokens"] if usage else len(body["prompt"].split())
                    seen.append((r.headers["x-londinium-request-id"], prompt, usage["completion_tokens"] if usage else chunks))

        await asyncio.gather(*(one(i) for i in range(n)))
    return seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--litellm", default=shutil.which("litellm"), help="LiteLLM's `litellm` command (default: on PATH)")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--rate-seconds", type=float, default=20.0)
    ap.add_argument("--ledger-requests", type=int, default=10000)
    ap.add_argument("--soak-seconds", type=float, default=600.0)
    ap.add_argument("--quick", action="store_true", help="a short run: 30 requests, 2 s at 50/s, 150 ledger requests, "
                    "no soak unless --soak-seconds follows")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.rate, args.rate_seconds, args.ledger_requests = 30, 50.0, 2.0, 150
        args.soak_seconds = args.soak_seconds if "--soak-seconds" in sys.argv else 0.0
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    targets, procs, secret, gateway = start_all(work, args.litellm)
    headers = keys(secret)
    figures: dict = {"targets": list(targets)}
    try:
        for kind, stream in (("json", False), ("stream", True)):
            times = sequential(targets, headers, args.requests, stream)
            for t, xs in times.items():
                figures[f"{kind}_{t}_p50_ms"], figures[f"{kind}_{t}_p99_ms"] = pct(xs, 0.5) * 1e3, pct(xs, 0.99) * 1e3
            for t in targets:
                if t != "direct":
                    for q in ("p50", "p99"):
                        figures[f"{kind}_{t}_added_{q}_ms"] = figures[f"{kind}_{t}_{q}_ms"] - figures[f"{kind}_direct_{q}_ms"]
        for t, url in targets.items():
            lat, errors = asyncio.run(at_rate(url, headers[t], args.rate, args.rate_seconds))
            figures[f"rate_{t}_p50_ms"], figures[f"rate_{t}_p99_ms"], figures[f"rate_{t}_errors"] = pct(lat, 0.5) * 1e3, pct(lat, 0.99) * 1e3, errors
        seen = asyncio.run(ledger_run(targets["gateway"], headers["gateway"], args.ledger_requests))
        if args.soak_seconds:  # RSS after a first batch (allocator pools warm), then at the end
            soak_end = time.monotonic() + args.soak_seconds
            soaked = len(asyncio.run(ledger_run(targets["gateway"], headers["gateway"], 600)))
            rss0 = psutil.Process(gateway.pid).memory_info().rss
            while time.monotonic() < soak_end:
                soaked += len(asyncio.run(ledger_run(targets["gateway"], headers["gateway"], 600)))
            rss1 = psutil.Process(gateway.pid).memory_info().rss
            figures.update(soak_requests=soaked, rss_start_mb=rss0 / 2**20, rss_end_mb=rss1 / 2**20, rss_growth=(rss1 - rss0) / rss0)
    finally:
        for p in reversed(procs):
            stop(p)
    sys.path.insert(0, str(HERE.parent / "src"))
    from londinium.gateway.store import Store

    store = Store(str(work / "gateway.db"))
    rows = {r["request_id"]: r for r in store.ledger()}
    store.close()
    bad = [s for s in seen if s[0] not in rows or (rows[s[0]]["prompt_tokens"], rows[s[0]]["completion_tokens"]) != s[1:]
           or abs(rows[s[0]]["cost"] - (s[1] * 0.5 + s[2] * 1.5) / 1e6) > 1e-12]
    figures.update(ledger_requests=len(seen), ledger_discrepancies=len(bad))
    report(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    shutil.rmtree(work, ignore_errors=True)


def report(f: dict) -> None:
    for kind, what in (("json", "sequential, non-streaming"), ("stream", "time to first chunk")):
        print(f"{what}:")
        for t in f["targets"]:
            added = "" if t == "direct" else f"  added p50 {f[f'{kind}_{t}_added_p50_ms']:+.2f} ms  p99 {f[f'{kind}_{t}_added_p99_ms']:+.2f} ms"
            print(f"  {t:<8} p50 {f[f'{kind}_{t}_p50_ms']:7.2f} ms  p99 {f[f'{kind}_{t}_p99_ms']:7.2f} ms{added}")
        if "litellm" in f["targets"]:
            for q in ("p50", "p99"):
                ours, theirs = f[f"{kind}_gateway_added_{q}_ms"], f[f"{kind}_litellm_added_{q}_ms"]
                f[f"{kind}_added_{q}_ratio"] = ours / theirs if theirs > 0 else float("nan")
                print(f"  gateway / litellm added {q}: {f[f'{kind}_added_{q}_ratio']:.3f}")
    print("at a fixed rate:")
    for t in f["targets"]:
        print(f"  {t:<8} p50 {f[f'rate_{t}_p50_ms']:7.2f} ms  p99 {f[f'rate_{t}_p99_ms']:7.2f} ms  errors {f[f'rate_{t}_errors']}")
    print(f"ledger: {f['ledger_discrepancies']} discrepancies in {f['ledger_requests']:,} mixed requests")
    if "rss_growth" in f:
        print(f"gateway RSS over a {f['soak_requests']:,}-request soak: {f['rss_start_mb']:.1f} MB -> {f['rss_end_mb']:.1f} MB "
              f"({f['rss_growth']:+.2%})")


if __name__ == "__main__":
    main()
