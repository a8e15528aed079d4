"""Beam search with a length penalty, on the engine's KV cache.

Keeps `num_beams` partial sequences; each step scores every one-token extension by its summed
log-probability and keeps the best `num_beams` that have not ended. A sequence that ends (end-of-
text, a stop token or a stop string) joins the finished hypotheses with the score

    sum of log-probabilities / (generated length ** length_penalty)

(`transformers`' definition: length_penalty > 0 favours longer sequences, < 0 shorter ones). The
search stops when every beam reached max_tokens, or, as `transformers` does with its default
`early_stopping=False`, when num_beams hypotheses are finished and the best live beam's score is no
better than the worst of them.

The prompt is prefilled once and its cache copied into every beam's row; after each step the cache
rows are reordered to follow their parents. Repetition, frequency/presence and n-gram penalties and
the logit bias shape the scores; temperature, top-k/p and min-p are sampling controls and do not
apply to a deterministic search.

Its memory grows with num_beams x (prompt + max_tokens), so before allocating anything the search
compares what the beams need (`beam_bytes`, from the model config) with the memory available and
refuses with the figures and the largest num_beams that fits.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from londinium.infer.outputs import Choice, TokenLogprob, TopLogprob
from londinium.infer.sampling import LogitsPipeline, SamplingParams, penalty_processors
from londinium.infer.text import TextStream

if TYPE_CHECKING:
    from londinium.infer.engine import Engine


@dataclass
class _Beam:
    ids: list[int]
    score: float  # sum of the (processed) log-probabilities the search ranks by
    raw: float  # sum of the model's own log-probabilities (reported, as for sampling)
    logprobs: list[TokenLogprob] | None = field(default=None)


@dataclass
class _Hypothesis:
    score: float  # length-normalised
    beam: _Beam
    text: str
    finish_reason: str


def _text(engine: Engine, ids: list[int], stop: list[str]) -> tuple[str, bool]:
    stream = TextStream(engine.token_bytes, stop)
    for t in ids:
        if stream.push(t)[1]:
            return stream.text, True
    stream.finish()
    return stream.text, False


def beam_bytes(cfg: Any, length: int, logprobs: int | None = None, dtype_bytes: int = 4) -> int:
    """Memory one beam needs for sequences of `length` tokens (prompt + max_tokens), from the config.

    The cache holds every layer's keys and values; reordering it after each step copies one layer's
    keys (or values) at a time, and attention reads a layer's slice as a copy too: peaks of up to
    (1 + 2 / n_layer) times the cache were measured, and 3 / n_layer keeps a margin. The logits,
    their log-softmax, scores and top-k candidates are several [beams, vocabulary] float32 tensors
    (up to 14 were seen; 16 counted). Each step also extends every beam's token list (and its
    log-probability entries when asked). Measured against peak RSS in docs/LOG.md (2026-12-05)."""
    from londinium.model.info import memory_estimate

    kv = memory_estimate(cfg, 1, dtype_bytes=dtype_bytes).kv_cache_per_token
    per_token = _LIST_BYTES + (0 if logprobs is None else _LOGPROB_BYTES * (1 + logprobs))
    return int((1 + 3 / cfg.n_layer) * kv * length) + 16 * 4 * cfg.vocab_size + per_token * length


_LIST_BYTES = 64  # a token id in a Python list, and the list copies each step makes
_LOGPROB_BYTES = 200  # one TokenLogprob or TopLogprob object with its token text


def available_bytes(device: torch.device) -> int:
    """Memory free for new tensors on `device`: the GPU's free memory, or the host's available
    memory (what the kernel can hand out without swapping; MPS shares it)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    import psutil

    return int(psutil.virtual_memory().available)


def check_memory(engine: Engine, prompt_tokens: int, params: SamplingParams) -> None:
    """SamplingError with the figures when `params.num_beams` beams cannot fit in memory, so an
    absurd --beams is one line instead of a process the kernel kills."""
    from londinium.infer.sampling import SamplingError

    cfg = engine.model.config
    length = prompt_tokens + params.max_tokens
    dtype_bytes = next(engine.model.parameters()).element_size()
    per_beam = beam_bytes(cfg, length, params.logprobs, dtype_bytes)
    free = available_bytes(engine.device)
    if params.num_beams * per_beam > free:
        raise SamplingError(
            f"sampling parameter num_beams = {params.num_beams:,} needs about {_gib(params.num_beams * per_beam)} for this "
            f"prompt ({prompt_tokens} tokens + max_tokens {params.max_tokens}: {per_beam / 1024:,.0f} KiB per beam), but "
            f"{_gib(free)} is available on {engine.device.type}; at most {free // per_beam:,} beams fit")


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


