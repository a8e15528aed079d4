"""The SSE stream's own pieces: merged deltas and pre-rendered chunk framing.

Deltas come from a real engine on a small random-weight GPT (n = 2, log-probabilities on), so the
merging sees real token boundaries and multi-token text."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from engine_fixtures import make_model, make_tokenizer

from londinium.infer import Engine, SamplingParams
from londinium.serve.streaming import Call, _chunk, chunk_event, coalesce, sse

pytestmark = pytest.mark.usefixtures("one_thread")


def _per_choice(deltas) -> dict:
    out: dict = {}
    for d in deltas:
        text, ids, lps, finish = out.get(d.choice, ("", [], [], None))
        out[d.choice] = (text + d.text, ids + d.token_ids, lps + [(e.token_id, e.logprob) for e in d.logprobs or []],
                         d.finish_reason or finish)
    return out


def test_merged_deltas_reassemble_to_exactly_what_the_unmerged_ones_say() -> None:
    tok = make_tokenizer()
    engine = Engine(make_model(tok), tok)
    params = SamplingParams(max_tokens=24, temperature=1.0, seed=3, n=2, logprobs=2, ignore_eos=True)
    deltas = list(engine.stream("Thou art", params))
    assert len(deltas) > 2 * 10 and any(d.text for d in deltas)
    want = _per_choice(deltas)
    rng = random.Random(0)
    for _ in range(20):
        # Consecutive runs of the stream, as a consumer that fell behind would take them.
        cuts = sorted(rng.sample(range(1, len(deltas)), rng.randint(1, 8)))
        runs = [deltas[a:b] for a, b in zip([0, *cuts], [*cuts, len(deltas)])]
        merged = [m for run in runs for m in coalesce(run)]
        assert len(merged) < len(deltas)
        assert all(len({m.choice for m in coalesce(run)}) == len(coalesce(run)) for run in runs)  # one per choice
        assert _per_choice(merged) == want
        # A merged delta carries a finish_reason only if it holds its choice's last delta.
        assert sum(1 for m in merged if m.finish_reason) == 2


def test_a_chunk_event_is_the_same_bytes_as_the_serialised_chunk() -> None:
    for include_usage in (False, True):
        for kind in ("completion", "chat"):
            prepared = SimpleNamespace(include_usage=include_usage, params=[SimpleNamespace(n=1)])
            call = Call("cmpl-1", kind, 'odd "model" é', prepared, [], [], {})
            for choice in ({"index": 0, "text": 'thé "end"\n\u2028', "logprobs": None, "finish_reason": None},
                           {"index": 3, "delta": {"role": "assistant", "content": "Hail"}, "logprobs": None, "finish_reason": "stop"}):
                assert chunk_event(call, choice) == sse(_chunk(call, [choice]))
