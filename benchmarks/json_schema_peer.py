"""JSON-schema-constrained decode through the server, against llama.cpp's server on the same weights.

    .venv/bin/python benchmarks/json_schema_peer.py -w londinium-work --run main [--requests 16] [--rounds 5]

`londinium serve` over the run and llama.cpp's OpenAI-compatible server (`python -m llama_cpp.server`,
`pip install 'llama-cpp-python[server]'`) over the run's GGUF export, both on 127.0.0.1 with the same
thread count. Each gets the same `/v1/completions` requests one at a time (batch 1: llama-cpp-python's
server decodes one request at a time), sampled (temperature 1, seeded), `--new` tokens each, with
and without a JSON Schema: londinium through `response_format: {"type": "json_schema", ...}` (its
extension of the completions API), llama.cpp through `grammar`, the GBNF that its own converter
(`json_schema_to_gbnf`, what its server runs for a chat `response_format` with a schema) makes of
the same schema. The schema cannot complete in fewer than `--new` tokens (at least 256 items), so
every request decodes `--new` tokens on both servers and the timings compare. Servers and modes
alternate request by request within each round, so load from elsewhere falls on all alike.

Printed per server: tokens/s free and constrained (medians over rounds), the constraint's overhead,
and londinium's constrained tokens/s over llama.cpp's.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from servers import free_port, start, stop

SCHEMA = {"type": "array", "minItems": 256, "items": {"type": "string"}}  # never complete early (see above)
PROMPT = "The names of the players are"


def main() -> None:
    from londinium.config import Config
    from londinium.export.run import export_run
    from londinium.model.load import load_run
    from londinium.workspace import Workspace

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workspace", "-w", default="londinium-work")
    ap.add_argument("--run", default="main")
    ap.add_argument("--requests", type=int, default=16, help="requests per server, mode and round")
    ap.add_argument("--new", type=int, default=64, help="tokens decoded per request")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="threads of each server")
    ap.add_argument("--quick", action="store_true", help="toy sizes, one round: that the script runs, not its figures")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.new, args.rounds = 2, 8, 1
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("starlette_context") is None:
        raise SystemExit("needs llama.cpp's server: pip install 'llama-cpp-python[server]'")
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    ws = Workspace(args.workspace)
    context = load_run(ws, run=args.run).config.model.context
    tmp = Path(tempfile.mkdtemp(prefix="json-schema-peer-"))
    gguf = export_run(ws, Config(), run=args.run, fmt="gguf", out=tmp / "model.gguf", log=lambda m: None)
    py = sys.executable
    servers = {
        "londinium": [py, "-m", "londinium", "serve", "-w", str(ws.root), "--run", args.run, "--port", "PORT",
                      "--set", f"serve.threads={args.threads}"],
        "llama.cpp": [py, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", "PORT",
                      "--n_threads", str(args.threads), "--n_ctx", str(context), "--interrupt_requests", "False"]}
    constrained = {"londinium": {"response_format": {"type": "json_schema", "json_schema": {"name": "names", "schema": SCHEMA}}},
                   "llama.cpp": {"grammar": json_schema_to_gbnf(json.dumps(SCHEMA))}}
    modes = [(name, mode) for name in servers for mode in ("free", "constrained")]
    rates: dict[tuple[str, str], list[float]] = {m: [] for m in modes}
    procs, urls = {}, {}
    try:
        for name, cmd in servers.items():
            port = free_port()
            urls[name] = f"http://127.0.0.1:{port}/v1/completions"
            procs[name] = start([str(port) if c == "PORT" else c for c in cmd], f"http://127.0.0.1:{port}", tmp / f"{name}.log",
                                args.threads)
        with httpx.Client(timeout=600) as client:
            for r in range(args.rounds):
                spent = {m: 0.0 for m in modes}
                tokens = {m: 0 for m in modes}
                for i in range(args.requests + (r == 0)):  # the first request of all is a warm-up
                    for name, mode in modes:
                        body = {"model": args.run, "prompt": PROMPT, "max_tokens": args.new, "temperature": 1.0, "seed": i,
                                **(constrained[name] if mode == "constrained" else {})}
                        t0 = time.perf_counter()
                        reply = client.post(urls[name], json=body)
                        elapsed = time.perf_counter() - t0
                        reply.raise_for_status()
                        out = reply.json()
                        n = out["usage"]["completion_tokens"]
                        if mode == "constrained" and (n < args.new or not out["choices"][0]["text"].startswith("[")):
                            raise SystemExit(f"{name}: a constrained reply is not a long JSON array ({n} tokens: "
                                             f"{out['choices'][0]['text'][:80]!r}): timings would not compare")
                        if r == 0 and i == 0:
                            continue
                        spent[name, mode] += elapsed
                        tokens[name, mode] += n
                for m in modes:
                    rates[m].append(tokens[m] / spent[m])
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        for proc in procs.values():
            stop(proc)
    med = {m: statistics.median(v) for m, v in rates.items()}
    print(f"\n{args.rounds} rounds x {args.requests} requests, batch 1, {args.new} tokens each, {args.threads} thread(s) "
          f"per server, schema {json.dumps(SCHEMA)}; medians over rounds\n")
    print("| server | free tok/s | constrained tok/s | overhead of the schema |")
    print("|---|---:|---:|---:|")
    for name in servers:
        over = statistics.median(f / c - 1 for f, c in zip(rates[name, "free"], rates[name, "constrained"]))
        print(f"| {name} | {med[name, 'free']:.0f} | {med[name, 'constrained']:.0f} | {over:.1%} |")
    ratio = statistics.median(a / b for a, b in zip(rates["londinium", "constrained"], rates["llama.cpp", "constrained"]))
    print(f"\nlondinium / llama.cpp, constrained tokens/s: {ratio:.2f}x")


if __name__ == "__main__":
    main()
