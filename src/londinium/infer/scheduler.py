"""Serving: the engine's scheduler on a background thread, fed from any thread.

    loop = EngineLoop(engine, max_running=16, max_step_tokens=512, max_waiting=64)
    loop.start()
    handle = loop.submit("Thou art", SamplingParams(max_tokens=20))   # from any thread
    for delta in handle: print(delta.text, end="")                      # or `async for` in asyncio
    completion = loop.submit(ids, params).result()                     # the non-streaming path
    loop.stop()

The loop thread owns the model: it admits waiting requests into the engine, runs its steps and
routes each step's deltas to their request's handle. `submit` validates synchronously (so a bad
request fails in the caller, not later in the thread) and only touches thread-safe queues; a
handle's iterator and `result()` read what the loop thread put there.

Waking an asyncio consumer is batched: the loop thread queues a whole step's deltas, then makes one
`call_soon_threadsafe` per event loop (with `stream_interval` > 1, only every that many steps, a
sequence's first token and end excepted); `handle.batches()` hands over everything queued at once.

A failure inside the engine for one request (an exception its sampling raises, say) ends only that
request: its iterator and `result()` raise `EngineRequestError`, the others go on.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import threading
import time
import uuid
from typing import Any, AsyncIterator, Iterator, Sequence

from londinium.errors import ConfigError, LondiniumError
from londinium.infer.engine import Engine, EngineRequestError, Request
from londinium.infer.outputs import Completion, TextDelta
from londinium.infer.sampling import SamplingError, SamplingParams


class QueueFull(LondiniumError):
    """The waiting queue is full: come back later (HTTP 429 with `Retry-After: retry_after_s`)."""

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EngineStopped(LondiniumError):
    """The loop was stopped (or not started): it admits no new requests (HTTP 503)."""


_DONE = object()  # end of a handle's events


def running_for_budget(engine: Engine, budget_mb: float, max_step_tokens: int) -> int:
    """`max_running` for a memory budget: the most sequences whose memory plan (`model/memory.py`:
    the weights as the engine holds them, a full context of KV cache per slot in its dtype, one
    step's activations, the prefix cache, and a draft model's weights and cache) fits `budget_mb` MiB."""
    from londinium.model.memory import draft_bytes, max_sequences, memory_plan

    cfg = engine.model.config
    plan = dict(weight_dtype=getattr(engine.model, "weight_dtype", "float32"), kv_dtype=engine.kv_dtype,
                step_tokens=max_step_tokens)
    extra = draft_bytes(engine.speculator.draft.config) if engine.speculator is not None else 0
    n = max_sequences(cfg, int(budget_mb * 2**20), extra_bytes=extra, **plan)
    if n < 1:
        need = (memory_plan(cfg, 1, **plan).total + extra) / 2**20  # type: ignore[arg-type]
        raise ConfigError(f"serve.memory_budget_mb = {budget_mb:g} MiB does not hold one sequence of this model: it needs "
                          f"{need:.1f} MiB for one (see `londinium model memory`); raise the budget or set it to 0")
    return n


def _wake_all(handles: Sequence[RequestHandle]) -> None:
    """Wake the asyncio consumers of `handles`: one `call_soon_threadsafe` per event loop, however
    many handles (each call writes to the loop's self-pipe and costs both threads the GIL)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Event]] = {}
    for h in handles:
        if h._async is not None:
            loop, event = h._async
            by_loop.setdefault(loop, []).append(event)
    for loop, evs in by_loop.items():
        try:
            loop.call_soon_threadsafe(_set_events, evs)
        except RuntimeError:  # the consumer's event loop is closed: nobody listens any more
            pass


def _set_events(events: list[asyncio.Event]) -> None:
    for e in events:
        e.set()


class RequestHandle:
    """One submitted request, as its caller sees it: deltas as they come, or the completion at the end.

    Iterating (blocking, or `async for`) yields every choice's deltas and ends when all choices have
    finished; leaving the loop early cancels the request. `result()` waits for the `Completion`.
    """

    def __init__(self, request_id: str, prompt_ids: list[int], params: SamplingParams):
        self.id = request_id
        self.prompt_ids = prompt_ids
        self.params = params
        self.submitted_at = time.perf_counter()
        self.cancelled = False  # set by cancel(), read by the loop thread at its next step
        self._events: collections.deque[Any] = collections.deque()
        self._ready = threading.Condition()
        self._async: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._wake_pending = False  # an asyncio wake-up is on its way and the consumer has not yet looked
        self._delivered = False  # the consumer has taken a delta (so the first token went out at once)
        self._sync_waiting = 0  # threads blocked in __iter__ (so the loop thread notifies only when someone waits)
        self._completion: Completion | None = None
        self._error: EngineRequestError | None = None
        self._finished = threading.Event()
        self._request: Request | None = None  # the engine's side, once admitted

    # ---- what the loop thread calls ------------------------------------------------------------

    def _put(self, item: Any, wake: bool = True, flush: bool = True) -> bool:
        """Queue an event. With `wake=False` the consumer is not woken: the loop thread queues a
        whole step's events first and then wakes every consumer once (see `_wake_all`). With
        `flush=False` (a step between two stream-interval steps) a delta waits for a later step's
        wake-up, unless it is the first or the last. Returns whether an asyncio consumer needs
        waking: the delta is due and the consumer has not been woken since it last looked."""
        with self._ready:
            self._events.append(item)
            if self._sync_waiting:
                self._ready.notify_all()
            due = flush or not self._delivered or item is _DONE or item.finish_reason is not None
            needs = due and self._async is not None and not self._wake_pending
            if needs:
                self._wake_pending = True
        if needs and wake:
            _wake_all([self])
        return needs

    def _finish(self, completion: Completion | None, error: EngineRequestError | None = None, wake: bool = True) -> bool:
        self._completion, self._error = completion, error
        self._finished.set()
        return self._put(_DONE, wake)

    # ---- the caller's side ---------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def cancel(self) -> None:
        """Stop generating for this request: its slots are freed within one step of the engine, and
        its iterator ends after the deltas with finish_reason 'cancelled'."""
        self.cancelled = True

    def _check_streamable(self) -> None:
        p = self.params
        if p.best_of is not None and p.best_of > p.n:
            raise SamplingError(f"best_of = {p.best_of} picks among finished samples, so it cannot stream; use result()")

    def _take(self, item: Any) -> TextDelta | None:
        if item is _DONE:
            if self._error is not None:
                raise self._error
            return None
        return item

    def __iter__(self) -> Iterator[TextDelta]:
        self._check_streamable()
        finished = False
        try:
            while True:
                with self._ready:
                    while not self._events:
                        self._sync_waiting += 1
                        try:
                            self._ready.wait()
                        finally:
                            self._sync_waiting -= 1
                    item = self._events.popleft()
                delta = self._take(item)
                if delta is None:
                    finished = True
                    return
                yield delta
        finally:
            if not finished:
                self.cancel()

    def __aiter__(self) -> AsyncIterator[TextDelta]:
        self._check_streamable()
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[TextDelta]:
        async for batch in self.batches():
            for delta in batch:
                yield delta

    async def batches(self) -> AsyncIterator[list[TextDelta]]:
        """Like `async for delta in handle`, but every delta that arrived since the consumer last
        looked comes at once, in order: a consumer that fell behind (a busy event loop) can send
        them as one message instead of one each."""
        self._check_streamable()
        event = asyncio.Event()
        with self._ready:
            self._async = (asyncio.get_running_loop(), event)
        finished = False
        try:
            while True:
                with self._ready:
                    self._wake_pending = False  # from here on, new events need a new wake-up
                    items = list(self._events)
                    self._events.clear()
                    self._delivered = self._delivered or bool(items)
                if not items:
                    await event.wait()
                    event.clear()
                    continue  # look again: the event only says something arrived
                if items[-1] is not _DONE:  # the end, when it came, is always the last event
                    yield items
                    continue
                if len(items) > 1:
                    yield items[:-1]
                if self._error is not None:
                    raise self._error
                finished = True
                return
        finally:
            if not finished:
                self.cancel()

    def result(self, timeout: float | None = None) -> Completion:
        """The completion (all n choices; best_of chosen); raises EngineRequestError if the engine
        failed on this request, TimeoutError if it is not done within `timeout` seconds."""
        if not self._finished.wait(timeout):
            raise TimeoutError(f"request {self.id} did not finish within {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._completion is not None
        return self._completion


class EngineLoop:
    """Runs the engine's iteration-level scheduler on one background thread; submit from any thread.

    Limits (vLLM's names in brackets): `max_running` sequences decoded together (max_num_seqs; a
    request with n samples takes n), `max_step_tokens` tokens one step may compute, decode tokens and
    prefill chunks together (max_num_batched_tokens), `max_waiting` requests queued before
    `submit` raises QueueFull. `stream_interval` (vLLM's stream_interval): asyncio consumers are
    woken every this many steps, all at once, not every step (a sequence's first token and its end
    at once): each wake-up of the event loop costs this thread the GIL for as long as the event
    loop runs, and fewer, larger chunks cost the event loop less.
    """

    def __init__(self, engine: Engine, max_running: int = 16, max_step_tokens: int = 512, max_waiting: int = 64,
                 stream_interval: int = 1):
        if stream_interval < 1:
            raise ConfigError(f"stream_interval = {stream_interval} must be >= 1")
        self.stream_interval = stream_interval
        engine.configure(max_running, max_step_tokens)  # ConfigError here, in the caller, if they do not fit
        if max_waiting < 0:
            raise ConfigError(f"max_waiting = {max_waiting} must be >= 0")
        self.engine = engine
        self.max_running, self.max_step_tokens, self.max_waiting = max_running, max_step_tokens, max_waiting
        self._waiting: collections.deque[RequestHandle] = collections.deque()
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._accepting = False
        self._stopping = False
        self._deadline = 0.0
        self._ids = itertools.count()
        self._counts = collections.Counter()
        self._engine_stats: dict = {}  # the engine's counters after the last step (see stats)
        self._steps = 0  # steps routed (the stream interval counts them)
        self._step_s = 0.0  # mean step time (an exponential average), for the Retry-After hint

    # ---- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        if self.engine.serving:
            raise RuntimeError("another EngineLoop already drives this engine")
        self.engine.serving = True  # generate()/stream() on it would race the loop thread
        self._accepting, self._stopping = True, False
        self._thread = threading.Thread(target=self._main, name="londinium-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop admitting; let running requests finish for up to timeout_s, then cancel the rest
        (their handles end with finish_reason 'cancelled'); join the thread. Requests already
        accepted but still waiting are served too while the deadline allows."""
        with self._lock:
            self._accepting = False
            self._stopping = True
            self._deadline = time.perf_counter() + timeout_s
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self.engine.serving = False

    # ---- submitting ----------------------------------------------------------------------------

    def submit(self, prompt: str | Sequence[int], params: SamplingParams, request_id: str | None = None,
               *, stream: bool = False) -> RequestHandle:
        """Validate (SamplingError / PromptError raised here, synchronously, before queueing) and queue.
        Raises QueueFull when max_waiting requests already wait, and EngineStopped after stop().
        `stream=True` says the caller will iterate: best_of > n is refused then, since it cannot stream."""
        params.validate(self.engine.vocab_size)
        if params.num_beams > 1:
            raise SamplingError("beam search is not served by the continuous-batching engine (num_beams must be 1)")
        if params.samples > self.max_running:
            raise SamplingError(f"{'best_of' if params.best_of else 'n'} = {params.samples} samples exceed the "
                                f"engine's max_running = {self.max_running} sequences")
        if stream and params.best_of is not None and params.best_of > params.n:
            raise SamplingError(f"best_of = {params.best_of} picks among finished samples, so it cannot stream; use best_of = n")
        prompt_ids = self.engine.encode_prompt(prompt, params)
        handle = RequestHandle(request_id or f"req-{next(self._ids)}-{uuid.uuid4().hex[:8]}", prompt_ids, params)
        with self._lock:
            if not self._accepting:
                raise EngineStopped("the engine is not running (stopped or not started); no new requests")
            if len(self._waiting) >= self.max_waiting:
                self._counts["rejected"] += 1
                raise QueueFull(f"the engine's waiting queue is full ({self.max_waiting} requests); retry later",
                                retry_after_s=self._retry_after())
            self._waiting.append(handle)
            self._counts["submitted"] += 1
            self._lock.notify_all()
        return handle

    def _retry_after(self) -> float:
        # About the time the queue ahead needs to start: a step per sequence ahead is pessimistic
        # enough; at least a second (HTTP's Retry-After is whole seconds).
        return max(1.0, round(self._step_s * len(self._waiting), 1))

    def stats(self) -> dict:
        """What /metrics shows: sequences running, requests waiting (here and admitted but not yet
        prefilled), steps taken, token counts, request outcomes. A snapshot the loop thread takes
        after each step, so reading it never races the engine."""
        with self._lock:
            waiting = len(self._waiting)
        engine = dict(self._engine_stats)
        return {"running": engine.get("running", 0), "waiting": waiting + engine.get("waiting", 0),
                "steps": engine.get("steps", 0), "prompt_tokens": engine.get("prompt_tokens", 0),
                "generation_tokens": engine.get("generation_tokens", 0), "prefix_hit_tokens": engine.get("prefix_hit_tokens", 0),
                **{k: self._counts[k] for k in ("submitted", "rejected", "finished", "failed", "cancelled")},
                "max_running": self.max_running, "max_waiting": self.max_waiting, "max_step_tokens": self.max_step_tokens}

    # ---- the loop thread -----------------------------------------------------------------------

    def _main(self) -> None:
        live: dict[int, RequestHandle] = {}
        try:
            self._serve(live)
        except BaseException as e:  # a bug in the loop itself: no handle may wait forever
            with self._lock:
                self._accepting = False
                stranded, self._waiting = [*live.values(), *self._waiting], collections.deque()
            for h in stranded:
                if not h.done:
                    self._fail(h, e)
            raise

    def _serve(self, live: dict[int, RequestHandle]) -> None:
        engine = self.engine
        while True:
            with self._lock:
                while not self._waiting and not engine.has_work() and not self._stopping:
                    self._lock.wait()
                stopping, deadline = self._stopping, self._deadline
                late: list[RequestHandle] = []
                if stopping and time.perf_counter() >= deadline:
                    # Past the drain deadline: what never started ends cancelled, like what still runs.
                    late, self._waiting = list(self._waiting), collections.deque()
            for h in late:
                self._end_unadmitted(h)
            if late or (stopping and time.perf_counter() >= deadline):
                for h in live.values():
                    h.cancel()
            if stopping and not engine.has_work() and not self._waiting:
                self._engine_stats = engine.scheduler_stats()
                return
            self._admit(live)
            for h in live.values():
                if h.cancelled:
                    engine.cancel(h._request)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            try:
                events = engine.step()
            except Exception as e:  # noqa: BLE001 - not one request's failure: fail the running ones, go on
                for req in engine.abort():
                    h = live.pop(req.key, None)
                    if h is not None:
                        self._fail(h, e)
                continue
            self._step_s = 0.9 * self._step_s + 0.1 * (time.perf_counter() - t0)
            self._engine_stats = engine.scheduler_stats()
            # Queue the whole step's deltas first, then wake each consumer once: one wake-up per step
            # for all the streams of an event loop, not one per delta.
            wake: list[RequestHandle] = []
            self._steps += 1
            flush = self._steps % self.stream_interval == 0
            for ev in events:
                h = live.get(ev.request.key)
                if h is None:
                    continue
                needs = False
                for delta in ev.deltas:
                    needs |= h._put(delta, wake=False, flush=flush)
                if ev.error is not None:
                    del live[ev.request.key]
                    needs |= self._fail(h, ev.error, wake=False)
                elif ev.completion is not None:
                    del live[ev.request.key]
                    self._counts["cancelled" if ev.request.cancelled else "finished"] += 1
                    needs |= h._finish(ev.completion, wake=False)
                if needs:
                    wake.append(h)
            if wake:
                _wake_all(wake)

    def _end_unadmitted(self, h: RequestHandle) -> None:
        """A request that never reached the engine ends cancelled: a last delta per choice, then the completion."""
        self._counts["cancelled"] += 1
        for c in range(h.params.n):
            h._put(TextDelta(0, c, "", [], None, "cancelled"))
        h._finish(self.engine.cancelled_completion(h.prompt_ids, h.params))

    def _fail(self, h: RequestHandle, error: BaseException, wake: bool = True) -> bool:
        self._counts["failed"] += 1
        err = EngineRequestError(h.id, f"{type(error).__name__}: {error}")
        err.__cause__ = error
        return h._finish(None, err, wake)

    def _admit(self, live: dict[int, RequestHandle]) -> None:
        """Hand waiting requests to the engine while it has room for their sequences."""
        engine = self.engine
        while True:
            with self._lock:
                if not self._waiting:
                    return
                h = self._waiting[0]
                if h.cancelled:
                    self._waiting.popleft()
                    self._end_unadmitted(h)
                    continue
                if not engine.has_room(h.params.samples):
                    return
                self._waiting.popleft()
            req = Request(h.prompt_ids, h.params, id=h.id, submitted_at=h.submitted_at)
            try:
                engine.add_request(req)  # queues the request only once it succeeded: nothing to undo
            except Exception as e:  # noqa: BLE001 - one request's failure must not stop the loop
                self._fail(h, e)
                continue
            h._request = req
            live[req.key] = h
