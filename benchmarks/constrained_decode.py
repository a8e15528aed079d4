"""Constrained decoding: what the grammar's token mask costs, per library and inside the engine.

    .venv/bin/python benchmarks/constrained_decode.py -w londinium-work [--run main] [--new 120] [--rounds 5]

1. The libraries alone, on the workspace's tokenizer (our byte-level BPE, its tokenizer.json):
   llguidance and, when it is installed, xgrammar. Each compiles the same JSON Schema, then for
   `--new` steps fills the token mask of B matchers (batch 1 and 16) and advances each by a token
   drawn from what its mask allows (seeded, the same draw for both): microseconds of mask per
   sequence per token, and the grammar's compile time. xgrammar gets the tokenizer through
   transformers' fast-tokenizer wrapper, the route its documentation gives for Hugging Face tokenizers.
2. The engine (llguidance): sampled decode (temperature 1, seeded) of `--new` tokens at batch 1 and
   16 through `Engine.generate`, unconstrained against constrained by a schema that never completes
   early (at least 256 items), so both generate the same number of tokens; the two alternate round
   by round and the median of each round's ratio is printed: the per-token overhead of
   constraining, in wall-clock time and in the process's CPU time (all its threads). On a shared,
   oversubscribed CPU the wall clock mostly measures the scheduler (a process with more threads
   gets more time slices); the CPU time is the work done.
"""

from __future__ import annotations

import os
import random
import statistics
import time

import torch

from weight_dtypes import run_parser

# Cannot complete in fewer than --new tokens (each item takes at least one), so every sample runs to
# --new tokens whatever the model picks and the timings compare: a schema the model may close after two
# tokens ("[]") measures the request's set-up, not the per-token mask.
SCHEMA = {"type": "array", "minItems": 256, "items": {"type": "string"}}
# What the library comparison compiles: the shape an application asks for (nesting, enums, numbers).
APP_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["speaker", "act", "lines"],
    "properties": {"speaker": {"enum": ["HAMLET", "OPHELIA", "GHOST"]}, "act": {"type": "integer", "minimum": 1, "maximum": 5},
                   "lines": {"type": "array", "items": {"type": "string"}}}}


def _llguidance(tokenizer, vocab: int, eos: int):
    import llguidance
    from llguidance.torch import allocate_token_bitmask, fill_next_token_bitmask

    t0 = time.perf_counter()
    tok = llguidance.LLTokenizer(tokenizer.to_str(), n_vocab=vocab, eos_token=eos)
    grammar = llguidance.LLMatcher.grammar_from_json_schema(APP_SCHEMA, defaults={"whitespace_flexible": False})
    llguidance.LLMatcher(tok, grammar, log_level=0)
    setup = time.perf_counter() - t0
    return setup, (lambda: llguidance.LLMatcher(tok, grammar, log_level=0)), allocate_token_bitmask, fill_next_token_bitmask, \
        (lambda m, t: m.consume_token(t)), (lambda m: m.is_stopped())


def _xgrammar(tokenizer, vocab: int, eos: int):
    import xgrammar as xgr
    from transformers import PreTrainedTokenizerFast

    t0 = time.perf_counter()
    info = xgr.TokenizerInfo.from_huggingface(PreTrainedTokenizerFast(tokenizer_object=tokenizer), vocab_size=vocab,
                                              stop_token_ids=[eos])
    compiled = xgr.GrammarCompiler(info).compile_json_schema(APP_SCHEMA, any_whitespace=False)
    setup = time.perf_counter() - t0
    print(f"xgrammar reads the tokenizer as vocab_type {info.vocab_type.name}, {len(info.special_token_ids)} special tokens")
    return setup, (lambda: xgr.GrammarMatcher(compiled)), xgr.allocate_token_bitmask, \
        (lambda m, mask, i: m.fill_next_token_bitmask(mask, i)), (lambda m, t: m.accept_token(t)), (lambda m: m.is_terminated())


