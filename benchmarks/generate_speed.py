"""Generation speed of londinium's engine against `transformers`' `generate`, same model, same weights.

    .venv/bin/python benchmarks/generate_speed.py                  # tiny and small, batch 1 and 8, 64-token prompt, 128 new
    .venv/bin/python benchmarks/generate_speed.py --rounds 5 --new 128 --threads 1 --presets tiny --greedy
    .venv/bin/python benchmarks/generate_speed.py --quick          # seconds: every code path, tiny sizes (the tests run this)

Each preset's own model (`--presets`: tiny is Llama-style, 2 layers x 128; small is GPT-2 style,
6 x 384; slm 12 x 768), random weights, with the vocabulary of the preset's tokenizer; the peer is
the `transformers` class the export maps it to (`model/hf_layout.py`: LlamaForCausalLM for tiny,
GPT2LMHeadModel for small and slm) holding the same weights (its logits are checked against ours
first). Both sample with temperature 1 and top-k 50 (transformers' default; `--greedy`: argmax),
never stop early (EOS ignored), and decode the same prompts to the same number of new tokens.

Rows:
- prefill: one forward pass over the prompts (tokens/s of prompt);
- decode with cache: londinium `Engine.generate` vs `model.generate(use_cache=True)`;
- model forward only: prefill then one-token forward passes with the cache and no sampling at all,
  for each model: the floor under any engine, so the gap to it is the engine's own overhead;
- decode without cache: re-running the whole sequence every step (our plain loop, and
  `generate(use_cache=False)`).

Decode tokens/s = new tokens after the first / (generation time - prefill time), so both sides are
charged the same way. Implementations are timed in alternating rounds in one process, so load from
other processes hits all alike; each figure is the median of the rounds. The machine may be shared:
read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from peers import max_logit_difference, preset_model_config, transformers_peer

from londinium.config import PRESETS
from londinium.infer import Engine, SamplingParams
from londinium.model.gpt import GPT

# The presets are bound by different things at batch 1: small's 55 MB of fp32 weights do not fit
# this CPU's 32 MB L3, so each decode step streams them from memory (both implementations read the
# same bytes); tiny's 3 MB do, so per-step overhead decides.
DEFAULT_PRESETS = ["tiny", "small"]
TEXT = ("Shall I compare thee to a summer's day? Thou art more lovely and more temperate. "
        "In the beginning God created the heaven and the earth. To be, or not to be: that is the question. ")


def build(preset: str) -> tuple[GPT, torch.nn.Module, object]:
    from londinium.tokenizer.train import train_bpe

    torch.manual_seed(0)
    ours = GPT(preset_model_config(preset)).eval()
    peer = transformers_peer(ours)
    # The tokenizer only matters for decoding text; ids past its vocabulary decode to nothing.
    tok = train_bpe([TEXT] * 50, 1000, show_progress=False)
    return ours, peer, tok


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompt", type=int, default=64, help="prompt tokens")
    ap.add_argument("--new", type=int, default=128, help="new tokens per sequence")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--no-uncached", action="store_true", help="skip the slow rows without a KV cache")
    ap.add_argument("--presets", nargs="+", choices=sorted(PRESETS), default=DEFAULT_PRESETS, help="preset models to time")
    ap.add_argument("--greedy", action="store_true", help="argmax instead of temperature 1, top-k 50")
    ap.add_argument("--quick", action="store_true", help="every row at toy sizes (seconds): that the script runs, not its figures")
    args = ap.parse_args()
    if args.quick:
        args.prompt, args.new, args.batches, args.rounds, args.threads = 8, 4, [2], 1, args.threads or 1
        args.no_uncached = True
    if args.threads:
        torch.set_num_threads(args.threads)
    for preset in args.presets:
        print(f"===== preset {preset}")
        run(args, preset)
        print()


def run(args: argparse.Namespace, preset: str) -> None:
    ours, peer, tok = build(preset)
    cfg = ours.config
    assert args.prompt + args.new <= cfg.context, f"prompt + new tokens must fit the context ({cfg.context})"
    engine = Engine(ours, tok)
    print(f"model: {ours.num_params():,} parameters, {cfg.n_layer} layers x {cfg.n_embd}, vocabulary {cfg.vocab_size}, "
          f"peer {type(peer).__name__}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"max |logit difference| ours vs transformers: {max_logit_difference(ours, peer):.2e}")
    sampling = "greedy" if args.greedy else "temperature 1, top-k 50"
    print(f"prompt {args.prompt} tokens, {args.new} new tokens per sequence, {sampling}, median of {args.rounds} rounds\n")

    N = args.new
    params = SamplingParams(max_tokens=N, ignore_eos=True, **(dict(temperature=0.0) if args.greedy else dict(temperature=1.0, top_k=50)))
    peer_sampling = dict(do_sample=False) if args.greedy else dict(do_sample=True, top_k=50, temperature=1.0)
    rows: list[tuple[str, int, str, float]] = []
    for B in args.batches:
        g = torch.Generator().manual_seed(B)
        prompts = torch.randint(1, cfg.vocab_size, (B, args.prompt), generator=g)
        ids = prompts.tolist()

        def ours_prefill() -> None:
            cache = ours.new_kv_cache(B, args.prompt)
            ours(prompts, kv_cache=cache, logits_to_keep=1)

        def peer_prefill() -> None:
            peer(prompts, use_cache=True, logits_to_keep=1)

        def ours_cached() -> None:
            out = engine.generate(ids, params)
            assert all(len(c.token_ids) == N for c in out)

        def peer_generate(use_cache: bool) -> None:
            out = peer.generate(prompts, attention_mask=torch.ones_like(prompts), **peer_sampling,
                                max_new_tokens=N, min_new_tokens=N, use_cache=use_cache, pad_token_id=0)
            assert out.shape == (B, args.prompt + N)

        def ours_forward_only() -> None:
            # The floor under any engine: prefill, then N-1 forward passes of one token, no sampling.
            cache = ours.new_kv_cache(B, args.prompt + N)
            ours(prompts, kv_cache=cache, logits_to_keep=1)
            step = prompts[:, -1:]
            for _ in range(N - 1):
                ours(step, kv_cache=cache, logits_to_keep=1)

        def peer_forward_only() -> None:
            out = peer(prompts, use_cache=True, logits_to_keep=1)
            step, past = prompts[:, -1:], out.past_key_values
            for _ in range(N - 1):
                past = peer(step, past_key_values=past, use_cache=True, logits_to_keep=1).past_key_values

        def ours_uncached() -> None:
            seq = prompts
            for _ in range(N):
                logits = ours(seq, logits_to_keep=1)[0][:, -1]
                top = logits.topk(50, dim=-1)
                pick = torch.multinomial(top.values.softmax(-1), 1)
                seq = torch.cat([seq, top.indices.gather(1, pick)], dim=1)

        impls = {
            "londinium prefill": ours_prefill,
            "transformers prefill": peer_prefill,
            "londinium Engine (KV cache)": ours_cached,
            "transformers generate (KV cache)": lambda: peer_generate(True),
            "londinium model forward only (KV cache)": ours_forward_only,
            "transformers model forward only (KV cache)": peer_forward_only,
        }
        if not args.no_uncached:
            impls["londinium, no cache (re-run sequence)"] = ours_uncached
            impls["transformers generate (use_cache=False)"] = lambda: peer_generate(False)
        times: dict[str, list[float]] = {k: [] for k in impls}
        with torch.inference_mode():
            for fn in impls.values():  # warm-up
                fn()
            for _ in range(args.rounds):
                for name, fn in impls.items():
                    times[name].append(timed(fn))
        med = {k: statistics.median(v) for k, v in times.items()}
        pre = {"londinium": med["londinium prefill"], "transformers": med["transformers prefill"]}
        for name, t in med.items():
            who = name.split()[0].rstrip(",")
            if "prefill" in name:
                rows.append((name, B, "prefill tok/s", B * args.prompt / t))
            else:
                rows.append((name, B, "decode tok/s", B * (N - 1) / max(1e-9, t - pre[who])))

    width = max(len(r[0]) for r in rows)
    print(f"{'implementation':<{width}}  batch  {'metric':<14} {'tokens/s':>10}")
    for name, B, metric, rate in rows:
        print(f"{name:<{width}}  {B:>5}  {metric:<14} {rate:>10.1f}")
    print()
    rate = {(r[0], r[1]): r[3] for r in rows}
    for B in args.batches:
        ratio = rate[("londinium Engine (KV cache)", B)] / rate[("transformers generate (KV cache)", B)]
        print(f"batch {B}: londinium decode / transformers decode (both with KV cache) = {ratio:.2f}x")
        ratio = rate[("londinium prefill", B)] / rate[("transformers prefill", B)]
        print(f"batch {B}: londinium prefill / transformers prefill = {ratio:.2f}x")
        share = rate[("londinium Engine (KV cache)", B)] / rate[("londinium model forward only (KV cache)", B)]
        print(f"batch {B}: londinium Engine runs at {share:.0%} of the speed of its bare model forward passes")
        if not args.no_uncached:
            ratio = rate[("londinium Engine (KV cache)", B)] / rate[("londinium, no cache (re-run sequence)", B)]
            print(f"batch {B}: londinium with KV cache / without = {ratio:.2f}x")


if __name__ == "__main__":
    main()
