"""Fewer bytes per weight: what each weight dtype costs in quality and gives in speed, and why these kernels.

    .venv/bin/python benchmarks/weight_dtypes.py -w londinium-work [--run main] [--docs 200] [--new 128] [--rounds 5]
    .venv/bin/python benchmarks/weight_dtypes.py --kernels-only      # just the per-layer kernel table, random weights

1. Kernels (the choice): one linear layer of the small preset's shapes at batch 1 and 8, float32
   `F.linear` against every candidate for fewer bytes per weight that PyTorch and torchao offer on
   the CPU: fbgemm's int8 GEMM as `model/quantize.py` runs it (rows scaled on their own), fbgemm's
   float16-weight GEMM, torchao's `Int8WeightOnlyConfig` and `Int8DynamicActivationInt8WeightConfig`
   (when torchao is installed), `torch._weight_int8pack_mm`, and bfloat16. CPU time of this thread
   (steadier than wall time on a shared machine), median of 5 runs; ratio = float32 time / its time.
2. The run (`-w`): for each `generate.weight_dtype`, the bytes of the linear layers, the validation
   bits per byte (the first `--docs` documents of corpus/val.jsonl, `eval.perplexity`'s sliding
   windows) and its difference from float32, and batch-1 greedy decode tokens/s through the engine
   (`--new` tokens after a short prompt, EOS ignored), the dtypes alternating round by round in one
   process; the figure is the median, the ratio is against float32 in the same rounds.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from londinium.config import WEIGHT_DTYPES
from londinium.model.memory import WEIGHT_BYTES
from londinium.model.quantize import Float16Linear, Int8Linear, quantize_weights

SHAPES = [(1152, 384), (384, 384), (1536, 384), (384, 1536), (8192, 384)]  # small: c_attn, c_proj, c_fc, mlp c_proj, head


def cpu_us(fn, n: int) -> float:
    fn()
    runs = []
    for _ in range(5):
        t0 = time.thread_time()
        for _ in range(n):
            fn()
        runs.append((time.thread_time() - t0) / n * 1e6)
    return statistics.median(runs)


def kernel_candidates(linear: torch.nn.Linear) -> dict[str, object]:
    """name -> callable(x) for every way to run this layer with fewer bytes per weight."""
    w = linear.weight.detach()
    out = {"float32 F.linear": lambda x: F.linear(x, w),
           "int8, fbgemm (quantize.Int8Linear)": Int8Linear(linear),
           "float16 weights, fbgemm (quantize.Float16Linear)": Float16Linear(linear)}
    scale = w.abs().amax(dim=1) / 127
    w8 = (w / scale[:, None]).round().to(torch.int8)
    out["int8 weight-only, torch._weight_int8pack_mm"] = lambda x: torch._weight_int8pack_mm(x, w8, scale)
    wb = w.bfloat16()
    out["bfloat16 F.linear"] = lambda x: F.linear(x.bfloat16(), wb)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_
        for name, config in (("int8 weight-only, torchao", Int8WeightOnlyConfig()),
                             ("int8 dynamic, torchao", Int8DynamicActivationInt8WeightConfig())):
            layer = torch.nn.Sequential(copy.deepcopy(linear))
            quantize_(layer, config)
            out[name] = layer
    except ImportError:
        print("(torchao is not installed: its rows are left out; pip install torchao)")
    return out


def kernels(quick: bool) -> None:
    print("per-layer kernels: CPU time per call (us), 1 thread; ratio = float32 / candidate")
    for out_f, in_f in SHAPES[:2] if quick else SHAPES:
        torch.manual_seed(0)
        linear = torch.nn.Linear(in_f, out_f, bias=False).eval()
        cands = kernel_candidates(linear)
        for B in (1,) if quick else (1, 8):
            x = torch.randn(B, in_f)
            with torch.inference_mode():
                us = {name: cpu_us(lambda f=f: f(x), 5 if quick else 200) for name, f in cands.items()}
            base = us["float32 F.linear"]
            print(f"  [{out_f} x {in_f}] batch {B}: " + ", ".join(f"{name} {t:.0f} ({base / t:.2f}x)" for name, t in us.items()))


def linear_bytes(model: torch.nn.Module, dtype: str) -> float:
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return n * WEIGHT_BYTES[dtype]


def run_figures(args: argparse.Namespace) -> None:
    from londinium.eval.perplexity import evaluate_documents
    from londinium.data.documents import iter_documents
    from londinium.infer import Engine, SamplingParams
    from londinium.model.load import load_run
    from londinium.tokenizer.codec import EOT, encode_batch
    from londinium.workspace import Workspace

    ws = Workspace(Path(args.workspace))
    base = load_run(ws, args.run, args.checkpoint)
    cfg = base.config.model
    docs = [d for _, d in zip(range(args.docs), iter_documents(ws.corpus_split("val")))]
    tok = base.tokenizer
    print(f"\n{base.describe()}; {len(docs)} validation documents; batch-1 greedy decode of {args.new} tokens, "
          f"{torch.get_num_threads()} thread(s), median of {args.rounds} rounds")
    engines, bpb, sizes = {}, {}, {}
    for dtype in WEIGHT_DTYPES:
        model = quantize_weights(copy.deepcopy(base.model), dtype)
        sizes[dtype] = linear_bytes(base.model, dtype)
        result = evaluate_documents(model, lambda texts: encode_batch(tok, texts), docs, tok.token_to_id(EOT), cfg.context,
                                    show_progress=False)
        bpb[dtype] = result["total"]["bits_per_byte"]
        engines[dtype] = Engine(model, tok)
    params = SamplingParams(max_tokens=args.new, temperature=0.0, ignore_eos=True)
    rates: dict[str, list[float]] = {d: [] for d in WEIGHT_DTYPES}
    tokens = {}
    for d, e in engines.items():
        tokens[d] = e.generate(["Thus saith the Lord, "], params)[0].token_ids  # warm-up
    for _ in range(args.rounds):
        for d, e in engines.items():
            t0 = time.thread_time()
            e.generate(["Thus saith the Lord, "], params)
            rates[d].append(args.new / (time.thread_time() - t0))
    print(f"{'weight dtype':<13} {'linear MiB':>10} " + FIGURES_HEADER)
    for d in WEIGHT_DTYPES:
        print(f"{d:<13} {sizes[d] / 2**20:>10.2f} " + figures(d, bpb, rates, tokens))


FIGURES_HEADER = f"{'val bits/byte':>14} {'delta':>8} {'decode tok/s':>13} {'vs float32':>10} {'same greedy tokens':>19}"


def figures(d: str, bpb: dict, rates: dict, tokens: dict) -> str:
    """A dtype's row against float32: bits per byte and its delta, tok/s (median), the median of the
    rounds' ratios, and how many leading greedy tokens equal float32's (shared with kv_dtypes.py)."""
    same = next((i for i, (a, b) in enumerate(zip(tokens[d], tokens["float32"])) if a != b), len(tokens[d]))
    paired = statistics.median(a / b for a, b in zip(rates[d], rates["float32"]))
    return (f"{bpb[d]:>14.4f} {bpb[d] - bpb['float32']:>+8.4f} {statistics.median(rates[d]):>13.0f} {paired:>9.2f}x "
            f"{f'{same}/{len(tokens[d])}':>19}")


def run_parser(doc: str, docs: int, new: int) -> argparse.ArgumentParser:
    """The arguments of a run's dtype comparison (shared with kv_dtypes.py)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("-w", "--workspace", default="")
    ap.add_argument("--run", default="main")
    ap.add_argument("--checkpoint", default="best")
    ap.add_argument("--docs", type=int, default=docs, help="validation documents scored")
    ap.add_argument("--new", type=int, default=new)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="toy sizes, one round (seconds): that the script runs, not its figures")
    return ap


def main() -> None:
    ap = run_parser(__doc__, docs=200, new=128)
    ap.add_argument("--kernels-only", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.docs, args.new, args.rounds = 3, 4, 1
    torch.set_num_threads(args.threads)
    kernels(args.quick)
    if args.workspace and not args.kernels_only:
        run_figures(args)


if __name__ == "__main__":
    main()
