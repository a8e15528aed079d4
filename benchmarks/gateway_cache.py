"""What the exact cache costs and saves: hit latency against the miss path, with the in-process store
and with Redis, in the same run.

    python benchmarks/gateway_cache.py [--requests 500] [--stream] [--json out.json]
    python benchmarks/gateway_cache.py --quick      # the short run tests/integration/test_benchmarks.py does

All processes run on 127.0.0.1: the canned upstream of gateway_overhead.py (answers at once, so a miss
costs the gateway's round trip to a backend and nothing more: the ratio is the least a hit saves), and
one `londinium gateway` process per store ('memory', and 'redis' in front of a private redis-server
when one is installed; skipped, and said, when not). Each round sends N distinct deterministic
requests (all misses) and then the same N again (all hits), one at a time, and reads two figures:
the client's latency (end to end, HTTP included) and the `cache` step's own time from the gateway's
request log (the lookup and, for a hit, the whole answer: what the issue's "hit p50 <= 1 ms
in-process, <= 2 ms through Redis" is about).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from gateway_overhead import pct  # noqa: E402
from servers import free_port, start, stop  # noqa: E402

HERE = Path(__file__).parent


def start_redis(work: Path) -> tuple[subprocess.Popen | None, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        return None, ""
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(work), "--save", "",
                             "--appendonly", "no", "--logfile", str(work / "redis.log")])
    import redis

    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    return proc, f"redis://127.0.0.1:{port}/0"


def start_gateway(work: Path, upstream: str, store: str, redis_url: str) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    cfg, log = work / f"gateway-{store}.toml", work / f"requests-{store}.jsonl"
    cache = f'store = "{store}"\n' + (f'redis_url = "{redis_url}"\n' if store == "redis" else "")
    cfg.write_text(f'[gateway]\nport = {port}\nkeys_required = false\nhealth_interval_s = 0\nrequest_log = "{log}"\n'
                   'chain = ["auth", "usage", "limits", "route", "cache", "upstream"]\n'
                   f'[cache]\n{cache}'
                   f'[[backends]]\nname = "up"\nbase_url = "{upstream}"\nmodel = "up"\n'
                   '[[routes]]\nalias = "m"\nbackends = ["up"]\n')
    url = f"http://127.0.0.1:{port}"
    return start([sys.executable, "-m", "londinium", "gateway", "--config", str(cfg)], url, work / f"gateway-{store}.log", 1,
                 ready="/health"), url, log


def measure(url: str, log: Path, n: int, stream: bool, tag: str) -> dict[str, float]:
    """N misses then the same N as hits; client latency and the cache step's time, per decision."""
    bodies = [{"model": "m", "messages": [{"role": "user", "content": f"{tag} question {i}"}], "temperature": 0,
               "max_tokens": 16, "stream": stream} for i in range(n)]
    client_s: dict[str, list[float]] = {"miss": [], "hit": []}
    with httpx.Client(base_url=url, timeout=30) as c:
        c.post("/v1/chat/completions", json={**bodies[0], "messages": [{"role": "user", "content": "warm-up"}]}).read()
        for expect in ("miss", "hit"):
            for body in bodies:
                t = time.perf_counter()
                r = c.post("/v1/chat/completions", json=body)
                r.read()
                client_s[expect].append(time.perf_counter() - t)
                if r.status_code != 200 or r.headers.get("x-londinium-cache") != expect:
                    raise SystemExit(f"{tag}: expected a {expect}, got {r.status_code} {r.headers.get('x-londinium-cache')}: {r.text[:300]}")
    time.sleep(0.3)  # the request log is written as each request finishes
    step_s: dict[str, list[float]] = {"miss": [], "hit": []}
    for line in log.read_text().splitlines():
        record = json.loads(line)
        decision = record.get("outcome", {}).get("cache")
        if decision in step_s and "cache" in record.get("steps", {}):
            step_s[decision].append(record["steps"]["cache"])
    out = {}
    for decision in ("miss", "hit"):
        out[f"{tag}_{decision}_p50_ms"] = pct(client_s[decision], 0.5) * 1000
        out[f"{tag}_{decision}_p99_ms"] = pct(client_s[decision], 0.99) * 1000
    hits = step_s["hit"][-n:]
    out[f"{tag}_hit_step_p50_ms"] = pct(hits, 0.5) * 1000
    out[f"{tag}_hit_step_p99_ms"] = pct(hits, 0.99) * 1000
    out[f"{tag}_hit_over_miss_p50"] = out[f"{tag}_hit_p50_ms"] / out[f"{tag}_miss_p50_ms"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=500, help="distinct requests per round (each sent twice: miss, then hit)")
    p.add_argument("--stream", action="store_true", help="streamed requests (a hit replays the chunks)")
    p.add_argument("--quick", action="store_true", help="30 requests: the tests' run")
    p.add_argument("--json", default="", help="also write the figures here")
    args = p.parse_args()
    n = 30 if args.quick else args.requests
    figures: dict = {"requests": n, "stream": args.stream}
    with tempfile.TemporaryDirectory(prefix="londinium-cache-bench-") as tmp:
        work = Path(tmp)
        up_port = free_port()
        procs = [start([sys.executable, str(HERE / "gateway_upstream.py"), "--port", str(up_port)],
                       f"http://127.0.0.1:{up_port}", work / "upstream.log", 1)]
        try:
            redis_proc, redis_url = start_redis(work)
            if redis_proc is not None:
                procs.append(redis_proc)
            for store in ("memory", "redis"):
                if store == "redis" and redis_proc is None:
                    print("redis: skipped (no redis-server on PATH: apt-get install -y redis-server)")
                    continue
                gateway, url, log = start_gateway(work, f"http://127.0.0.1:{up_port}/v1", store, redis_url)
                procs.append(gateway)
                figures.update(measure(url, log, n, args.stream, store))
        finally:
            for proc in reversed(procs):
                stop(proc)
    report(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


def report(f: dict) -> None:
    print(f"{f['requests']} distinct {'streamed' if f['stream'] else 'JSON'} requests, each sent twice (miss, then hit), one at a time")
    print(f"{'store':<8} {'miss p50/p99 ms':>18} {'hit p50/p99 ms':>18} {'hit/miss p50':>13} {'cache step on a hit p50/p99 ms':>32}")
    for store in ("memory", "redis"):
        if f"{store}_hit_p50_ms" in f:
            print(f"{store:<8} {f[f'{store}_miss_p50_ms']:>8.2f} / {f[f'{store}_miss_p99_ms']:<7.2f} "
                  f"{f[f'{store}_hit_p50_ms']:>8.2f} / {f[f'{store}_hit_p99_ms']:<7.2f} {f[f'{store}_hit_over_miss_p50']:>13.2f} "
                  f"{f[f'{store}_hit_step_p50_ms']:>20.3f} / {f[f'{store}_hit_step_p99_ms']:.3f}")


if __name__ == "__main__":
    main()
