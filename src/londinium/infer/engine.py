"""The generation engine: an iteration-level scheduler over a KV cache with one slot per sequence.

    engine = Engine(model, tokenizer)                      # or Engine.from_workspace(ws, run="main")
    [c] = engine.generate(["Thou art"], SamplingParams(max_tokens=20, temperature=0.7, seed=1))
    c.text, c.token_ids, c.finish_reason, c.choices[0].logprobs, c.timing
    for delta in engine.stream("Thou art", SamplingParams(stop=["."])):
        print(delta.text, end="", flush=True)

Continuous batching (vLLM's and Orca's iteration-level scheduling). Requests wait in a queue;
`step()` does one iteration over all of them:

1. cancelled requests leave, and their slots are free;
2. waiting requests are admitted while slots are free (a request with n samples takes n), and
   prefilled within the step's token budget (`max_step_tokens` minus one token per running
   sequence): a long prompt is prefilled in chunks over several steps, so it never stalls the
   others' next token for long. Each prompt is prefilled once into a cache of its own (`KVCache`),
   then copied into a slot of the running cache (`SlotCache`) for every sample;
3. every running sequence is decoded by one token: one forward pass of `[B, 1]` tokens, each at its
   own position over its own keys (one masked attention call), then the logits processors the rows
   ask for, one sampling op and one transfer of B token ids to Python. When every row is greedy and
   asks for no processor and no alternatives, the argmax and its log-probability are taken inside
   the decode step itself (`infer/decode.py`, which can also compile the step);
4. finished sequences leave at once: the last rows move into the holes, so the rows in use stay
   0 .. B-1 and a step reads views of the cache, never a gather.

The engine schedules; each part of a step has its module: `requests` (a request, its running
sequences, how a sequence takes its token, the completion), `prefill` (the queue, admission and
chunked prefill), `batch` (the running rows: joining, choosing tokens, eviction), `decode` (the
forward pass of a step) and `speculative` (a draft's rounds).

`generate`, `stream`, evaluation and the chat REPL all run on this one loop, as does the server
(`londinium.infer.scheduler.EngineLoop` drives `step()` on a background thread). Each sequence keeps
its own sampling parameters, processor state and random generator while others join and leave, so a
seeded request samples the same tokens alone or in any company. Beam search has its own path
(`beam.py`). Decoding to text works on bytes per token (see `text.py`), so nothing grows with the
length of the output.
"""

from __future__ import annotations

import collections
import functools
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from londinium.errors import LondiniumError
from londinium.infer.batch import RunningBatch
from londinium.infer.decode import Decoder
from londinium.infer.outputs import Completion, TextDelta, Timing
from londinium.infer.prefill import Prefill
from londinium.infer.requests import (EngineRequestError, Prompt, PromptError, Request, RunningSequence, StepEvent, advance,
                                      cancelled_completion, completion_of)
from londinium.infer.sampling import SamplingError, SamplingParams, make_generator, sample_seed
from londinium.infer.text import TextStream, token_bytes_table
from londinium.model.cache import PrefixCache

__all__ = ["Engine", "EngineRequestError", "Prompt", "PromptError", "Request", "StepEvent"]


