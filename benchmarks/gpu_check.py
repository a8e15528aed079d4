"""The GPU check: everything londinium claims about GPUs, measured in one run of about 8 minutes.

    python benchmarks/gpu_check.py                     # on a GPU machine: ./gpu-check-out/gpu_check.{json,md}
    python benchmarks/gpu_check.py --out DIR
    python benchmarks/gpu_check.py --env-only          # a first short call: versions, GPU, missing packages
    python benchmarks/gpu_check.py --dry-run           # the same code, shrunk to a CPU rehearsal (~1 min)

Needs torch (a CUDA build for the real run), transformers and londinium's own dependencies, and no
network: the model weights are random, the token data synthetic, the tokenizer trained on the spot.
It finds the project's `src/` next to this file, so the project need not be installed. Sections:

1. environment: Python, torch, CUDA, cuDNN, transformers, the GPU, bf16 support, and the peak
   FLOP/s that MFU divides by (`train.monitor.peak_flops`: the data sheet for known GPUs), next to
   a bf16 matmul measured here;
2. training: the `slm` preset's model (12 x 768, context 1024) under the trainer's precision
   (`device.resolve_precision("auto")`: bf16 autocast on GPUs with bf16), TF32 on
   (`device.configure_backends`), fused AdamW, gradient clipping and the schedule, eager and
   `torch.compile`d, at the preset's micro-batch and a larger one: tokens/s, MFU, peak memory, loss
   at the start and end (synthetic tokens from a fixed bigram chain, so the loss must fall towards
   ln 4), which SDPA kernels can run these shapes and which one ran (from the profiler's op names);
3. resume: the real `londinium train` CLI on a small synthetic workspace, N steps straight against
   the same run SIGKILLed after step k and resumed, with deterministic algorithms and
   CUBLAS_WORKSPACE_CONFIG set; "same" is stated in the output (every logged loss and the final
   weights bit for bit);
4. generation: decode tokens/s at batch 1, 8 and 64 of the `slm` shape, londinium's Engine against
   transformers' `generate` on the same weights (the pair `benchmarks/generate_speed.py` builds,
   its logits checked against ours first);
5. serving: when `londinium.serve` is in this build, the server under 1, 16 and 64 concurrent
   clients; otherwise the output says it is not available (and whether vLLM is installed).

Each section has a time cap and writes its results as soon as it ends, so a run cut short still
leaves what it measured. A section that fails records its error and the others still run; the exit
status is 1 if any failed, 2 if the environment cannot run the check at all.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if (ROOT / "src" / "londinium").is_dir():  # a checkout: use its code, installed or not
    sys.path.insert(0, str(ROOT / "src"))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
sys.path.insert(0, str(ROOT / "benchmarks"))  # generate_speed's model pair

SECTIONS = ("training", "resume", "generation", "serving")
# What each section imports; checked before anything runs, so a machine without them is told at once.
NEEDED = ["torch", "numpy", "tokenizers", "safetensors", "tqdm", "matplotlib", "tomli_w", "transformers"]


@dataclass(frozen=True)
class Plan:
    """Sizes and time caps of one check (FULL on a GPU, DRY on a CPU)."""

    train_model: dict[str, Any]
    train_batches: tuple[int, ...]
    train_steps: int  # per row, warm-up included
    train_warmup: int  # untimed steps at the start of each row (compilation happens in the first)
    train_lr: float
    compile: bool
    exact_sets: tuple[str, ...]  # --set overrides of the resume check's runs
    exact_steps: int
    exact_kill_at: int
    corpus_docs: int
    gen_model: dict[str, Any]
    gen_batches: tuple[int, ...]
    gen_prompt: int
    gen_new: int
    gen_rounds: int
    serve_concurrency: tuple[int, ...]
    serve_tokens: int
    # Seconds: the training and generation loops stop at their cap, each resume run is killed past its
    # cap, the serving levels stop starting past theirs. A compilation in progress is not cut short.
    caps_s: dict[str, float] = field(default_factory=dict)


def _exact_sets(model: dict[str, Any], steps: int, eval_every: int, batch: int, batch_tokens: int) -> tuple[str, ...]:
    return (*(f"model.{k}={v}" for k, v in model.items()), "model.dropout=0.1",  # dropout: the RNGs matter
            f"train.max_steps={steps}", f"train.eval_every={eval_every}", f"train.batch_size={batch}",
            f"train.batch_tokens={batch_tokens}", "train.warmup_steps=4", "train.learning_rate=3e-3",
            "train.eval_batches=2", "train.log_every=1", "train.keep_last=2", "train.threads=1")


def full_plan() -> Plan:
    from londinium.config import PRESETS

    slm = dict(PRESETS["slm"]["model"], vocab_size=PRESETS["slm"]["tokenizer"]["vocab_size"])
    small = dict(n_layer=4, n_head=4, n_embd=256, context=128)
    return Plan(train_model=slm, train_batches=(PRESETS["slm"]["train"]["batch_size"], 32), train_steps=300,
                train_warmup=30, train_lr=PRESETS["slm"]["train"]["learning_rate"], compile=True,
                exact_sets=_exact_sets(small, 24, 8, 8, 2048), exact_steps=24, exact_kill_at=12, corpus_docs=400,
                gen_model=slm, gen_batches=(1, 8, 64), gen_prompt=64, gen_new=128, gen_rounds=3,
                serve_concurrency=(1, 16, 64), serve_tokens=64,
                caps_s={"training": 270, "resume": 100, "generation": 70, "serving": 60})


def dry_plan() -> Plan:
    tiny = dict(n_layer=2, n_head=2, n_embd=64, context=64, vocab_size=512)
    return Plan(train_model=tiny, train_batches=(4, 8), train_steps=40, train_warmup=5, train_lr=3e-3, compile=False,
                exact_sets=_exact_sets(dict(n_layer=2, n_head=2, n_embd=64, context=32), 12, 4, 8, 512),
                exact_steps=12, exact_kill_at=6, corpus_docs=120,
                gen_model=tiny, gen_batches=(1, 8, 64), gen_prompt=16, gen_new=16, gen_rounds=2,
                serve_concurrency=(1, 4), serve_tokens=8,
                caps_s={"training": 40, "resume": 90, "generation": 30, "serving": 30})


# ---- small helpers ---------------------------------------------------------------------------------


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: Any) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _say(msg: str) -> None:
    print(f"[gpu_check] {msg}", flush=True)


# ---- 1. environment --------------------------------------------------------------------------------


def check_environment(dry_run: bool) -> dict[str, Any]:
    import torch

    from londinium.device import resolve_device, resolve_precision
    from londinium.train.monitor import GPU_PEAK_TFLOPS_16BIT, measure_matmul_flops, peak_flops

    device = resolve_device("auto")
    precision = resolve_precision("auto", device)
    env: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "transformers": _version("transformers"), "device": str(device), "precision": precision.describe(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        name = torch.cuda.get_device_name(device)
        env.update(gpu=name, gpu_count=torch.cuda.device_count(), capability=".".join(map(str, torch.cuda.get_device_capability(device))),
                   gpu_memory_gib=round(props.total_memory / 2**30, 1), bf16_supported=torch.cuda.is_bf16_supported(),
                   cudnn=torch.backends.cudnn.version(), driver_cuda=_nvidia_smi())
        known = next((t for k, t in GPU_PEAK_TFLOPS_16BIT if k in name), None)
        env["peak_source"] = f"data sheet, dense 16-bit ({known} TFLOP/s)" if known else "not on the data-sheet list: measured bf16 matmul"
        env["measured_bf16_matmul_tflops"] = round(measure_matmul_flops("cuda", torch.bfloat16, 1.0) / 1e12, 1)
    else:
        env.update(gpu=None, bf16_supported=False, peak_source="measured fp32 matmul (CPU: no data sheet)")
    env["peak_tflops"] = round(peak_flops(device, precision.dtype) / 1e12, 4)
    if device.type != "cuda" and not dry_run:
        env["problem"] = (f"torch {torch.__version__} sees no CUDA device (CUDA build: {torch.version.cuda}); "
                          "this check needs a GPU, or --dry-run for the CPU rehearsal")
    return env


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def _nvidia_smi() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# ---- 2. training throughput and MFU ----------------------------------------------------------------

SDPA_OPS = [  # aten op name (profiler) -> the kernel family it is, most specific first
    ("_scaled_dot_product_flash_attention_for_cpu", "flash (CPU)"),
    ("_scaled_dot_product_flash_attention", "flash"),
    ("_scaled_dot_product_efficient_attention", "memory-efficient"),
    ("_scaled_dot_product_cudnn_attention", "cuDNN"),
    ("_scaled_dot_product_fused_attention_overrideable", "fused (device-specific)"),
    ("_scaled_dot_product_attention_math", "math (unfused)"),
]


def bigram_batches(n: int, batch: int, T: int, vocab: int, seed: int = 0) -> Any:
    """`n` batches `[batch, T + 1]` from a fixed random bigram chain: next = perm[prev] + noise (0-3).
    A model can learn it from the embeddings alone, so its loss falls from ln(vocab) towards the
    chain's entropy, ln 4 = 1.39 nats, within a few hundred steps."""
    import torch

    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(vocab, generator=g)
    x = torch.empty(n, batch, T + 1, dtype=torch.long)
    x[..., 0] = torch.randint(0, vocab, (n, batch), generator=g)
    noise = torch.randint(0, 4, (n, batch, T), generator=g)
    for t in range(T):
        x[..., t + 1] = (perm[x[..., t]] + noise[..., t]) % vocab
    return x


