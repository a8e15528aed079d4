"""The gateway's PII guardrail and exact cache against LiteLLM's Presidio guardrail and in-memory cache,
on the same requests in the same run: the latency each adds, and what each lets through to the backend.

    python benchmarks/gateway_pii_peer.py [--litellm PATH] [--requests 300] [--seed 0] [--json out.json]
    python benchmarks/gateway_pii_peer.py --quick      # 20 requests, LiteLLM only if installed

Everything runs on 127.0.0.1 as its own process: the canned upstream (benchmarks/gateway_upstream.py,
answers at once and records the text it received), the gateway (a key, limits, the ledger, and the
chain `pii`, `cache`: emails, phones, cards, IBANs and IP addresses masked), and, when LiteLLM's
`litellm` command is given or on PATH, its proxy with its `presidio` guardrail (pre_call, the same
entities masked) and `cache: true` with the local in-memory cache. LiteLLM's guardrail calls Presidio
as REST services: benchmarks/presidio_service.py serves them with the analyzer the gateway uses, so
both find the same spans and what differs is the plumbing.

The requests are chat requests (temperature 0) holding labelled personal data, generated as in
benchmarks/gateway_pii.py. Each goes to every target in turn (the upstream directly, the gateway,
LiteLLM), first as a miss, then once more after at most 50 others (a cache hit for the gateway and
LiteLLM: LiteLLM's in-memory cache holds 200 entries, a bound its proxy config cannot raise). It prints per
target and pass the latency p50/p95, the added latency over the direct call, the ratio gateway /
LiteLLM, and the share of labelled values that did not reach the upstream (a masked value is one
the upstream never saw).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from gateway_pii import sample  # noqa: E402
from servers import free_port, start, start_litellm, stop  # noqa: E402

HERE = Path(__file__).parent
# LiteLLM's in-memory cache keeps 200 entries (fixed: its proxy config cannot raise it), so each request is
# repeated after at most BLOCK others, and its hit is not lost to that bound.
BLOCK = 50
ENTITIES = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS"]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def start_all(work: Path, litellm: str | None) -> tuple[dict[str, str], dict[str, dict], list[subprocess.Popen]]:
    up_port, gw_port = free_port(), free_port()
    procs = [start([sys.executable, str(HERE / "gateway_upstream.py"), "--port", str(up_port), "--record", str(work / "received.jsonl")],
                   f"http://127.0.0.1:{up_port}", work / "upstream.log", 1)]
    upstream = f"http://127.0.0.1:{up_port}/v1"
    cfg = work / "gateway.toml"
    cfg.write_text(f'[gateway]\nport = {gw_port}\nhealth_interval_s = 0\nrequest_log = "{work / "requests.jsonl"}"\n'
                   'chain = ["auth", "usage", "limits", "route", "pii", "cache", "upstream"]\n'
                   f'[pii.actions]\n' + "".join(f'{e} = "mask"\n' for e in ENTITIES) +
                   f'[[backends]]\nname = "up"\nbase_url = "{upstream}"\nmodel = "up"\n[[routes]]\nalias = "m"\nbackends = ["up"]\n')
    made = subprocess.run([sys.executable, "-m", "londinium", "gateway", "keys", "create", "bench", "--config", str(cfg)],
                          capture_output=True, text=True, check=True)
    secret = made.stdout.strip().splitlines()[-1]
    procs.append(start([sys.executable, "-m", "londinium", "gateway", "--config", str(cfg)], f"http://127.0.0.1:{gw_port}",
                       work / "gateway.log", 1, ready="/health"))
    targets = {"direct": upstream, "gateway": f"http://127.0.0.1:{gw_port}/v1"}
    headers = {"direct": {}, "gateway": {"Authorization": f"Bearer {secret}"}}
    if litellm:
        pr_port = free_port()
        procs.append(start([sys.executable, str(HERE / "presidio_service.py"), "--port", str(pr_port)], f"http://127.0.0.1:{pr_port}",
                           work / "presidio.log", 1, ready="/health"))
        presidio = f"http://127.0.0.1:{pr_port}/"
        proc, targets["litellm"] = start_litellm(litellm, (
            "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/up\n"
            f"      api_base: {upstream}\n      api_key: unused\n"
            "guardrails:\n  - guardrail_name: presidio-pii\n    litellm_params:\n      guardrail: presidio\n      mode: pre_call\n"
            f"      default_on: true\n      presidio_analyzer_api_base: {presidio}\n      presidio_anonymizer_api_base: {presidio}\n"
            "      pii_entities_config:\n" + "".join(f"        {e}: MASK\n" for e in ENTITIES) +
            "litellm_settings:\n  cache: true\n  cache_params:\n    type: local\n"
            "general_settings:\n  master_key: sk-bench\n"), work)
        procs.append(proc)
        headers["litellm"] = {"Authorization": "Bearer sk-bench"}
    return targets, headers, procs


def run(targets: dict[str, str], headers: dict[str, dict], samples: list, received: Path) -> dict:
    """Every sample to every target, twice; per (target, pass): latencies, and labelled values the upstream saw."""
    out: dict = {f"{t}/{p}": {"seconds": [], "values": 0, "leaked": 0, "upstream_calls": 0} for t in targets for p in ("miss", "hit")}
    seen = len(received.read_text(encoding="utf-8").splitlines())  # lines of earlier runs are not this run's
    blocks = [samples[i:i + BLOCK] for i in range(0, len(samples), BLOCK)]
    with httpx.Client(timeout=60) as client:
        for block, p in ((b, p) for b in blocks for p in ("miss", "hit")):
            for text, labels in block:
                body = {"model": "m", "messages": [{"role": "user", "content": text}], "temperature": 0, "max_tokens": 16}
                for t, url in targets.items():
                    start_s = time.perf_counter()
                    r = client.post(url + "/chat/completions", json={**body, "model": "up" if t == "direct" else "m"}, headers=headers[t])
                    out[f"{t}/{p}"]["seconds"].append(time.perf_counter() - start_s)
                    if r.status_code != 200:
                        raise SystemExit(f"{t}: HTTP {r.status_code}: {r.text[:300]}")
                    lines = received.read_text(encoding="utf-8").splitlines()
                    got, seen = [json.loads(x) for x in lines[seen:]], len(lines)
                    row = out[f"{t}/{p}"]
                    row["upstream_calls"] += len(got)
                    if got:
                        values = [text[s:e] for _, s, e in labels]
                        row["values"] += len(values)
                        row["leaked"] += sum(any(v in g for g in got) for v in values)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--litellm", default=shutil.which("litellm"), help="LiteLLM's `litellm` command (default: on PATH)")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--quick", action="store_true", help="20 requests, for the tests")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    samples = [sample(rng) for _ in range(20 if args.quick else args.requests)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "received.jsonl").touch()
        targets, headers, procs = start_all(work, args.litellm)
        try:
            run(targets, headers, samples[:5], work / "received.jsonl")  # warm-up, on requests the runs below do not repeat
            rng2 = random.Random(args.seed + 1)
            samples = [sample(rng2) for _ in samples]
            out = run(targets, headers, samples, work / "received.jsonl")
        finally:
            for proc in reversed(procs):
                stop(proc)
    print(f"{len(samples)} chat requests with {sum(len(lb) for _, lb in samples)} labelled values (seed {args.seed}); "
          f"targets: {', '.join(targets)}" + ("" if "litellm" in targets else " (LiteLLM not found: pass --litellm)"))
    print(f"{'target/pass':<16}{'p50 ms':>9}{'p95 ms':>9}{'added p50':>11}{'added p95':>11}{'upstream calls':>16}{'values seen upstream':>22}")
    figures = {}
    for key, row in out.items():
        t, p = key.split("/")
        direct = out[f"direct/{p}"]["seconds"]
        added50 = 1000 * (pct(row["seconds"], 0.5) - pct(direct, 0.5))
        added95 = 1000 * (pct(row["seconds"], 0.95) - pct(direct, 0.95))
        figures[key] = {"p50_ms": 1000 * pct(row["seconds"], 0.5), "p95_ms": 1000 * pct(row["seconds"], 0.95), "added_p50_ms": added50,
                        "added_p95_ms": added95, "upstream_calls": row["upstream_calls"], "values": row["values"], "leaked": row["leaked"]}
        seen = f"{row['leaked']}/{row['values']}" if row["values"] else "-"
        print(f"{key:<16}{figures[key]['p50_ms']:>9.2f}{figures[key]['p95_ms']:>9.2f}{added50:>11.2f}{added95:>11.2f}"
              f"{row['upstream_calls']:>16}{seen:>22}")
    if "litellm" in targets:
        for p in ("miss", "hit"):
            g, lt = figures[f"gateway/{p}"], figures[f"litellm/{p}"]
            print(f"{p}: gateway / litellm added p50 {g['added_p50_ms'] / lt['added_p50_ms']:.3f}, "
                  f"added p95 {g['added_p95_ms'] / lt['added_p95_ms']:.3f}")
    for t in targets:
        if t != "direct":
            row = figures[f"{t}/miss"]
            print(f"{t}: PII recall (labelled values the upstream never saw) {1 - row['leaked'] / max(1, row['values']):.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
