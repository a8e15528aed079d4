"""The generation engine: prefill, then decode one token per step from a preallocated KV cache.

    engine = Engine(model, tokenizer)                      # or Engine.from_workspace(ws, run="main")
    [c] = engine.generate(["Thou art"], SamplingParams(max_tokens=20, temperature=0.7, seed=1))
    c.text, c.token_ids, c.finish_reason, c.choices[0].logprobs, c.timing
    for delta in engine.stream("Thou art", SamplingParams(stop=["."])):
        print(delta.text, end="", flush=True)

Batching: the sequences of a call (each prompt times its n or best_of) are decoded together.
Prompts of different lengths are left-padded to a common length; the cache carries each row's
padding (`KVCache.pad`), so the model masks the padding out and counts each row's positions from its
first real token. Every row then appends its next token at the same cache column, so one forward
pass per step serves the whole batch, and each row keeps its own sampling parameters and its own
random generator (a seeded row samples the same tokens alone or in any batch).

Per step the loop does one forward pass of `[B, 1]` tokens, the logits processors the batch asks
for (none for plain greedy or temperature-1 sampling), one sampling op and one transfer of B token
ids to Python; decoding to text works on bytes per token (see `text.py`), so nothing grows with the
length of the output.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence, Union

import torch

from londinium.errors import LondiniumError
from londinium.infer.outputs import Choice, Completion, TextDelta, Timing, TokenLogprob, TopLogprob
from londinium.infer.sampling import SamplingError, SamplingParams, TokenChooser, build_pipeline, make_generator, sample_seed
from londinium.infer.text import TextStream, token_bytes_table

Prompt = Union[str, Sequence[int]]


class PromptError(LondiniumError):
    """A prompt cannot be generated from: too long for the model's context, or invalid token ids."""


@dataclass
class _Sequence:
    """One sequence being decoded: a sample of a request."""

    request: int
    choice: int
    params: SamplingParams
    prompt_ids: list[int]
    stream: TextStream
    stop_ids: frozenset[int]
    ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    cumulative: float = 0.0
    finish_reason: str | None = None
    first_token_at: float = 0.0
    prefill_s: float = 0.0
    finished_at: float = 0.0