@torch.inference_mode()
def beam_search(engine: Engine, prompt_ids: list[int], params: SamplingParams) -> tuple[list[Choice], float]:
    """The `params.n` best sequences (best first) and the prefill time in seconds."""
    model, K, V = engine.model, params.num_beams, engine.vocab_size
    device = engine.device
    check_memory(engine, len(prompt_ids), params)
    stop_ids = set(params.stop_token_ids) | (set() if params.ignore_eos or engine.eos_id is None else {engine.eos_id})
    L, T = len(prompt_ids), params.max_tokens

    t0 = time.perf_counter()
    first = model.new_kv_cache(1, L)
    logits = model(torch.tensor([prompt_ids], device=device), kv_cache=first, logits_to_keep=1)[0][:, -1].float()
    cache = model.new_kv_cache(K, L + T)
    for layer in range(len(cache.k)):
        cache.k[layer][:, :, :L] = first.k[layer][:, :, :L]  # batch 1 broadcasts to every beam
        cache.v[layer][:, :, :L] = first.v[layer][:, :, :L]
    cache.length = L
    del first
    logits = logits.expand(K, V).contiguous()
    prefill_s = time.perf_counter() - t0

    processors = LogitsPipeline(penalty_processors([params] * K, [prompt_ids] * K, V, device))
    beams = [_Beam([], 0.0 if b == 0 else -math.inf, 0.0, [] if params.logprobs is not None else None) for b in range(K)]
    finished: list[_Hypothesis] = []

    def finish(beam: _Beam, text: str, reason: str) -> None:
        finished.append(_Hypothesis(beam.score / (len(beam.ids) ** params.length_penalty), beam, text, reason))
        finished.sort(key=lambda h: h.score, reverse=True)
        del finished[K:]

    for step in range(T):
        processed = processors(logits.clone()) if len(processors) else logits
        scores = torch.tensor([b.score for b in beams], device=device)[:, None] + processed.log_softmax(dim=-1)
        # 2K candidates: even if K of them end here, K live beams remain (transformers does the same).
        cand_scores, cand = scores.view(-1).topk(min(2 * K, K * V))
        raw = logits.log_softmax(dim=-1)
        live: list[_Beam] = []
        parents: list[int] = []
        for score, flat in zip(cand_scores.tolist(), cand.tolist()):
            if score == -math.inf:
                break
            parent, token = divmod(flat, V)
            old = beams[parent]
            entry = None
            if old.logprobs is not None:
                k = params.logprobs or 0
                values, indices = raw[parent].topk(k) if k else (torch.empty(0), torch.empty(0, dtype=torch.long))
                entry = TokenLogprob(token, engine.token_text(token), raw[parent, token].item(),
                                     [TopLogprob(i, engine.token_text(i), v) for v, i in zip(values.tolist(), indices.tolist())])
            beam = _Beam(old.ids + [token], score, old.raw + raw[parent, token].item(),
                         None if old.logprobs is None else old.logprobs + [entry])
            if token in stop_ids:
                finish(beam, _text(engine, old.ids, params.stop)[0], "stop")
                continue
            if params.stop:
                text, stopped = _text(engine, beam.ids, params.stop)
                if stopped:
                    finish(beam, text, "stop")
                    continue
            live.append(beam)
            parents.append(parent)
            if len(live) == K:
                break
        if not live:
            break
        if step == T - 1:
            for beam in live:
                finish(beam, _text(engine, beam.ids, params.stop)[0], "length")
            break
        best_live = live[0].score / (len(live[0].ids) ** params.length_penalty)
        if len(finished) == K and best_live <= finished[-1].score:
            break
        while len(live) < K:  # fewer live candidates than beams (tiny vocabularies): pad with dead rows
            live.append(_Beam(list(live[0].ids), -math.inf, 0.0, None))
            parents.append(parents[0])
        rows = torch.tensor(parents, device=device)
        for layer in range(len(cache.k)):
            cache.k[layer][:, :, :cache.length] = cache.k[layer][rows, :, :cache.length]
            cache.v[layer][:, :, :cache.length] = cache.v[layer][rows, :, :cache.length]
        processors.reorder(rows)
        tokens = torch.tensor([b.ids[-1] for b in live], device=device)
        processors.observe(tokens)
        beams = live
        logits = model(tokens[:, None], kv_cache=cache, logits_to_keep=1)[0][:, -1].float()

    return [Choice(i, h.text, h.beam.ids, h.finish_reason, h.beam.raw, h.beam.logprobs)
            for i, h in enumerate(finished[:params.n])], prefill_s
