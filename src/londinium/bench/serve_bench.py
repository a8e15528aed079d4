"""`londinium bench serve`: load an OpenAI-compatible server and measure it as `vllm bench serve` does.

Each request is a streamed POST /v1/completions (`stream_options.include_usage`), timed on the
client: TTFT is the time to the first chunk that carries a choice, ITL the gaps between later
chunks, E2EL the time to the last one, TPOT (E2EL - TTFT) / (output tokens - 1), with the output
tokens taken from the server's `usage`. Request, output-token and total-token throughput divide by
the wall time of the level (warm-up excluded); goodput counts only the requests that meet every SLO
given (`ttft:500 tpot:50`, milliseconds). The definitions are vLLM's (benchmarks/serve.py), so the
figures compare with the ones the field publishes.

Load shapes, per level of a sweep: a concurrency cap (a semaphore) and arrivals that are all at once
(`request_rate` inf) or a gamma process of mean rate R and shape `burstiness` (1 is Poisson).
Prompts are windows of the workspace's held-out split (`corpus/val.jsonl`), cut to the input length
with the workspace tokenizer, or the rows of a JSONL file. Output lengths are fixed with vLLM's
`ignore_eos` where the server accepts that field (a probe request decides). Each request
(`stream.py`) has a total deadline (`--timeout`) and checks every chunk: whatever a server sends, a
bad answer is a failed request with its reason, never a crash or a hang.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import httpx
import numpy as np
from londinium.progress import progress

from londinium.bench.stream import RequestRecord, read_bounded, stream_completion
from londinium.errors import LondiniumError

SLO_METRICS = ("ttft", "tpot", "e2el")
MODELS_BYTES = 1 << 20  # what is read of GET /models: a list of ids, not megabytes
PERCENTILES = (50, 90, 99)


class BenchError(LondiniumError):
    """A benchmark cannot start: a bad flag, a missing prompt file, a server that lists no model."""


# ---- what is measured (one request: RequestRecord, in stream.py) ---------------------------------


def parse_levels(concurrency: str | None, max_concurrency: int | None, request_rate: float | None) -> list[Level]:
    """The sweep: `--concurrency 1,4,16` (one level each), else one level of `--max-concurrency`;
    `--request-rate` (requests/s, default all at once) applies to every level."""
    rate = math.inf if request_rate is None else request_rate
    if not (rate > 0):
        raise BenchError(f"--request-rate {request_rate}: must be > 0 requests per second (omit it to send all at once)")
    if concurrency is not None and max_concurrency is not None:
        raise BenchError("--concurrency (a sweep) and --max-concurrency (one level) exclude each other; give one")
    if concurrency is None:
        caps: list[int | None] = [max_concurrency]
    else:
        try:
            caps = [int(c) for c in concurrency.split(",")]
        except ValueError:
            caps = [0]
    if any(c is not None and c < 1 for c in caps):
        flag = f"--concurrency {concurrency}" if concurrency is not None else f"--max-concurrency {max_concurrency}"
        raise BenchError(f"{flag}: give integers >= 1, comma-separated (e.g. 1,4,16)")
    return [Level(c, rate) for c in caps]


def parse_goodput(items: Sequence[str]) -> dict[str, float]:
    """`["ttft:500", "tpot:50"]` -> {"ttft": 500.0, "tpot": 50.0} (milliseconds)."""
    slos: dict[str, float] = {}
    for item in items:
        name, _, value = item.partition(":")
        try:
            ms = float(value)
        except ValueError:
            ms = math.nan
        if name not in SLO_METRICS or not math.isfinite(ms) or ms <= 0:
            raise BenchError(f"--goodput {item!r}: write METRIC:MILLISECONDS with METRIC one of "
                             f"{', '.join(SLO_METRICS)} and a positive number, e.g. ttft:500")
        slos[name] = ms
    return slos


def meets_slos(r: RequestRecord, slos: dict[str, float]) -> bool:
    """vLLM's rule: every SLO given holds (value <= SLO, in ms); a one-token answer's TPOT is 0."""
    values = {"ttft": r.ttft, "tpot": r.tpot or 0.0, "e2el": r.latency}
    return r.success and all(values[k] * 1000 <= ms for k, ms in slos.items())


def stats_ms(values_s: Sequence[float]) -> dict[str, float]:
    """Mean, median, p90, p99 (and std) in milliseconds; numpy's linear percentiles, as vLLM."""
    if not values_s:
        return {"mean": 0.0, "median": 0.0, "p90": 0.0, "p99": 0.0, "std": 0.0}
    a = np.asarray(values_s, dtype=float) * 1000
    p50, p90, p99 = np.percentile(a, PERCENTILES)
    return {"mean": float(a.mean()), "median": float(p50), "p90": float(p90), "p99": float(p99), "std": float(a.std())}