def library_costs(tokenizer, vocab: int, eos: int, steps: int) -> None:
    libraries = {"llguidance": _llguidance}
    try:
        import xgrammar  # noqa: F401
        libraries["xgrammar"] = _xgrammar
    except ImportError:
        print("xgrammar is not installed: only llguidance measured (pip install xgrammar to compare)")
    print(f"{'library':<11} {'batch':>5} {'setup ms':>9} {'mask us/seq/token':>18} {'tokens':>7}")
    for name, make in libraries.items():
        setup, matcher, allocate, fill, consume, stopped = make(tokenizer, vocab, eos)
        for batch in (1, 16):
            rng = random.Random(0)
            matchers = [matcher() for _ in range(batch)]
            mask = allocate(batch, vocab)
            spent, tokens = 0.0, 0
            for _ in range(steps):
                live = [i for i, m in enumerate(matchers) if not stopped(m)]
                if not live:
                    break
                t0 = time.perf_counter()
                for i in live:
                    fill(matchers[i], mask, i)
                spent += time.perf_counter() - t0
                bits = mask.tolist()
                for i in live:
                    allowed = [t for t in range(vocab) if bits[i][t // 32] >> (t % 32) & 1]
                    consume(matchers[i], rng.choice(allowed))
                    tokens += 1
            print(f"{name:<11} {batch:>5} {setup * 1e3:>9.1f} {spent / max(tokens, 1) * 1e6:>18.1f} {tokens:>7}")


def engine_overhead(engine, new: int, rounds: int) -> None:
    from londinium.infer import SamplingParams
    from londinium.infer.constrain import Constraint

    print(f"{'batch':>5} {'free tok/s':>11} {'constrained tok/s':>18} {'overhead (median of rounds)':>28} "
          f"{'CPU overhead':>13}")
    for batch in (1, 16):
        free = [SamplingParams(max_tokens=new, seed=s, ignore_eos=True) for s in range(batch)]
        held = [p.replace(constraint=Constraint.json_schema(SCHEMA)) for p in free]
        engine.generate(["Thou art"] * batch, held)  # warm: the grammar library's tokenizer is built once
        rates: dict[str, list[float]] = {"free": [], "constrained": []}
        cpu: dict[str, list[float]] = {"free": [], "constrained": []}
        for _ in range(rounds):
            for kind, params in (("free", free), ("constrained", held)):
                t0, c0 = time.perf_counter(), time.process_time()
                done = engine.generate(["Thou art"] * batch, params)
                cpu[kind].append(time.process_time() - c0)
                assert all(len(c.token_ids) == new for c in done), "a constrained sample ended early: timings would not compare"
                rates[kind].append(sum(len(c.token_ids) for c in done) / (time.perf_counter() - t0))
        overhead = statistics.median(f / c - 1 for f, c in zip(rates["free"], rates["constrained"]))
        cpu_overhead = statistics.median(c / f - 1 for f, c in zip(cpu["free"], cpu["constrained"]))
        print(f"{batch:>5} {statistics.median(rates['free']):>11.0f} {statistics.median(rates['constrained']):>18.0f} "
              f"{overhead:>27.1%} {cpu_overhead:>13.1%}")


def main() -> None:
    args = run_parser(__doc__, docs=0, new=120).parse_args()  # --docs is not used here
    if args.quick:
        args.new, args.rounds, args.checkpoint = 16, 1, "latest"
    torch.set_num_threads(args.threads)

    from londinium.infer import Engine
    from londinium.workspace import Workspace

    engine = Engine.from_workspace(Workspace(args.workspace), run=args.run, checkpoint=args.checkpoint)
    library_costs(engine.tokenizer, engine.vocab_size, engine.eos_id, args.new)
    engine_overhead(engine, args.new, args.rounds)
    print("overhead: constrained per-token time / unconstrained - 1, sampled decode through the engine "
          f"(wall clock; CPU: the process's CPU time; load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