class Engine:
    """Text generation from a GPT and its tokenizer; see the module docstring."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, max_batch_size: int = 32):
        from londinium.tokenizer.codec import EOT

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.context: int = model.config.context
        self.vocab_size: int = model.config.vocab_size
        table = token_bytes_table(tokenizer)
        if len(table) > self.vocab_size:
            raise LondiniumError(
                f"the tokenizer has {len(table)} tokens but the model only {self.vocab_size} (model.vocab_size): "
                "they do not belong together; use the tokenizer the model was trained with")
        # A model may have a padded vocabulary; ids past the tokenizer's decode to nothing.
        self.token_bytes = table + [b""] * (self.vocab_size - len(table))
        self.eos_id: int | None = tokenizer.token_to_id(EOT)
        self.device = next(model.parameters()).device
        self.max_batch_size = max_batch_size
        self.loaded_from = "a model in memory"  # what from_workspace loaded, for messages

    @classmethod
    def from_trained(cls, trained: Any, **kwargs: Any) -> Engine:
        """The engine for a model loaded by `londinium.model.load.load_run`."""
        engine = cls(trained.model, trained.tokenizer, **kwargs)
        engine.loaded_from = trained.describe()
        return engine

    @classmethod
    def from_workspace(cls, ws: Any, run: str = "main", checkpoint: str = "best", device: str = "cpu", **kwargs: Any) -> Engine:
        """The engine for a trained run: its checkpoint (best, latest or a path) and the workspace
        tokenizer, which must be the one the run was trained with (see `load_run`)."""
        from londinium.model.load import load_run

        return cls.from_trained(load_run(ws, run=run, checkpoint=checkpoint, device=device), **kwargs)

    # ---- prompts ---------------------------------------------------------------------------------

    def encode_prompt(self, prompt: Prompt, params: SamplingParams, index: int = 0) -> list[int]:
        """Token ids of a prompt (text or ids), checked against the context; an empty prompt starts
        from end-of-text, the separator the model saw between training documents."""
        from londinium.tokenizer.codec import encode

        if isinstance(prompt, str):
            ids = encode(self.tokenizer, prompt)
        else:
            ids = list(prompt)
            bad = [t for t in ids if not isinstance(t, int) or not 0 <= t < self.vocab_size]
            if bad:
                raise PromptError(f"prompt {index}: token ids {bad[:5]} are not in the vocabulary (0 .. {self.vocab_size - 1})")
        if not ids:
            if self.eos_id is None:
                raise PromptError(f"prompt {index} is empty and the tokenizer has no end-of-text token to start from; give some text")
            ids = [self.eos_id]
        room = self.context - params.max_tokens
        if room < 1:
            raise PromptError(
                f"max_tokens = {params.max_tokens} leaves no room for a prompt in the model's context of {self.context} "
                f"tokens; ask for at most {self.context - 1} tokens")
        if len(ids) > room:
            if not params.truncate:
                raise PromptError(
                    f"prompt {index} has {len(ids)} tokens; with max_tokens = {params.max_tokens} that is "
                    f"{len(ids) + params.max_tokens}, more than the model's context of {self.context} tokens. "
                    "Shorten the prompt, lower max_tokens, or truncate it from the left (truncate=True, --truncate)")
            ids = ids[-room:]
        return ids

    def _params(self, n_prompts: int, params: SamplingParams | Sequence[SamplingParams] | None) -> list[SamplingParams]:
        if params is None:
            params = SamplingParams()
        plist = [params] * n_prompts if isinstance(params, SamplingParams) else list(params)
        if len(plist) != n_prompts:
            raise SamplingError(f"got {n_prompts} prompts but {len(plist)} SamplingParams; give one for all or one per prompt")
        for p in plist:
            p.validate(self.vocab_size)
        return plist

    def _sequences(self, prompts: Sequence[Prompt], plist: list[SamplingParams], ids: list[list[int]]) -> list[_Sequence]:
        seqs = []
        for r, (p, prompt_ids) in enumerate(zip(plist, ids)):
            stop_ids = frozenset(p.stop_token_ids) | (frozenset() if p.ignore_eos or self.eos_id is None else {self.eos_id})
            for c in range(p.samples):
                seqs.append(_Sequence(r, c, p.replace(seed=sample_seed(p.seed, c)), prompt_ids,
                                      TextStream(self.token_bytes, p.stop), stop_ids,
                                      logprobs=[] if p.logprobs is not None else None))
        return seqs

    # ---- public API ------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams | Sequence[SamplingParams] | None = None) -> list[Completion]:
        """One `Completion` per prompt, in order. `params` is one SamplingParams for all prompts, or one each."""
        from londinium.infer.beam import beam_search

        if isinstance(prompts, str):
            prompts = [prompts]
        plist = self._params(len(prompts), params)
        ids = [self.encode_prompt(p, sp, i) for i, (p, sp) in enumerate(zip(prompts, plist))]
        results: list[Completion | None] = [None] * len(prompts)
        sampled = [i for i, p in enumerate(plist) if p.num_beams == 1]
        for i, p in enumerate(plist):
            if p.num_beams > 1:
                t0 = time.perf_counter()
                choices, prefill_s = beam_search(self, ids[i], p)
                total = time.perf_counter() - t0
                results[i] = Completion(_prompt_text(prompts[i]), ids[i], choices,
                                        Timing(len(ids[i]), sum(len(c.token_ids) for c in choices), prefill_s, total - prefill_s))
        seqs = self._sequences([prompts[i] for i in sampled], [plist[i] for i in sampled], [ids[i] for i in sampled])
        for _ in self._run(seqs):
            pass
        for r, i in enumerate(sampled):
            mine = [s for s in seqs if s.request == r]
            results[i] = self._completion(_prompt_text(prompts[i]), ids[i], plist[i], mine)
        return results  # type: ignore[return-value]

    def stream(self, prompt: Prompt, params: SamplingParams | None = None) -> Iterator[TextDelta]:
        """Deltas of one prompt's sequences as they are decoded (see `stream_batch`)."""
        return self.stream_batch([prompt], params)

    def stream_batch(self, prompts: Sequence[Prompt], params: SamplingParams | Sequence[SamplingParams] | None = None) -> Iterator[TextDelta]:
        """Deltas of every sequence, step by step; `delta.index` is the prompt, `delta.choice` the sample.

        Text arrives in whole characters and never shows a part of a stop string. best_of and beam
        search choose among finished sequences, so they cannot stream; use `generate` for them.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        plist = self._params(len(prompts), params)
        for p in plist:
            if p.num_beams > 1:
                raise SamplingError("beam search (num_beams > 1) picks whole sequences at the end, so it cannot stream; use generate")
            if p.best_of is not None and p.best_of > p.n:
                raise SamplingError(f"best_of = {p.best_of} picks among finished samples, so it cannot stream; use generate, or best_of = n")
        ids = [self.encode_prompt(p, sp, i) for i, (p, sp) in enumerate(zip(prompts, plist))]
        return self._run(self._sequences(prompts, plist, ids))

    # ---- decoding --------------------------------------------------------------------------------

    def _batches(self, seqs: list[_Sequence]) -> list[list[_Sequence]]:
        """Group sequences into batches that fit the context: with left padding every row spans the
        longest prompt plus the largest max_tokens. Similar lengths go together (less padding)."""
        batches: list[list[_Sequence]] = []
        current: list[_Sequence] = []
        longest = budget = 0
        for s in sorted(seqs, key=lambda s: len(s.prompt_ids)):
            lo, bu = max(longest, len(s.prompt_ids)), max(budget, s.params.max_tokens)
            if current and (len(current) >= self.max_batch_size or lo + bu > self.context):
                batches.append(current)
                current, lo, bu = [], len(s.prompt_ids), s.params.max_tokens
            current.append(s)
            longest, budget = lo, bu
        if current:
            batches.append(current)
        return batches

    def _run(self, seqs: list[_Sequence]) -> Iterator[TextDelta]:
        for batch in self._batches(seqs):
            yield from self._decode(batch)

    @torch.inference_mode()
    def _decode(self, seqs: list[_Sequence]) -> Iterator[TextDelta]:
        B = len(seqs)
        lengths = [len(s.prompt_ids) for s in seqs]
        L, new = max(lengths), max(s.params.max_tokens for s in seqs)
        pads = [L - n for n in lengths]
        idx = torch.zeros(B, L, dtype=torch.long)  # padding id 0: masked out, never seen
        for b, s in enumerate(seqs):
            idx[b, pads[b]:] = torch.tensor(s.prompt_ids, dtype=torch.long)
        cache = self.model.new_kv_cache(B, L + new)
        if any(pads):
            cache.pad = torch.tensor(pads, device=self.device)
        params = [s.params for s in seqs]
        pipeline = build_pipeline(params, [s.prompt_ids for s in seqs], self.vocab_size, self.device)
        choose = TokenChooser([p.greedy for p in params], [make_generator(p.seed, self.device) for p in params], self.device)
        top_k = max((p.logprobs for p in params if p.logprobs is not None), default=None)

        t0 = time.perf_counter()
        logits = self.model(idx.to(self.device), kv_cache=cache, logits_to_keep=1)[0][:, -1].float()
        for step in range(new):
            processed = pipeline(logits.clone()) if len(pipeline) else logits
            tokens = choose(processed)
            pipeline.observe(tokens)
            # Log-probabilities of the model's own distribution (log_softmax is vectorised on CPU:
            # ~2x faster than logsumexp there), then gathers.
            logp = logits.log_softmax(dim=-1)
            chosen_lp = logp.gather(1, tokens[:, None])[:, 0].tolist()
            top = None
            if top_k:
                values, indices = logp.topk(top_k, dim=-1)
                top = (values.tolist(), indices.tolist())
            toks = tokens.tolist()
            now = time.perf_counter()
            for b, s in enumerate(seqs):
                if s.finish_reason is not None:
                    continue  # a finished row still runs in the batch; its tokens are ignored
                if step == 0:
                    s.prefill_s, s.first_token_at = now - t0, now
                yield self._advance(s, toks[b], chosen_lp[b], top[0][b] if top else None, top[1][b] if top else None, now)
            if all(s.finish_reason is not None for s in seqs):
                break
            logits = self.model(tokens[:, None], kv_cache=cache, logits_to_keep=1)[0][:, -1].float()

    def token_text(self, token_id: int) -> str:
        return self.token_bytes[token_id].decode("utf-8", errors="replace")

    def _advance(self, s: _Sequence, token: int, logprob: float, top_values: list[float] | None,
                 top_ids: list[int] | None, now: float) -> TextDelta:
        s.ids.append(token)
        s.cumulative += logprob
        entry = None
        if s.logprobs is not None:
            k = s.params.logprobs or 0
            alternatives = [TopLogprob(i, self.token_text(i), v) for v, i in zip((top_values or [])[:k], (top_ids or [])[:k])]
            entry = TokenLogprob(token, self.token_text(token), logprob, alternatives)
            s.logprobs.append(entry)
        if token in s.stop_ids:
            text, s.finish_reason = s.stream.finish(), "stop"
        else:
            text, stopped = s.stream.push(token)
            if stopped:
                s.finish_reason = "stop"
            elif len(s.ids) >= s.params.max_tokens:
                text += s.stream.finish()
                s.finish_reason = "length"
        if s.finish_reason is not None:
            s.finished_at = now
        return TextDelta(s.request, s.choice, text, [token], [entry] if entry else None, s.finish_reason)

    def _completion(self, prompt: str, prompt_ids: list[int], params: SamplingParams, seqs: list[_Sequence]) -> Completion:
        choices = [Choice(s.choice, s.stream.text, s.ids, s.finish_reason or "length", s.cumulative, s.logprobs)
                   for s in sorted(seqs, key=lambda s: s.choice)]
        if params.best_of is not None and params.best_of > params.n:
            # best_of: the n samples the model finds most likely per token (mean, so length does not decide).
            choices = sorted(choices, key=lambda c: c.mean_logprob, reverse=True)[:params.n]
            for i, c in enumerate(choices):
                c.index = i
        first = min(s.first_token_at for s in seqs)
        timing = Timing(len(prompt_ids), sum(len(s.ids) for s in seqs), max(s.prefill_s for s in seqs),
                        max(s.finished_at for s in seqs) - first)
        return Completion(prompt, prompt_ids, choices, timing)


def _prompt_text(prompt: Prompt) -> str:
    return prompt if isinstance(prompt, str) else ""