def summarize(records: Sequence[RequestRecord], duration_s: float, slos: dict[str, float] | None = None) -> dict[str, Any]:
    """A level's figures, vLLM's definitions: throughputs over the level's wall time, latency
    percentiles over the successful requests, goodput over the ones that meet every SLO."""
    ok = [r for r in records if r.success]
    duration_s = max(duration_s, 1e-9)
    total_in = sum(r.prompt_tokens for r in ok)
    total_out = sum(r.output_tokens for r in ok)
    out: dict[str, Any] = {
        "completed": len(ok),
        "failed": len(records) - len(ok),
        "errors": dict(Counter(r.error for r in records if not r.success).most_common()),
        "duration_s": duration_s,
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(ok) / duration_s,
        "output_throughput": total_out / duration_s,
        "total_token_throughput": (total_in + total_out) / duration_s,
        "goodput": sum(meets_slos(r, slos) for r in ok) / duration_s if slos else None,
        "ttft_ms": stats_ms([r.ttft for r in ok]),
        "tpot_ms": stats_ms([t for r in ok if (t := r.tpot) is not None]),
        "itl_ms": stats_ms([g for r in ok for g in r.itl]),
        "e2el_ms": stats_ms([r.latency for r in ok]),
        "usage_reported": sum(r.usage for r in ok),
        "finish_reasons": dict(Counter(r.finish_reason or "none" for r in ok).most_common()),
    }
    checked_in = [r for r in ok if r.usage and r.expected_prompt_tokens is not None]
    checked_out = [r for r in ok if r.expected_output_tokens is not None]
    checked_text = [r for r in ok if r.usage and r.text_tokens is not None]
    out["token_check"] = {
        "prompt_checked": len(checked_in),
        "prompt_matched": sum(r.prompt_tokens == r.expected_prompt_tokens for r in checked_in),
        "output_checked": len(checked_out),
        "output_matched": sum(r.output_tokens == r.expected_output_tokens for r in checked_out),
        # the returned text re-encoded: equal for a server with our tokenizer, unless the model chose
        # a non-canonical split of some text (rare; a tokenizer that is not ours differs nearly always)
        "text_checked": len(checked_text),
        "text_matched": sum(r.output_tokens == r.text_tokens for r in checked_text),
    }
    return out


# ---- prompts -------------------------------------------------------------------------------------


@dataclass
class BenchPrompt:
    text: str
    output_len: int
    prompt_tokens: int | None = None  # our tokenizer's count of `text`, when a workspace tokenizer is there


def _lengths(rng: random.Random, mean: int, range_ratio: float, n: int) -> list[int]:
    """Uniform in [mean * (1 - r), mean * (1 + r)], at least 1: vLLM's --random-range-ratio."""
    lo, hi = max(1, math.floor(mean * (1 - range_ratio))), max(1, math.ceil(mean * (1 + range_ratio)))
    return [rng.randint(lo, hi) for _ in range(n)]