def sdpa_backends(model_cfg: dict[str, Any], batch: int, device: Any, dtype: Any) -> dict[str, str]:
    """Which SDPA kernels accept the model's attention shape (causal, this dtype): 'ok' or why not."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    H, T = model_cfg["n_head"], model_cfg["context"]
    q = torch.randn(batch, H, T, model_cfg["n_embd"] // H, device=device, dtype=dtype, requires_grad=True)
    out = {}
    for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            out[name.lower()] = "not in this torch"
            continue
        try:
            with warnings.catch_warnings(), sdpa_kernel([backend]):
                warnings.simplefilter("ignore")  # each refusal also warns why; the error says it
                F.scaled_dot_product_attention(q, q, q, is_causal=True).sum().backward()
            out[name.lower()] = "ok"
        except Exception as e:  # RuntimeError mostly; any refusal is an answer here, not a failure
            out[name.lower()] = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
    return out


def sdpa_ops_that_ran(step: Callable[[], Any]) -> list[str]:
    """Kernel families of the SDPA ops one training step dispatched, from the profiler's op names."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    names = {e.key for e in prof.key_averages()}
    ran = []
    for op, family in SDPA_OPS:
        hits = [n for n in names if op in n]
        if hits:
            ran.append(f"{family} ({', '.join(sorted(hits))})")
            names -= set(hits)
    return ran


