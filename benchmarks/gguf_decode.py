"""GGUF export: file sizes, llama.cpp load time, and batch-1 greedy decode in llama.cpp against londinium's engine.

    .venv/bin/python benchmarks/gguf_decode.py -w londinium-work [--run main] [--new 128] [--rounds 3] [--threads 2]
    .venv/bin/python benchmarks/gguf_decode.py -w londinium-work --threads 1 --compile --weight-dtypes float32 int8
    .venv/bin/python benchmarks/gguf_decode.py -w londinium-work --preset small --weight-dtypes float32 int8

Needs the `llama` extra (llama-cpp-python). The run's checkpoint is written as GGUF in float32,
float16 and q8_0 (to a temporary directory); for each, the script prints the file size, the time
llama.cpp takes to load it, how many of its greedy tokens equal our engine's, and its greedy decode
speed. The peer is londinium's `Engine` on the same checkpoint (temperature 0, EOS ignored), with
torch on the same number of threads as llama.cpp; `--compile` adds the engine with its decode step
compiled, `--weight-dtypes float32 int8` the engine on packed weights (generate.weight_dtype). Both decode the same prompt to the same number
of new tokens, prefill included; implementations alternate within each round so load from other
processes hits all alike, and each figure is the median of the rounds. On a shared machine read the
ratios, not the absolute numbers. The last lines are issue 30's ratios: londinium float32 (eager, and
compiled with `--compile`) over llama.cpp float32, and (with int8 asked for) londinium int8 over llama.cpp q8_0.

`--preset P` times that preset's shape instead of the run's (random weights, the run's tokenizer and
vocabulary): speed does not depend on training, so `--preset small` gives the `small` row of the
goals from a fresh clone, where only the quickstart's tiny run exists. Greedy tokens still compare.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from londinium.config import WEIGHT_DTYPES, GenerateConfig
from londinium.export.gguf import DTYPES, write_gguf
from londinium.infer import Engine, SamplingParams
from londinium.model.load import load_run
from londinium.workspace import Workspace

PROMPT = "Thus saith the Lord, "


def llama_cpp_greedy(llm, prompt: list[int], steps: int) -> list[int]:
    """Batch-1 greedy decode the way llama-cpp-python users decode: its `generate` with temperature 0
    (llama.cpp's greedy sampler), through its KV cache, stopped after `steps` tokens (EOS ignored)."""
    out = []
    for token in llm.generate(prompt, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
        out.append(token)
        if len(out) == steps:
            return out
    return out


def timed(fn, clock=time.perf_counter) -> tuple[float, object]:
    t0 = clock()
    result = fn()
    return clock() - t0, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-w", "--workspace", required=True)
    ap.add_argument("--run", default="main")
    ap.add_argument("--checkpoint", default="best")
    ap.add_argument("--new", type=int, default=128, help="new tokens")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads and torch threads")
    ap.add_argument("--compile", action="store_true", help="also time the engine with its decode step compiled (generate.compile)")
    ap.add_argument("--weight-dtypes", nargs="+", default=["float32"], choices=WEIGHT_DTYPES,
                    help="time the engine with these generate.weight_dtype values")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: CPU time of this thread (steadier on a loaded machine; needs --threads 1, where "
                         "llama.cpp and torch both compute on the calling thread)")
    ap.add_argument("--preset", help="time this preset's shape with random weights (the run's tokenizer) instead of the run")
    ap.add_argument("--quick", action="store_true", help="toy sizes, one round (seconds): that the script runs, not its figures")
    args = ap.parse_args()
    if args.quick:
        args.new, args.rounds, args.threads, args.weight_dtypes = 4, 1, 1, ["float32", "int8"]

    if args.clock == "cpu" and args.threads != 1:
        ap.error("--clock cpu needs --threads 1 (other threads' work is not on this thread's clock)")
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter

    from llama_cpp import Llama

    torch.set_num_threads(args.threads)
    ws = Workspace(Path(args.workspace))
    trained = load_run(ws, args.run, args.checkpoint)
    if args.preset:
        trained = preset_shape(trained, args.preset)
    cfg = trained.config.model
    engine = Engine.from_trained(trained)
    ours = {}  # our engines: float32 eager first (the reference for equal tokens), then what was asked
    for dtype in args.weight_dtypes:
        for compiled in (False, True) if args.compile else (False,):
            name = "londinium" + (f" {dtype}" if dtype != "float32" else "") + (" compiled" if compiled else "")
            gen = GenerateConfig(weight_dtype=dtype, compile=compiled)
            ours[name] = engine if (dtype, compiled) == ("float32", False) else Engine.with_settings(copy.deepcopy(trained.model), trained.tokenizer, gen, ws)
    greedy = SamplingParams(max_tokens=args.new, temperature=0.0, ignore_eos=True)
    prompt_ids = engine.generate([PROMPT], SamplingParams(max_tokens=1, temperature=0.0)).pop().prompt_token_ids
    assert len(prompt_ids) + args.new <= cfg.context, f"prompt + {args.new} new tokens must fit the context ({cfg.context})"
    print(f"{trained.describe()}; {cfg.n_layer} layers, {cfg.n_embd} wide, context {cfg.context}, vocabulary {cfg.vocab_size}")
    print(f"prompt {len(prompt_ids)} tokens, {args.new} new, greedy, {args.threads} threads, median of {args.rounds} rounds, "
          f"{args.clock} clock\n")

    with tempfile.TemporaryDirectory() as tmp:
        paths, sizes, write_s = {}, {}, {}
        for dtype in DTYPES:
            paths[dtype] = Path(tmp) / f"{args.run}-{dtype}.gguf"
            write_s[dtype], _ = timed(lambda: write_gguf(paths[dtype], trained, dtype, progress=False))
            sizes[dtype] = paths[dtype].stat().st_size

        def load(dtype: str):
            return Llama(model_path=str(paths[dtype]), n_ctx=cfg.context, n_threads=args.threads, verbose=False)

        llms = {d: load(d) for d in DTYPES}  # warm: the first load also pages the files in
        impls = {name: (lambda e=e: e.generate([prompt_ids], greedy)[0].token_ids) for name, e in ours.items()}
        impls.update({f"llama.cpp {d}": (lambda d=d: llama_cpp_greedy(llms[d], prompt_ids, args.new)) for d in DTYPES})
        times: dict[str, list[float]] = {k: [] for k in impls}
        loads: dict[str, list[float]] = {d: [] for d in DTYPES}
        tokens: dict[str, list[int]] = {}
        first: dict[str, float] = {}  # the warm-up's wall time: a compiled engine builds or loads its step there
        with torch.inference_mode():
            for name, fn in impls.items():  # warm-up
                first[name], tokens[name] = timed(fn)
            for _ in range(args.rounds):
                for d in DTYPES:
                    t, llm = timed(lambda: load(d))
                    loads[d].append(t)
                    del llm
                for name, fn in impls.items():
                    times[name].append(timed(fn, clock)[0])

    reference = tokens["londinium"]
    rate = {k: args.new / statistics.median(v) for k, v in times.items()}
    # Each round's ratio pairs two implementations under the same load; their median is the steady figure.
    paired = {k: statistics.median(a / b for a, b in zip(times["londinium"], v)) for k, v in times.items()}

    def same(name: str) -> str:
        n = next((i for i, (a, b) in enumerate(zip(tokens[name], reference)) if a != b), len(reference))
        return f"{n}/{len(reference)}"

    print(f"{'implementation':<28} {'file MiB':>9} {'write s':>8} {'load ms':>8} {'same greedy tokens':>19} {'tok/s':>8} {'vs londinium':>12}")
    for name in ours:
        print(f"{name:<28} {'':>9} {'':>8} {'':>8} {same(name):>19} {rate[name]:>8.0f} {paired[name]:>11.2f}x")
    for d in DTYPES:
        name = f"llama.cpp {d}"
        print(f"{name:<28} {sizes[d] / 2**20:>9.2f} {write_s[d]:>8.2f} {1000 * statistics.median(loads[d]):>8.0f} "
              f"{same(name):>19} {rate[name]:>8.0f} {paired[name]:>11.2f}x")
    for name, e in ours.items():
        if e.decoder.aot is not None:  # the batch-1 libraries (infer/aot.py), kept in the workspace's compiled/
            aot = e.decoder.aot
            print(f"{name}: first generation {first[name]:.1f} s wall (spans built {aot.built}, loaded from "
                  f"{ws.compiled_dir}: {aot.loaded}); eager's {first['londinium']:.1f} s")
    print(f"\nparameters {trained.num_params:,}; float32 bytes per parameter {sizes['float32'] / trained.num_params:.2f}")
    pairs = [(n, "llama.cpp float32") for n in ("londinium", "londinium compiled") if n in ours]
    pairs += [(n, "llama.cpp q8_0") for n in ours if n.startswith("londinium int8")]
    for a, b in pairs:  # issue 30's goals: >= 1x in each (the median of the rounds' own ratios)
        ratio = statistics.median(y / x for x, y in zip(times[a], times[b]))
        print(f"{a} / {b}: {ratio:.2f}x tokens/s")


def preset_shape(trained, preset: str):
    """`trained` with a freshly initialised model of `preset`'s shape (same tokenizer and vocabulary)."""
    import dataclasses

    from londinium.config import load_config
    from londinium.model.gpt import GPT

    model_cfg = dataclasses.replace(load_config(preset=preset).model, vocab_size=trained.config.model.vocab_size, dropout=0.0)
    torch.manual_seed(0)
    return dataclasses.replace(trained, model=GPT(model_cfg).eval(), config=dataclasses.replace(trained.config, model=model_cfg),
                               run=f"{preset} (random weights)")


if __name__ == "__main__":
    main()