def held_out_prompts(ws: Any, n: int, input_len: int, output_len: int, range_ratio: float, seed: int) -> list[BenchPrompt]:
    """`n` windows of the workspace's val split, each `input_len` (sampled) tokens long."""
    from londinium.files import read_jsonl, require_file
    from londinium.tokenizer.codec import decode, encode, encode_batch, load_tokenizer

    val = require_file(ws.corpus_split("val"), "the held-out split", BenchError,
                       hint="run `londinium corpus build`, or pass --prompts FILE.jsonl")
    tok = load_tokenizer(ws)
    rng = random.Random(seed)
    stream: list[int] = []
    texts = [row.get("text", "") for row in read_jsonl(val)]
    rng.shuffle(texts)
    in_lens, out_lens = _lengths(rng, input_len, range_ratio, n), _lengths(rng, output_len, range_ratio, n)
    need = max(in_lens) * 4 + sum(in_lens)  # enough distinct text for every window
    for start in range(0, len(texts), 64):
        for ids in encode_batch(tok, texts[start:start + 64]):
            stream.extend(ids)
        if len(stream) >= need:
            break
    if len(stream) <= max(in_lens):
        raise BenchError(f"{val} holds {len(stream)} tokens, fewer than a {max(in_lens)}-token prompt; lower --input-len")
    prompts = []
    for k, m in zip(in_lens, out_lens):
        at = rng.randrange(0, len(stream) - k)
        text = decode(tok, stream[at:at + k])
        prompts.append(BenchPrompt(text, m, len(encode(tok, text))))
    return prompts


def file_prompts(path: str | Path, n: int, output_len: int, range_ratio: float, seed: int, tok: Any = None) -> list[BenchPrompt]:
    """`n` rows drawn from a JSONL file of {"prompt": str, "output_len"?: int} (without replacement
    while it has rows, then again from the top)."""
    from londinium.files import loads_json, require_file
    from londinium.tokenizer.codec import encode

    path = require_file(path, "--prompts file", BenchError)
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = loads_json(line)
        except Exception:
            raise BenchError(f"{path}:{i}: not a JSON object; each line is {{\"prompt\": \"...\", \"output_len\": N}}") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"]:
            raise BenchError(f"{path}:{i}: needs a non-empty string field \"prompt\"")
        if "output_len" in row and not (isinstance(row["output_len"], int) and row["output_len"] >= 1):
            raise BenchError(f"{path}:{i}: output_len must be an integer >= 1")
        rows.append(row)
    if not rows:
        raise BenchError(f"{path} holds no prompts; each line is {{\"prompt\": \"...\"}}")
    rng = random.Random(seed)
    order: list[dict] = []
    while len(order) < n:
        order.extend(rng.sample(rows, len(rows)))
    lens = _lengths(rng, output_len, range_ratio, n)
    return [BenchPrompt(r["prompt"], r.get("output_len", m), len(encode(tok, r["prompt"])) if tok else None)
            for r, m in zip(order[:n], lens)]


# ---- the client ----------------------------------------------------------------------------------


@dataclass
class Level:
    """One point of a sweep: a concurrency cap (None: none) and an arrival rate (inf: all at once)."""

    max_concurrency: int | None = None
    request_rate: float = math.inf

    @property
    def label(self) -> str:
        parts = [] if math.isinf(self.request_rate) else [f"rate={self.request_rate:g}/s"]
        if self.max_concurrency is not None or not parts:
            parts.append(f"c={self.max_concurrency if self.max_concurrency is not None else 'inf'}")
        return " ".join(parts)