def train_row(plan: Plan, batch: int, compiled: bool, deadline: float) -> dict[str, Any]:
    """Throughput of one (batch, eager/compiled) configuration: the trainer's step, minus the loader."""
    import torch

    from londinium.config import ModelConfig, TrainConfig
    from londinium.device import configure_backends, resolve_device, resolve_precision
    from londinium.model.gpt import GPT
    from londinium.train.monitor import peak_flops
    from londinium.train.schedule import lr_at

    device = resolve_device("auto")
    precision = resolve_precision("auto", device)
    configure_backends(device)
    torch._dynamo.reset()  # each compiled row compiles afresh: nothing carried from the previous shape
    torch.manual_seed(0)
    cfg = ModelConfig(**plan.train_model)
    raw = GPT(cfg).to(device)
    opt = torch.optim.AdamW(raw.optimizer_groups(0.1), lr=plan.train_lr, betas=(0.9, 0.95), fused=True)
    sched = TrainConfig(max_steps=plan.train_steps, learning_rate=plan.train_lr, warmup_steps=plan.train_warmup)
    model = torch.compile(raw) if compiled else raw
    model.train()
    pool = bigram_batches(min(plan.train_steps, 32), batch, cfg.context, cfg.vocab_size).to(device)
    i = 0

    def step() -> Any:
        nonlocal i
        for g in opt.param_groups:
            g["lr"] = lr_at(i, sched)
        x = pool[i % len(pool)]
        with precision.context():
            _, loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(raw.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        i += 1
        return loss.detach()

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    losses = []
    first_step_s = _timed(lambda: losses.append(step()), device)  # compilation happens here
    while i < plan.train_warmup:
        losses.append(step())
    _sync(device)
    t0, timed_from = time.perf_counter(), i
    while i < plan.train_steps and time.perf_counter() < deadline:
        losses.append(step())
    _sync(device)
    elapsed, steps = time.perf_counter() - t0, i - timed_from
    ran = sdpa_ops_that_ran(step)
    values = [float(v) for v in torch.stack(losses).float().tolist()]
    tok_s = steps * batch * cfg.context / elapsed if steps else 0.0
    peak = peak_flops(device, precision.dtype)
    k = min(10, len(values) // 2)
    start, end = statistics.mean(values[:k]), statistics.mean(values[-k:])
    return {
        "mode": "compiled" if compiled else "eager", "batch": batch, "context": cfg.context,
        "tokens_per_step": batch * cfg.context, "steps_timed": steps, "seconds_timed": round(elapsed, 2),
        "first_step_s": round(first_step_s, 2), "tokens_per_s": round(tok_s, 1), "step_ms": round(1000 * elapsed / max(steps, 1), 2),
        "mfu": round(tok_s * raw.flops_per_token() / peak, 4) if peak else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        "loss_start": round(start, 4), "loss_end": round(end, 4), "loss_decreased": end < start,
        "sdpa_ran": ran, "stopped_by_time_cap": i < plan.train_steps,
    }


def check_training(plan: Plan, deadline: float) -> dict[str, Any]:
    import torch

    from londinium.config import ModelConfig
    from londinium.device import resolve_device, resolve_precision
    from londinium.model.gpt import GPT

    device = resolve_device("auto")
    precision = resolve_precision("auto", device)
    with torch.device("meta"):
        probe = GPT(ModelConfig(**plan.train_model))
    out: dict[str, Any] = {
        "model": plan.train_model, "parameters": probe.num_params(), "flops_per_token": probe.flops_per_token(),
        "precision": precision.describe(), "tf32": device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8,
        "optimizer": "AdamW (fused), decay on matrices, grad clip 1.0, warm-up + cosine schedule",
        "data": f"synthetic bigram chain (loss floor ln 4 = 1.386 nats), vocabulary {plan.train_model['vocab_size']}",
        "sdpa_available": sdpa_backends(plan.train_model, plan.train_batches[0], device, precision.dtype),
        "rows": [],
    }
    # The preset's micro-batch first, compiled before eager at the larger batch: the figures the goals
    # are about come first if the cap cuts the section short.
    order = [(plan.train_batches[0], False), (plan.train_batches[0], True), (plan.train_batches[-1], True), (plan.train_batches[-1], False)]
    for batch, compiled in dict.fromkeys(order):
        if compiled and not plan.compile:
            out["rows"].append({"mode": "compiled", "batch": batch, "skipped": "torch.compile is off in --dry-run (~40 s per compile on a CPU)"})
            continue
        if time.perf_counter() >= deadline:
            out["rows"].append({"mode": "compiled" if compiled else "eager", "batch": batch, "skipped": "time cap reached"})
            continue
        _say(f"training: {'compiled' if compiled else 'eager'}, batch {batch}")
        out["rows"].append(train_row(plan, batch, compiled, deadline))
    return out


# ---- 3. bit-exact resume through the real trainer ---------------------------------------------------

_WORDS = ("thou thee thy hath doth art shalt wilt lord king queen heaven earth night day light love death sword "
          "crown blood grace mercy honour shame sweet fair foul noble gentle good evil man woman child father "
          "mother son brother house land sea fire water wind say speak know see hear come go give take make keep "
          "stand fall rise live die and the of to in that with for not but upon unto").split()

# The trainer as `londinium train` runs it, with deterministic kernels asked for first. warn_only:
# an op without a deterministic implementation is reported (and named in the output), not fatal.
_DETERMINISTIC_CLI = ("import sys, torch; torch.use_deterministic_algorithms(True, warn_only=True); "
                      "from londinium.cli import main; sys.exit(main(sys.argv[1:]))")


def synthetic_workspace(root: Path, docs: int) -> Any:
    """A workspace with a small period-flavoured corpus, a 512-token tokenizer and shards, built
    through the real tokenizer and shard stages (as the tests' tiny_workspace is)."""
    import random

    from londinium.config import DataConfig, TokenizerConfig
    from londinium.data.shards import prepare_shards
    from londinium.files import write_jsonl
    from londinium.tokenizer.train import train_tokenizer
    from londinium.workspace import Workspace

    ws = Workspace(root)
    for split, n, seed in (("train", docs, 1), ("val", max(16, docs // 8), 2), ("test", 8, 3)):
        rng = random.Random(seed)
        rows = []
        for i in range(n):
            text = " ".join(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 12))).capitalize() + rng.choice(".;!?")
                            for _ in range(rng.randint(4, 9)))
            rows.append({"id": f"syn/{seed}-{i}", "text": text, "source": "synthetic", "group": f"syn-{seed}-{i}"})
        write_jsonl(ws.corpus_split(split), rows)
    ws.adopt("corpus", [ws.corpus_split(s) for s in ("train", "val", "test")])  # a corpus made outside the corpus stage
    quiet = dict(log=lambda m: None)
    train_tokenizer(ws, TokenizerConfig(vocab_size=512, compare_gpt2=False, compare_sources=False), **quiet)
    prepare_shards(ws, DataConfig(), **quiet)
    return ws


def _train(ws: Any, run: str, plan: Plan, *flags: str, kill_at: int | None = None) -> subprocess.CompletedProcess:
    from londinium.train.trainer import KILL_ENV

    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8", "PYTHONUNBUFFERED": "1"}
    env.pop(KILL_ENV, None)
    if kill_at is not None:
        env[KILL_ENV] = str(kill_at)  # the trainer's own crash hook: SIGKILL right after this step
    sets = [a for s in plan.exact_sets for a in ("--set", s)]
    cmd = [sys.executable, "-c", _DETERMINISTIC_CLI, "train", "-w", str(ws.root), "--run", run, *sets, *flags]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=plan.caps_s["resume"])  # per run


def check_resume(plan: Plan, workdir: Path) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    from londinium.checkpoint import MODEL_FILE, list_checkpoints
    from londinium.train.monitor import read_metrics

    ws = synthetic_workspace(workdir / "ws", plan.corpus_docs)
    straight = _train(ws, "straight", plan)
    if straight.returncode != 0:
        raise RuntimeError(f"straight run failed: {straight.stderr[-1500:]}")
    killed = _train(ws, "resumed", plan, kill_at=plan.exact_kill_at)
    if killed.returncode != -9:
        raise RuntimeError(f"the run to be killed exited with {killed.returncode}, not SIGKILL: {killed.stderr[-1500:]}")
    resumed = _train(ws, "resumed", plan, "--resume")
    if resumed.returncode != 0:
        raise RuntimeError(f"resumed run failed: {resumed.stderr[-1500:]}")

    def logged(run: str) -> tuple[list, list]:
        rows = read_metrics(ws.metrics_file(run))
        return ([(r["step"], r["loss"]) for r in rows if r["type"] == "train"],
                [(r["step"], r["val_loss"]) for r in rows if r["type"] == "eval"])

    def weights(run: str) -> dict[str, Any]:
        return load_file(str(list_checkpoints(ws.checkpoints_dir(run))[-1].path / MODEL_FILE))

    (a_train, a_val), (b_train, b_val) = logged("straight"), logged("resumed")
    wa, wb = weights("straight"), weights("resumed")
    differing = [k for k in wa if k not in wb or not torch.equal(wa[k], wb[k])]
    max_diff = max((float((wa[k].float() - wb[k].float()).abs().max()) for k in wa if k in wb), default=0.0)
    first_loss_diff = next((s for (s, x), (_, y) in zip(a_train, b_train) if x != y), None)
    resumed_from = next((line.strip() for line in resumed.stdout.splitlines() if "resuming from step" in line), None)
    nondeterministic = sorted({line.strip()[:200] for p in (straight, killed, resumed) for line in p.stderr.splitlines()
                               if "deterministic" in line})
    same = a_train == b_train and a_val == b_val and not differing and len(a_train) == plan.exact_steps
    repeat_same = None
    if not same:
        # Is it the resume, or does the GPU not repeat even an uninterrupted run? One more straight run says.
        again = _train(ws, "straight-again", plan)
        if again.returncode == 0:
            repeat_same = logged("straight-again") == logged("straight")
    return {
        "what_same_means": ("bit for bit: every logged train loss (one per step) and validation loss of the resumed run "
                            "equals the straight run's as a float, and every tensor of the final checkpoint is "
                            "torch.equal; with torch.use_deterministic_algorithms(True) and "
                            "CUBLAS_WORKSPACE_CONFIG=:4096:8, same GPU, same process count"),
        "command": "londinium train (the CLI, in a subprocess per run) on a synthetic workspace",
        "settings": list(plan.exact_sets), "steps": plan.exact_steps, "killed_after_step": plan.exact_kill_at,
        "resume_line": resumed_from, "losses_same": a_train == b_train and a_val == b_val,
        "train_losses_compared": len(a_train), "val_losses_compared": len(a_val),
        "first_step_with_different_loss": first_loss_diff, "weights_same": not differing,
        "tensors_differing": len(differing), "max_abs_weight_diff": max_diff,
        "nondeterministic_op_warnings": nondeterministic,
        "same": same,
        "two_straight_runs_same": repeat_same,  # only run when `same` is false: null otherwise
    }


# ---- 4. generation ---------------------------------------------------------------------------------


def _model_pair(shape: dict[str, Any]) -> tuple[Any, Any, Any]:
    """Our GPT of `shape` (seeded), the `transformers` class it exports to holding its weights, and a
    small tokenizer (it only decodes text; ids past its vocabulary decode to nothing) -- the pair
    generate_speed.py builds for a preset, here for the plan's shape."""
    import dataclasses

    import torch

    from generate_speed import TEXT
    from peers import transformers_peer
    from londinium.config import ModelConfig
    from londinium.model.gpt import GPT
    from londinium.tokenizer.train import train_bpe

    torch.manual_seed(0)
    cfg = dataclasses.replace(ModelConfig(), dropout=0.0, **shape)
    ours = GPT(cfg).eval()
    return ours, transformers_peer(ours), train_bpe([TEXT] * 50, 1000, show_progress=False)


def check_generation(plan: Plan, deadline: float) -> dict[str, Any]:
    import torch

    from peers import max_logit_difference
    from londinium.device import resolve_device, resolve_precision
    from londinium.infer import Engine, SamplingParams

    device = resolve_device("auto")
    dtype = resolve_precision("auto", device).dtype  # bf16 on GPUs that have it, fp32 on CPUs
    shape = dict(plan.gen_model)
    ours, peer, tok = _model_pair(shape)
    logit_diff = max_logit_difference(ours, peer)  # fp32 on the CPU, before either moves
    ours, peer = ours.to(device=device, dtype=dtype), peer.to(device=device, dtype=dtype)
    engine = Engine(ours, tok, max_running=max(plan.gen_batches))
    N, P = plan.gen_new, plan.gen_prompt
    params = SamplingParams(max_tokens=N, temperature=1.0, top_k=50, ignore_eos=True)
    rows = []
    for B in plan.gen_batches:
        if time.perf_counter() >= deadline:
            rows.append({"batch": B, "skipped": "time cap reached"})
            continue
        _say(f"generation: batch {B}")
        prompts = torch.randint(1, shape["vocab_size"], (B, P), generator=torch.Generator().manual_seed(B))
        ids, prompts_dev = prompts.tolist(), prompts.to(device)
        mask = torch.ones_like(prompts_dev)

        def ours_prefill() -> None:
            ours(prompts_dev, kv_cache=ours.new_kv_cache(B, P), logits_to_keep=1)

        def peer_prefill() -> None:
            peer(prompts_dev, use_cache=True, logits_to_keep=1)

        def ours_generate() -> None:
            out = engine.generate(ids, params)
            assert all(len(c.token_ids) == N for c in out)

        def peer_generate() -> None:
            out = peer.generate(prompts_dev, attention_mask=mask, do_sample=True, top_k=50, temperature=1.0,
                                max_new_tokens=N, min_new_tokens=N, use_cache=True, pad_token_id=0)
            assert out.shape == (B, P + N)

        impls = {"ours_prefill": ours_prefill, "peer_prefill": peer_prefill, "ours": ours_generate, "peer": peer_generate}
        times: dict[str, list[float]] = {k: [] for k in impls}
        with torch.inference_mode():
            for fn in impls.values():
                fn()  # warm-up
            for _ in range(plan.gen_rounds):
                for name, fn in impls.items():
                    times[name].append(_timed(fn, device))
        med = {k: statistics.median(v) for k, v in times.items()}
        ours_rate = B * (N - 1) / max(1e-9, med["ours"] - med["ours_prefill"])
        peer_rate = B * (N - 1) / max(1e-9, med["peer"] - med["peer_prefill"])
        rows.append({"batch": B, "londinium_decode_tok_s": round(ours_rate, 1), "transformers_decode_tok_s": round(peer_rate, 1),
                     "ratio": round(ours_rate / peer_rate, 3), "londinium_prefill_tok_s": round(B * P / med["ours_prefill"], 1),
                     "transformers_prefill_tok_s": round(B * P / med["peer_prefill"], 1)})
    return {"model": shape, "dtype": str(dtype).replace("torch.", ""), "device": str(device),
            "max_abs_logit_diff_fp32": logit_diff, "prompt_tokens": P, "new_tokens": N, "rounds": plan.gen_rounds,
            "sampling": "temperature 1, top-k 50, EOS ignored (both)",
            "peer": "transformers GPT2LMHeadModel.generate(use_cache=True), weights via londinium.model.hf_layout",
            "decode_rate": "batch x (new tokens - 1) / (generation time - prefill time), medians of the rounds", "rows": rows}


# ---- 5. serving ------------------------------------------------------------------------------------


def check_serving(plan: Plan, workdir: Path) -> dict[str, Any]:
    vllm = "installed (not driven by this script)" if importlib.util.find_spec("vllm") else "not installed in this Python: not measured"
    if importlib.util.find_spec("londinium.serve") is None:
        return {"status": "not available", "note": "server not available in this build (no londinium.serve)", "vllm": vllm}
    ws_root = workdir / "ws"
    if not (ws_root / "runs" / "straight").is_dir():
        return {"status": "skipped", "note": "needs the resume section's trained run, which did not finish", "vllm": vllm}
    return {**serve_load(ws_root, "straight", plan), "vllm": vllm}


def serve_load(ws_root: Path, run: str, plan: Plan) -> dict[str, Any]:
    """`londinium serve` on a trained run, then /v1/completions from 1, 16, 64 client threads."""
    import socket
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    top = max(plan.serve_concurrency)
    cmd = [sys.executable, "-m", "londinium", "serve", "-w", str(ws_root), "--set", f"serve.run={run}",
           "--set", f"serve.port={port}", "--set", "serve.device=auto", "--set", f"serve.max_running={top}",
           "--set", f"serve.max_waiting={4 * top}"]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def call(path: str, body: dict | None = None, timeout: float = 120) -> dict:
        req = urllib.request.Request(base + path, data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    try:
        for _ in range(120):
            try:
                call("/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError(f"londinium serve exited with {server.returncode}: {server.stdout.read()[-1500:]}")
                time.sleep(0.5)
        model = call("/v1/models")["data"][0]["id"]
        rows, deadline = [], time.perf_counter() + plan.caps_s["serving"]
        for c in plan.serve_concurrency:
            if time.perf_counter() >= deadline:
                rows.append({"concurrency": c, "skipped": "time cap reached"})
                continue
            body = {"model": model, "prompt": "Thou art", "max_tokens": plan.serve_tokens, "temperature": 1.0}

            def one(_: int) -> tuple[float, int]:
                t0 = time.perf_counter()
                r = call("/v1/completions", body)
                return time.perf_counter() - t0, int(r["usage"]["completion_tokens"])

            t0 = time.perf_counter()
            with ThreadPoolExecutor(c) as pool:
                results = list(pool.map(one, range(2 * c)))
            wall = time.perf_counter() - t0
            lat = [r[0] for r in results]
            rows.append({"concurrency": c, "requests": len(results), "completion_tokens_per_s": round(sum(r[1] for r in results) / wall, 1),
                         "latency_median_s": round(statistics.median(lat), 3), "latency_max_s": round(max(lat), 3)})
        return {"status": "ok", "server": " ".join(cmd[1:4]) + f" (run '{run}' of the resume section)", "rows": rows}
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# ---- output ----------------------------------------------------------------------------------------


def to_markdown(report: dict[str, Any]) -> str:
    lines = [f"# londinium GPU check ({'dry run on a CPU: not GPU figures' if report['dry_run'] else 'GPU run'})", "",
             f"Started {report['started']}, {report.get('total_s', '?')} s in all. Command: `{report['command']}`", ""]
    env = report.get("environment", {})
    lines += ["## 1. Environment", ""] + [f"- {k}: {v}" for k, v in env.items() if k not in ("status", "seconds")] + [""]

    def section(title: str, key: str, cols: list[str]) -> None:
        sec = report.get(key)
        lines.extend([f"## {title}", ""])
        if sec is None:
            lines.extend(["not run", ""])
            return
        for k, v in sec.items():
            if k != "rows":
                lines.append(f"- {k}: {v}")
        rows = sec.get("rows") or []
        if rows:
            lines.extend(["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)])
            for r in rows:
                cells = [str(r.get(c, "")) for c in cols]
                if "skipped" in r:
                    cells[-1] = f"skipped: {r['skipped']}"
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")

    section("2. Training (the slm preset; --dry-run: a tiny shape)", "training", ["mode", "batch", "tokens_per_s", "mfu", "step_ms", "first_step_s",
                                                     "peak_memory_gib", "loss_start", "loss_end", "sdpa_ran"])
    section("3. Bit-exact resume", "resume", [])
    section("4. Generation", "generation", ["batch", "londinium_decode_tok_s", "transformers_decode_tok_s", "ratio",
                                            "londinium_prefill_tok_s", "transformers_prefill_tok_s"])
    section("5. Serving", "serving", ["concurrency", "requests", "completion_tokens_per_s", "latency_median_s", "latency_max_s"])
    return "\n".join(lines) + "\n"


def save(report: dict[str, Any], out: Path) -> None:
    from londinium.files import write_json, write_text

    write_json(out / "gpu_check.json", report)
    write_text(out / "gpu_check.md", to_markdown(report))


def run_section(report: dict[str, Any], key: str, fn: Callable[[], dict[str, Any]], out: Path) -> None:
    _say(f"{key}: start")
    t0 = time.perf_counter()
    try:
        result = fn()
        result.setdefault("status", "ok")
    except Exception as e:  # one failed section must not cost the others' figures
        result = {"status": "error", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        _say(f"{key}: error: {type(e).__name__}: {e}")
    result["seconds"] = round(time.perf_counter() - t0, 1)
    report[key] = result
    save(report, out)
    _say(f"{key}: {result['status']} in {result['seconds']} s")


def missing_modules() -> list[str]:
    return [m for m in NEEDED if importlib.util.find_spec(m) is None]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("gpu-check-out"), help="folder for gpu_check.json and gpu_check.md")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on whatever device there is (a CPU rehearsal, ~1 min)")
    ap.add_argument("--env-only", action="store_true", help="only section 1 (and the check for missing packages)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"sections to run after the environment, comma-separated "
                    f"(default: all of {','.join(SECTIONS)}); a rerun of the one that failed fits where a whole run does not")
    args = ap.parse_args(argv)

    missing = missing_modules()
    if "torch" in missing or importlib.util.find_spec("londinium") is None:
        print(f"gpu_check: cannot run: this Python ({sys.executable}, {platform.python_version()}) lacks "
              f"{', '.join(missing + (['londinium'] if importlib.util.find_spec('londinium') is None else []))}. "
              "Run it with a Python that has torch with CUDA (try the machine's own python3), from a londinium "
              "checkout; there is no internet on a GPU machine, so bring other packages as wheels "
              "(pip install --no-index --find-links DIR).", file=sys.stderr)
        return 2
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        ap.error(f"--only: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    plan = dry_plan() if args.dry_run else full_plan()
    out = args.out.resolve()
    report: dict[str, Any] = {"schema": 1, "dry_run": args.dry_run, "started": _now(), "missing_modules": missing,
                              "command": " ".join([Path(sys.executable).name, *sys.argv]), "plan": asdict(plan)}
    t_start = time.perf_counter()
    run_section(report, "environment", lambda: check_environment(args.dry_run), out)
    env = report["environment"]
    problem = env.get("problem") or (env["status"] == "error" and env.get("error"))
    if missing:
        _say(f"missing packages: {', '.join(missing)}; the sections that need them will fail")
    if problem or args.env_only:
        report["total_s"] = round(time.perf_counter() - t_start, 1)
        save(report, out)
        if problem:
            print(f"gpu_check: {problem}", file=sys.stderr)
        print(json.dumps(env, indent=2))
        return 2 if problem else 0

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work, cap = Path(tmp), plan.caps_s
        sections = {
            "training": lambda: check_training(plan, time.perf_counter() + cap["training"]),
            "resume": lambda: check_resume(plan, work),
            "generation": lambda: check_generation(plan, time.perf_counter() + cap["generation"]),
            "serving": lambda: check_serving(plan, work),  # serves the run the resume section trained
        }
        for key in SECTIONS:
            if key in only:
                run_section(report, key, sections[key], out)
    report["total_s"] = round(time.perf_counter() - t_start, 1)
    save(report, out)
    _say(f"done in {report['total_s']} s: {out / 'gpu_check.json'}, {out / 'gpu_check.md'}")
    failed = [k for k in ("environment", *SECTIONS) if k in report and report[k]["status"] == "error"]
    if failed:
        _say(f"sections with errors: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
