"""The serving loop: requests submitted from other threads (and asyncio) get what they would alone.

A real engine on a small random-weight GPT runs on the loop's background thread; nothing is mocked.
Where a test needs the loop held at a known point, it wraps the engine's per-token method so that
one request's token waits for an event (or raises): the loop thread really is inside a step then.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from engine_fixtures import make_model, make_tokenizer

from londinium.errors import ConfigError
from londinium.infer import Engine, PromptError, SamplingError, SamplingParams
from londinium.infer.scheduler import EngineLoop, EngineRequestError, EngineStopped, QueueFull

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["Thou art", "In the beginning God created the heaven and the earth.", "To", "Shall I compare thee",
           "The king", "Of arms and the man"]
GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture
def engine(tok) -> Engine:
    return Engine(make_model(tok), tok)


@pytest.fixture
def loop(engine: Engine):
    loop = EngineLoop(engine, max_running=4, max_step_tokens=64, max_waiting=8)
    loop.start()
    yield loop
    loop.stop(timeout_s=0)


def hold(engine: Engine, request_id: str, monkeypatch, fail: bool = False) -> tuple[threading.Event, threading.Event]:
    """Make `request_id`'s tokens wait inside the loop thread's step until `release` is set (or
    raise); `reached` is set once the loop thread waits there."""
    reached, release = threading.Event(), threading.Event()
    advance = engine._advance

    def gated(s, *args):
        if s.request.id == request_id:
            if fail:
                raise RuntimeError("injected failure")
            reached.set()
            release.wait(10)
        return advance(s, *args)

    monkeypatch.setattr(engine, "_advance", gated)
    return reached, release


def test_concurrent_requests_from_threads_get_what_each_gets_alone(engine: Engine, loop: EngineLoop) -> None:
    params = [GREEDY, GREEDY.replace(max_tokens=5), SamplingParams(max_tokens=9, seed=3, top_p=0.8, ignore_eos=True, logprobs=2),
              SamplingParams(max_tokens=7, seed=4, n=2, ignore_eos=True), GREEDY.replace(repetition_penalty=1.3), GREEDY]
    alone = [Engine(engine.model, engine.tokenizer).generate([p], sp)[0] for p, sp in zip(PROMPTS, params)]
    results: dict[int, object] = {}

    def client(i: int) -> None:
        results[i] = loop.submit(PROMPTS[i], params[i]).result(timeout=30)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, want in enumerate(alone):
        got = results[i]
        assert [c.token_ids for c in got.choices] == [c.token_ids for c in want.choices]
        assert got.choices[0].cumulative_logprob == pytest.approx(want.choices[0].cumulative_logprob, abs=1e-5)
        assert got.timing.ttft_s >= got.timing.prefill_s > 0
    assert loop.stats()["finished"] == len(PROMPTS)


def test_streams_deliver_every_choice_and_end_with_a_finish_reason(loop: EngineLoop) -> None:
    h = loop.submit("Thou art", SamplingParams(max_tokens=6, n=2, seed=1, ignore_eos=True), stream=True)
    deltas = list(h)
    assert sorted({d.choice for d in deltas}) == [0, 1]
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["length", "length"]
    assert len(h.prompt_ids) > 0 and h.result().choices[1].token_ids == [t for d in deltas if d.choice == 1 for t in d.token_ids]


def test_async_iteration_serves_many_streams_on_one_event_loop(engine: Engine, loop: EngineLoop) -> None:
    alone = [Engine(engine.model, engine.tokenizer).generate([p], GREEDY)[0].token_ids for p in PROMPTS]

    async def main() -> list[list[int]]:
        handles = [loop.submit(p, GREEDY, stream=True) for p in PROMPTS]

        async def tokens(h) -> list[int]:
            return [t async for d in h for t in d.token_ids]

        return await asyncio.gather(*(tokens(h) for h in handles))

    assert asyncio.run(main()) == alone


def test_submit_refuses_bad_requests_synchronously(loop: EngineLoop) -> None:
    with pytest.raises(SamplingError, match="beam search is not served"):
        loop.submit("Thou", SamplingParams(num_beams=2))
    with pytest.raises(SamplingError, match="best_of"):
        loop.submit("Thou", SamplingParams(n=1, best_of=3), stream=True)
    with pytest.raises(SamplingError, match="temperature"):
        loop.submit("Thou", SamplingParams(temperature=-1))
    with pytest.raises(PromptError, match="context of 64"):
        loop.submit(list(range(5, 65)), GREEDY)
    best = loop.submit("Thou", SamplingParams(max_tokens=4, n=1, best_of=3, seed=2, ignore_eos=True))
    with pytest.raises(SamplingError, match="best_of"):
        iter(best).__next__()
    assert len(best.result(timeout=30).choices) == 1


def test_a_full_queue_raises_queue_full_with_a_retry_hint(engine: Engine, monkeypatch) -> None:
    loop = EngineLoop(engine, max_running=1, max_step_tokens=16, max_waiting=2)
    reached, release = hold(engine, "first", monkeypatch)
    loop.start()
    try:
        first = loop.submit("Thou", GREEDY, request_id="first")
        assert reached.wait(10)  # the loop thread is inside a step: nothing more is admitted
        queued = [loop.submit("To", GREEDY.replace(max_tokens=2)) for _ in range(2)]
        with pytest.raises(QueueFull, match="waiting queue is full") as err:
            loop.submit("To", GREEDY)
        assert err.value.retry_after_s >= 1
        release.set()
        assert first.result(timeout=30).finish_reason == "length"
        assert all(h.result(timeout=30).finish_reason == "length" for h in queued)
        assert loop.stats()["rejected"] == 1
    finally:
        release.set()
        loop.stop(timeout_s=0)


def test_an_exception_in_one_request_fails_only_that_request(engine: Engine, loop: EngineLoop, monkeypatch) -> None:
    hold(engine, "bad", monkeypatch, fail=True)
    bad = loop.submit("Thou art", GREEDY, request_id="bad")
    good = [loop.submit(p, GREEDY) for p in PROMPTS[:3]]
    with pytest.raises(EngineRequestError, match="request bad failed.*injected failure"):
        bad.result(timeout=30)
    with pytest.raises(EngineRequestError):
        list(bad)
    assert all(len(h.result(timeout=30).token_ids) == GREEDY.max_tokens for h in good)
    assert loop.stats()["failed"] == 1


def test_a_cancelled_stream_ends_cancelled_within_one_step_and_frees_its_slot(engine: Engine, loop: EngineLoop, monkeypatch) -> None:
    reached, release = hold(engine, "c", monkeypatch)
    h = loop.submit("Thou art", SamplingParams(max_tokens=50, temperature=0.0, ignore_eos=True), request_id="c", stream=True)
    assert reached.wait(10)  # the loop thread is in the step that makes the first token
    h.cancel()
    release.set()
    got = list(h)
    assert [d.finish_reason for d in got] == [None, "cancelled"]  # that step's token, then no other
    assert h.result().finish_reason == "cancelled" and len(h.result().token_ids) == 1
    other = loop.submit("To", GREEDY).result(timeout=30)  # the slot is free for the next request
    assert len(other.token_ids) == GREEDY.max_tokens
    assert loop.stats()["running"] == 0 and loop.stats()["cancelled"] == 1


def test_stop_lets_running_requests_finish_then_refuses_new_ones(loop: EngineLoop) -> None:
    h = loop.submit("Thou art", GREEDY)
    loop.stop(timeout_s=30)
    assert h.result(timeout=0).finish_reason == "length"
    with pytest.raises(EngineStopped):
        loop.submit("Thou", GREEDY)


def test_stop_past_its_deadline_cancels_what_still_runs(engine: Engine, monkeypatch) -> None:
    loop = EngineLoop(engine, max_running=1, max_step_tokens=16, max_waiting=4)
    reached, release = hold(engine, "slow", monkeypatch)
    loop.start()
    slow = loop.submit("Thou", SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True), request_id="slow")
    assert reached.wait(10)
    queued = loop.submit("To", GREEDY)
    threading.Timer(0.2, release.set).start()
    loop.stop(timeout_s=0)
    assert slow.result(timeout=0).finish_reason == "cancelled"
    assert len(slow.result().token_ids) < 40
    assert queued.result(timeout=0).finish_reason == "cancelled"


def test_limits_that_cannot_work_are_refused(engine: Engine) -> None:
    with pytest.raises(ConfigError, match="max_step_tokens = 4 must exceed max_running = 4"):
        EngineLoop(engine, max_running=4, max_step_tokens=4)
    with pytest.raises(SamplingError, match="max_running = 2"):
        loop = EngineLoop(engine, max_running=2, max_step_tokens=16)
        loop.submit("Thou", SamplingParams(n=3))


def test_an_engine_driven_by_a_loop_refuses_direct_generation_until_stopped(engine: Engine) -> None:
    loop = EngineLoop(engine, max_running=2, max_step_tokens=16)
    loop.start()
    with pytest.raises(RuntimeError, match="driven by an EngineLoop"):
        engine.generate(["Thou"], GREEDY)
    loop.stop()
    assert len(engine.generate(["Thou"], GREEDY)[0].token_ids) == GREEDY.max_tokens


def test_a_failure_of_the_batched_step_fails_the_running_requests_and_the_loop_goes_on(engine: Engine, loop: EngineLoop, monkeypatch) -> None:
    reached, release = hold(engine, "first", monkeypatch)
    first = loop.submit("Thou", GREEDY, request_id="first")
    assert reached.wait(10)
    step = engine.step

    def broken():
        raise RuntimeError("the forward pass broke")

    monkeypatch.setattr(engine, "step", broken)  # the next step, for everyone
    release.set()
    with pytest.raises(EngineRequestError, match="request first failed.*forward pass broke"):
        first.result(timeout=30)
    monkeypatch.setattr(engine, "step", step)
    assert len(loop.submit("To", GREEDY).result(timeout=30).token_ids) == GREEDY.max_tokens


def test_a_stream_interval_wakes_the_consumer_less_and_loses_no_token(engine: Engine) -> None:
    alone = Engine(engine.model, engine.tokenizer).generate(["Thou art"], GREEDY)[0].token_ids  # 12 tokens
    loop = EngineLoop(engine, max_running=4, max_step_tokens=64, max_waiting=8, stream_interval=4)
    loop.start()
    try:
        async def main() -> list[list]:
            return [batch async for batch in loop.submit("Thou art", GREEDY, stream=True).batches()]

        batches = asyncio.run(main())
    finally:
        loop.stop(timeout_s=0)
    assert [t for b in batches for d in b for t in d.token_ids] == alone
    # Woken for the first token, every 4 more, and the end: at most 1 + 12 / 4 + 1 looks with
    # something to take, where a stream interval of 1 takes the 12 tokens one at a time.
    assert len(batches) <= 5 and all(batches)
    assert batches[-1][-1].finish_reason == "length" and all(d.finish_reason is None for b in batches for d in b[:-1])
    with pytest.raises(ConfigError, match="stream_interval"):
        EngineLoop(engine, stream_interval=0)


def test_a_request_the_engine_refuses_at_admission_fails_only_itself(engine: Engine, loop: EngineLoop, monkeypatch) -> None:
    add = engine.add_request

    def refusing(req):
        if req.id == "bad":
            raise ValueError("injected at admission")
        return add(req)

    monkeypatch.setattr(engine, "add_request", refusing)
    bad = loop.submit("Thou art", GREEDY, request_id="bad")
    with pytest.raises(EngineRequestError, match="request bad failed.*injected at admission"):
        bad.result(timeout=30)
    assert len(loop.submit("To be", GREEDY).result(timeout=30).token_ids) == GREEDY.max_tokens  # the loop lives on
    assert loop.stats()["failed"] == 1