@dataclass
class BenchSpec:
    """Everything `londinium bench serve` was asked to do; written into results.json."""

    base_url: str
    model: str = ""
    levels: list[Level] = field(default_factory=lambda: [Level()])
    num_prompts: int = 32
    input_len: int = 64
    output_len: int = 32
    range_ratio: float = 0.0
    prompts_file: str = ""
    seed: int = 0
    warmup: int = 1
    burstiness: float = 1.0
    goodput: dict[str, float] = field(default_factory=dict)
    timeout_s: float = 600.0
    name: str = "serve"

    def validate(self) -> BenchSpec:
        """Raise BenchError naming the first flag out of range; return self."""
        if not self.base_url.startswith(("http://", "https://")):
            raise BenchError(f"--base-url {self.base_url!r}: give the server's OpenAI base URL, e.g. http://127.0.0.1:8000/v1")
        for flag in ("num_prompts", "input_len", "output_len"):
            if getattr(self, flag) < 1:
                raise BenchError(f"--{flag.replace('_', '-')} {getattr(self, flag)}: must be >= 1")
        checks = [(self.warmup >= 0, "--warmup", "must be >= 0"), (0 <= self.range_ratio < 1, "--range-ratio", "must be in [0, 1)"),
                  (self.burstiness > 0, "--burstiness", "must be > 0"), (self.timeout_s > 0, "--timeout", "must be > 0 seconds")]
        for ok, flag, rule in checks:
            if not ok:
                raise BenchError(f"{flag}: {rule}")
        return self


def _payload(spec: BenchSpec, model: str, p: BenchPrompt, ignore_eos: bool) -> dict:
    body = {"model": model, "prompt": p.text, "max_tokens": p.output_len, "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}}
    if ignore_eos:
        body["ignore_eos"] = True
    return body


async def _arrivals(n: int, rate: float, burstiness: float, rng: np.random.Generator):
    """Yield 0..n-1 spaced by gamma intervals of mean 1/rate (shape `burstiness`), or at once."""
    for i in range(n):
        yield i
        if not math.isinf(rate) and i < n - 1:
            await asyncio.sleep(rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness)))


async def run_level(client: httpx.AsyncClient, url: str, headers: dict, payloads: list[dict], expected: list[tuple],
                    level: Level, burstiness: float, seed: int, tok: Any = None,
                    deadline_s: float = 600.0) -> tuple[list[RequestRecord], float]:
    """Send `payloads` under the level's load shape, each with a total deadline of `deadline_s`;
    (records in send order, wall time in seconds)."""
    sem = asyncio.Semaphore(level.max_concurrency) if level.max_concurrency else None
    rng = np.random.default_rng(seed)
    bar = progress(total=len(payloads), desc=f"bench {level.label}", unit=" req", leave=False)

    async def one(i: int) -> RequestRecord:
        if sem is None:
            rec = await stream_completion(client, url, payloads[i], headers, tok, deadline_s)
        else:
            async with sem:
                rec = await stream_completion(client, url, payloads[i], headers, tok, deadline_s)
        rec.expected_prompt_tokens, rec.expected_output_tokens = expected[i]
        if rec.success and not rec.usage and rec.expected_prompt_tokens is not None:
            rec.prompt_tokens = rec.expected_prompt_tokens  # no usage from the server: our tokenizer's count
        bar.update(1)
        return rec

    start = time.perf_counter()
    tasks = [asyncio.create_task(one(i)) async for i in _arrivals(len(payloads), level.request_rate, burstiness, rng)]
    records = list(await asyncio.gather(*tasks))
    duration = time.perf_counter() - start
    bar.close()
    return records, duration


async def _resolve_model(client: httpx.AsyncClient, base: str, headers: dict, deadline_s: float) -> str:
    """The first model id of GET /models, read within the deadline and at most MODELS_BYTES of it."""

    async def first_id() -> str:
        async with client.stream("GET", f"{base}/models", headers=headers) as r:
            r.raise_for_status()
            model = json.loads(await read_bounded(r, MODELS_BYTES))["data"][0]["id"]
        if not isinstance(model, str) or not model:
            raise ValueError(f"the first model's id is {model!r}")
        return model

    try:
        return await asyncio.wait_for(first_id(), deadline_s)
    except Exception as e:
        reason = f"no answer within {deadline_s:g} s" if isinstance(e, asyncio.TimeoutError) else f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"  # httpx's texts span lines
        raise BenchError(f"cannot list the models at {base}/models ({reason}); pass --model NAME") from None