class Engine:
    """Text generation from a GPT and its tokenizer; see the module docstring.

    `max_running` sequences are decoded together (the cache's slots); a step computes at most
    `max_step_tokens` tokens, one per running sequence plus prefill chunks of admitted prompts.
    `prefix_cache_tokens` keeps that many tokens of recent prompts' keys/values for prompts that
    start the same way (see `PrefixCache`; default 8 contexts' worth, 0 turns it off). It assumes
    the model's weights do not change under the engine: after changing them, `prefixes.clear()`.
    `compile` runs the decode step through `torch.compile` (see `londinium.infer.decode`), keeping
    the batch-1 step's ahead-of-time libraries in `compiled_dir` for later processes when given;
    `kv_dtype="int8"` holds the running sequences' keys and values in int8 (`londinium.model.kv_int8`).
    `draft` (a GPT over the same tokenizer) proposes `draft_tokens` tokens a step that the model checks
    in one pass (`infer/speculative.py`), while one sequence runs alone; with others it waits.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, max_running: int = 32, max_step_tokens: int = 512,
                 prefix_cache_tokens: int | None = None, compile: bool = False, kv_dtype: str = "float32",
                 draft: torch.nn.Module | None = None, draft_tokens: int = 2, compiled_dir: Path | None = None):
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
        self.loaded_from = "a model in memory"  # what from_workspace loaded, for messages
        self.counters = collections.Counter()
        self._cancels = False  # some request was cancelled since the last step looked
        self.serving = False  # an EngineLoop's thread owns the engine (see londinium.infer.scheduler)
        self.prefixes = PrefixCache(8 * self.context if prefix_cache_tokens is None else prefix_cache_tokens)
        self.queue = Prefill(self.model, self.prefixes, self.counters, self.device)  # waiting and prefilling requests
        self.batch = RunningBatch(self.model, max_running, kv_dtype, self.vocab_size, self.device)  # the running sequences
        # How a sequence takes its token: an attribute, so a test can make one request fail there.
        self._advance = functools.partial(advance, self.token_text)
        self.decoder = Decoder(self.model, compile=compile, compiled_dir=compiled_dir)
        self.kv_dtype = kv_dtype
        self._grammars: Any = None  # `constrain.Grammars`, built at the first constrained request
        model.new_slot_cache(1, 1, kv_dtype)  # a bad kv_dtype is refused here, not at the first step
        self.speculator = None
        if draft is not None:
            from londinium.errors import ConfigError
            from londinium.infer.speculative import Speculator

            if kv_dtype != "float32":
                raise ConfigError(f"speculative decoding (a draft model) needs the float32 KV cache, not kv_dtype = {kv_dtype!r}: "
                                  "the target checks several proposals at once, which the int8 cache does not take")
            self.speculator = Speculator(draft, model.config, draft_tokens)
        self.configure(max_running, max_step_tokens)

    def configure(self, max_running: int, max_step_tokens: int) -> None:
        """Set the scheduler's limits (only while nothing runs: the cache is sized by max_running)."""
        from londinium.errors import ConfigError

        if self.has_work():
            raise RuntimeError("the engine's limits change only while no request runs")
        if max_running < 1:
            raise ConfigError(f"max_running = {max_running}: the engine must run at least one sequence")
        if max_step_tokens <= max_running:
            raise ConfigError(
                f"max_step_tokens = {max_step_tokens} must exceed max_running = {max_running}: a step decodes one "
                "token per running sequence and needs room left for prefill")
        self.batch.resize(max_running)
        self.max_running, self.max_step_tokens = max_running, max_step_tokens

    def abort(self) -> list[Request]:
        """Drop every request (after a failure that is no one request's, e.g. in the batched forward
        pass): the scheduler starts empty; returns the requests dropped, for the caller to fail."""
        q = self.queue
        dropped = list(dict.fromkeys([*q.waiting, *q.prefilling, *(s.request for s in self.batch.rows)]))
        for r in dropped:
            r.done, r.prefill = True, None
        q.clear()
        self.batch.clear()
        return dropped

    @classmethod
    def with_settings(cls, model: torch.nn.Module, tokenizer: Any, gen: Any = None, workspace: Any = None,
                      **kwargs: Any) -> Engine:
        """The engine the `[generate]` section `gen` (a `GenerateConfig`) describes: the linear
        layers' weights packed as `gen.weight_dtype` (in place, `model/quantize.py`), the decode
        step compiled if `gen.compile`, the KV cache in `gen.kv_dtype`, the draft model of
        `gen.draft_run` (a run of `workspace`). None: the model as it is, eager, float32."""
        if gen is not None:
            from londinium.model.quantize import quantize_weights

            quantize_weights(model, gen.weight_dtype)
            kwargs.setdefault("compile", gen.compile)
            if gen.compile and workspace is not None:
                kwargs.setdefault("compiled_dir", workspace.compiled_dir)
            kwargs.setdefault("kv_dtype", gen.kv_dtype)
            if gen.draft_run:
                from londinium.errors import ConfigError
                from londinium.infer.speculative import load_draft

                if workspace is None:
                    raise ConfigError(f"generate.draft_run = {gen.draft_run!r}: a draft is a run of a workspace, and this "
                                      "model was not loaded from one; leave generate.draft_run empty")
                kwargs.setdefault("draft", load_draft(workspace, gen, tokenizer, next(model.parameters()).device))
                kwargs.setdefault("draft_tokens", gen.draft_tokens)
        return cls(model, tokenizer, **kwargs)

    @classmethod
    def from_trained(cls, trained: Any, gen: Any = None, workspace: Any = None, **kwargs: Any) -> Engine:
        """The engine for a model loaded by `londinium.model.load.load_run` (and `gen`, `workspace`:
        see `with_settings`)."""
        engine = cls.with_settings(trained.model, trained.tokenizer, gen, workspace, **kwargs)
        engine.loaded_from = trained.describe()
        return engine

    @classmethod
    def from_workspace(cls, ws: Any, run: str = "main", checkpoint: str = "best", device: str = "cpu", gen: Any = None,
                       **kwargs: Any) -> Engine:
        """The engine for a trained run: its checkpoint (best, latest or a path) and the workspace
        tokenizer, which must be the one the run was trained with (see `load_run`)."""
        from londinium.model.load import load_run

        return cls.from_trained(load_run(ws, run=run, checkpoint=checkpoint, device=device), gen, ws, **kwargs)

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

    # ---- public API ------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams | Sequence[SamplingParams] | None = None) -> list[Completion]:
        """One `Completion` per prompt, in order. `params` is one SamplingParams for all prompts, or one each."""
        from londinium.infer.beam import beam_search

        if isinstance(prompts, str):
            prompts = [prompts]
        plist = self._params(len(prompts), params)
        ids = [self.encode_prompt(p, sp, i) for i, (p, sp) in enumerate(zip(prompts, plist))]
        results: list[Completion | None] = [None] * len(prompts)
        requests = []
        for i, p in enumerate(plist):
            if p.num_beams > 1:
                t0 = time.perf_counter()
                choices, prefill_s = beam_search(self, ids[i], p)
                total = time.perf_counter() - t0
                results[i] = Completion(_prompt_text(prompts[i]), ids[i], choices,
                                        Timing(len(ids[i]), sum(len(c.token_ids) for c in choices), prefill_s, total - prefill_s))
            else:
                requests.append(Request(ids[i], p, _prompt_text(prompts[i]), index=i, id=f"prompt {i}"))
        for event in self._run(requests):
            if event.completion is not None:
                results[event.request.index] = event.completion
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
        requests = [Request(self.encode_prompt(p, sp, i), sp, _prompt_text(p), index=i, id=f"prompt {i}")
                    for i, (p, sp) in enumerate(zip(prompts, plist))]
        return (d for event in self._run(requests) for d in event.deltas)

    def _run(self, requests: list[Request]) -> Iterator[StepEvent]:
        """Step until these requests are done (a caller that stops early cancels them)."""
        if self.has_work() or self.serving:
            raise RuntimeError("this engine is driven by an EngineLoop (or busy); submit requests to the loop instead")
        for r in requests:
            if r.params.samples > self.max_running:
                self.add_request(r)  # raises, before anything is queued
        for r in requests:
            self.add_request(r)
        try:
            while self.has_work():
                for event in self.step():
                    if event.error is not None:
                        raise EngineRequestError(event.request.id, f"{type(event.error).__name__}: {event.error}") from event.error
                    yield event
        finally:
            if self.has_work():  # abandoned or failed: the others are cancelled and cleared
                for r in requests:
                    self.cancel(r)
                while self.has_work():
                    self.step()

    # ---- the scheduler ---------------------------------------------------------------------------

    @property
    def grammars(self) -> Any:
        """The tokenizer as the grammar library sees it (`infer/constrain.py`): built once, when a
        constrained request first needs it, so unconstrained use never imports llguidance."""
        if self._grammars is None:
            from londinium.infer.constrain import Grammars

            self._grammars = Grammars(self.tokenizer, self.vocab_size, self.eos_id)
        return self._grammars

    def add_request(self, request: Request) -> None:
        """Queue a request (its prompt already encoded and checked, its params validated)."""
        p = request.params
        if p.samples > self.max_running:
            raise SamplingError(f"{'best_of' if p.best_of else 'n'} = {p.samples} samples exceed the engine's "
                                f"max_running = {self.max_running} sequences decoded together")
        # Under a grammar, end-of-text is allowed only where the value may end, so it always ends the
        # sequence there (ignore_eos would append it to the text, past the end of the value).
        keep_eos = (not p.ignore_eos or p.constraint is not None) and self.eos_id is not None
        stop_ids = frozenset(p.stop_token_ids) | ({self.eos_id} if keep_eos else frozenset())
        for c in range(p.samples):
            sp = p.replace(seed=sample_seed(p.seed, c))
            request.seqs.append(RunningSequence(request, c, sp, TextStream(self.token_bytes, p.stop), stop_ids,
                                          None if sp.greedy else make_generator(sp.seed, self.device),
                                          logprobs=[] if p.logprobs is not None else None,
                                          matcher=None if p.constraint is None else self.grammars.matcher(p.constraint)))
        self.queue.waiting.append(request)

    def cancel(self, request: Request) -> None:
        """Cancel a request: at the next step its sequences end with finish_reason 'cancelled'."""
        request.cancelled = True
        self._cancels = True

    def has_work(self) -> bool:
        return bool(self.queue or self.batch.rows)

    def has_room(self, samples: int) -> bool:
        """Whether a request of `samples` sequences would find free slots (counting those queued)."""
        return self._claimed() + samples <= self.max_running

    def _claimed(self) -> int:
        return len(self.batch) + self.queue.admitted_samples() + sum(r.params.samples for r in self.queue.waiting)

    def scheduler_stats(self) -> dict:
        """Sequences running (prefilling included), requests queued here, and the counters: steps,
        prompt_tokens (admitted), prefill_tokens (computed), prefix_hit_tokens (copied), generation_tokens."""
        return {"running": len(self.batch) + self.queue.admitted_samples(), "waiting": len(self.queue.waiting), **self.counters}

    def cancelled_completion(self, prompt_ids: list[int], params: SamplingParams) -> Completion:
        """The completion of a request cancelled before it ran: every choice empty, 'cancelled'."""
        return cancelled_completion(prompt_ids, params)

    @torch.inference_mode()
    def step(self) -> list[StepEvent]:
        """One iteration of the scheduler (see the module docstring); the events of the requests it touched."""
        batch, slots = self.batch, self.batch.cache()
        events: dict[int, StepEvent] = {}

        def event(r: Request) -> StepEvent:
            if r.key not in events:
                events[r.key] = StepEvent(r)
            return events[r.key]

        if self._cancels:
            self._cancels = False
            leaving = self._cancel_requested(event)
            if leaving:
                self.batch.evict(leaving)
        joining = []
        if self.queue:
            joining = self.queue.step(self.max_step_tokens - len(batch), self.max_running - len(batch) - self.queue.admitted_samples(),
                                      lambda r, e: self._fail(r, e, event))
        B = len(batch)
        logits = None
        if B == 1 and not joining and not self.queue.prefilling and self.speculator is not None and self._speculate(event):
            return list(events.values())
        if B:
            if not joining and batch.greedy_only():
                tokens, logprobs = self.decoder.greedy(batch.tokens, slots)
                slots.advance()
                self.counters["steps"] += 1
                self._emit(tokens, logprobs.tolist(), None, event)
                return list(events.values())
            logits = self.decoder.logits(batch.tokens, slots)
            slots.advance()
        if joining:
            logits = batch.join(joining, logits)
        if logits is None:
            return list(events.values())
        self.counters["steps"] += 1
        self._emit(*batch.choose(logits, lambda: self.grammars), event)
        return list(events.values())

    def _speculate(self, event: Any) -> bool:
        """One round of the draft's proposals for the one running sequence, checked by the model in
        one pass; False (nothing done) when its sampling rules out a draft or no proposal fits."""
        from londinium.infer.speculative import speculable

        s, slots, spec = self.batch.rows[0], self.batch.slots, self.speculator
        assert slots is not None and spec is not None
        tokens = [*s.request.prompt_ids, *s.ids]
        # The target stores the last token and k proposals; the draft all but the last proposal.
        k = min(spec.k, s.params.max_tokens - len(s.ids) - 1, slots.max_len - len(tokens), spec.room(len(tokens)) + 1)
        if k < 1 or not speculable(s.params):
            return False
        spec.follow(s)
        length = slots.lengths[0]
        r = spec.round(self.model, slots.row_cache(0), tokens, s.params, s.generator, k)
        slots.truncate(0, length + len(r.emitted))
        self.counters["steps"] += 1
        self.counters["drafted"] += k
        self.counters["accepted"] += len(r.emitted) - 1
        logp = r.logits.log_softmax(dim=-1)
        top = logp.topk(s.params.logprobs, dim=-1) if s.params.logprobs else None
        for i, token in enumerate(r.emitted):
            self._emit(torch.tensor([token], device=self.device), [float(logp[i, token])],
                       (top.values[i:i + 1].tolist(), top.indices[i:i + 1].tolist()) if top else None, event)
            if not self.batch.rows:  # it finished (a stop, its length): the rest of the round is dropped
                break
        return True

    def _cancel_requested(self, event: Any) -> set[int]:
        now = time.perf_counter()
        for queue in (self.queue.waiting, self.queue.prefilling):
            for r in [r for r in queue if r.cancelled]:
                queue.remove(r)
                r.prefill = None
                for s in r.seqs:
                    s.finish_reason, s.finished_at = "cancelled", now
                    event(r).deltas.append(TextDelta(r.index, s.choice, "", [], None, "cancelled"))
                self._complete(r, event)
        leaving = set()
        for b, s in enumerate(self.batch.rows):
            if s.request.cancelled and s.finish_reason is None:
                s.finish_reason, s.finished_at = "cancelled", now
                event(s.request).deltas.append(TextDelta(s.request.index, s.choice, "", [], None, "cancelled"))
                leaving.add(b)
        for r in {self.batch.rows[b].request for b in leaving}:
            self._complete(r, event)
        return leaving

    def _emit(self, tokens: torch.Tensor, chosen_lp: list[float], top: tuple[list, list] | None, event: Any) -> None:
        """Each row takes its token: deltas, finished sequences leave, the next step's input is set."""
        rows = self.batch.rows
        toks = tokens.tolist()
        now = time.perf_counter()
        leaving: set[int] = set()
        ended: list[Request] = []
        failed: dict[Request, BaseException] = {}
        for b, s in enumerate(rows):
            r = s.request
            if r in failed:
                continue
            if not s.ids:
                s.first_token_at = now
            try:
                delta = self._advance(s, toks[b], chosen_lp[b], top[0][b] if top else None, top[1][b] if top else None, now)
            except Exception as e:  # noqa: BLE001 - one request's failure must not stop the others
                failed[r] = e
                continue
            event(r).deltas.append(delta)
            if s.finish_reason is not None:
                leaving.add(b)
                if all(q.finish_reason is not None for q in r.seqs):
                    ended.append(r)
        self.counters["generation_tokens"] += len(toks)
        self.batch.tokens = tokens
        for r, e in failed.items():
            leaving.update(b for b, s in enumerate(rows) if s.request is r)
            self._fail(r, e, event)
        for r in ended:
            self._complete(r, event)
        if leaving:
            self.batch.evict(leaving)

    def _fail(self, r: Request, error: BaseException, event: Any) -> None:
        r.done = True
        r.prefill = None
        for s in r.seqs:
            s.finish_reason = s.finish_reason or "error"
        self.counters["failed"] += 1
        event(r).error = error

    def _complete(self, r: Request, event: Any) -> None:
        r.done = True
        event(r).completion = completion_of(r)

    def token_text(self, token_id: int) -> str:
        return self.token_bytes[token_id].decode("utf-8", errors="replace")


def _prompt_text(prompt: Prompt) -> str:
    return prompt if isinstance(prompt, str) else ""