async def _probe_ignore_eos(client: httpx.AsyncClient, url: str, headers: dict, body: dict, deadline_s: float) -> bool:
    """Whether the server takes vLLM's `ignore_eos`: one 1-token request with it, and if that is
    refused with a 4xx, one without it. Unknown (both fail): send it, the failures are recorded."""
    probe = {**body, "max_tokens": 1, "ignore_eos": True}
    with_it = await stream_completion(client, url, probe, headers, deadline_s=deadline_s)
    if with_it.success or not with_it.error.startswith("HTTP 4"):
        return True
    probe.pop("ignore_eos")
    return not (await stream_completion(client, url, probe, headers, deadline_s=deadline_s)).success


async def bench_serve_async(spec: BenchSpec, prompts: list[BenchPrompt], api_key: str = "", tok: Any = None) -> dict[str, Any]:
    """Run the sweep; the results (spec, per-level figures and request records) as a dict."""
    base = spec.base_url.rstrip("/")
    url = f"{base}/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=httpx.Timeout(spec.timeout_s), limits=limits) as client:
        model = spec.model or await _resolve_model(client, base, headers, spec.timeout_s)
        warm, measured = prompts[:spec.warmup], prompts[spec.warmup:]
        ignore_eos = await _probe_ignore_eos(client, url, headers, _payload(spec, model, measured[0], False), spec.timeout_s)
        if warm:
            cap = spec.levels[0].max_concurrency or len(warm)
            await run_level(client, url, headers, [_payload(spec, model, p, ignore_eos) for p in warm],
                            [(None, None)] * len(warm), Level(cap), 1.0, spec.seed, deadline_s=spec.timeout_s)
        levels = []
        for i, level in enumerate(spec.levels):
            payloads = [_payload(spec, model, p, ignore_eos) for p in measured]
            expected = [(p.prompt_tokens, p.output_len if ignore_eos else None) for p in measured]
            records, duration = await run_level(client, url, headers, payloads, expected, level, spec.burstiness, spec.seed + i, tok,
                                                spec.timeout_s)
            summary = summarize(records, duration, spec.goodput)
            levels.append({"label": level.label, "max_concurrency": level.max_concurrency,
                           "request_rate": None if math.isinf(level.request_rate) else level.request_rate, **summary,
                           "requests": [{**asdict(r), "tpot": r.tpot} for r in records]})
    spec_dict = asdict(spec)
    spec_dict["levels"] = [{"max_concurrency": lv.max_concurrency,
                            "request_rate": None if math.isinf(lv.request_rate) else lv.request_rate} for lv in spec.levels]
    return {"name": spec.name, "base_url": spec.base_url, "model": model, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "ignore_eos": ignore_eos, "spec": spec_dict, "levels": levels}


def bench_serve(ws: Any, spec: BenchSpec, api_key: str = "") -> dict[str, Any]:
    """Draw the prompts (warm-up ones first), run the sweep, write bench/<name>/; return the results."""
    from londinium.bench.report import write_results

    spec.validate()
    ws.bench_dir(spec.name)  # a bad --name fails now, not after the run
    tok = None
    if ws.tokenizer_file.is_file():
        from londinium.tokenizer.codec import load_tokenizer

        tok = load_tokenizer(ws)
    n = spec.num_prompts + spec.warmup
    if spec.prompts_file:
        prompts = file_prompts(spec.prompts_file, n, spec.output_len, spec.range_ratio, spec.seed, tok)
    else:
        prompts = held_out_prompts(ws, n, spec.input_len, spec.output_len, spec.range_ratio, spec.seed)
    results = asyncio.run(bench_serve_async(spec, prompts, api_key, tok))
    write_results(ws, results)
    return results
