"""The semantic cache alone (gateway/semantic_cache.py, semantic_index.py): the `semantic_cache` step in a
chain of the real `route` step and a canned upstream whose every answer is new (so a wrong hit shows as
another request's answer), with a real corpus embedder learned from a small period text. What hits,
what never crosses a scope, what is bypassed, the index's bounds and its file."""

from __future__ import annotations

import asyncio
import copy
import json
import random

import numpy as np
import pytest
from test_gateway_cache_step import Canned, answer

from londinium.errors import ConfigError
from londinium.gateway.chain import Chain, Exchange
from londinium.gateway.runtime import Gateway
from londinium.gateway.semantic_cache import HEADER, SemanticCache
from londinium.gateway.semantic_index import SemanticIndex, write
from londinium.gateway.settings import parse_settings
from londinium.retrieve.static import train_static
from londinium.serve.errors import APIError

WORDS = ("thus saith the lord king queen heaven earth night day light love death sword crown blood grace mercy "
         "what line follows which comes after where does this come from who speaks explain mean").split()
ASK = 'What line follows "Thus saith the Lord of hosts"?'


@pytest.fixture(scope="module")
def embedder_file(tmp_path_factory):
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) for _ in range(400)]
    path = tmp_path_factory.mktemp("emb") / "embedder.npz"
    train_static(texts, dim=32).save(path)
    return path


@pytest.fixture
def make(tmp_path, embedder_file):
    made: list[Gateway] = []

    def build(**semantic) -> tuple[Gateway, SemanticCache, Canned, Chain]:
        data = {"gateway": {"database": str(tmp_path / "gw.db"), "chain": ["route", "semantic_cache", "upstream"]},
                "backends": [{"name": "a", "base_url": "http://127.0.0.1:1/v1", "model": "a"}],
                "routes": [{"alias": "m", "backends": ["a"]}, {"alias": "n", "backends": ["a"]},
                           {"alias": "off", "backends": ["a"], "semantic_cache": False}],
                "semantic_cache": {"embedder_path": str(embedder_file), "index_path": str(tmp_path / "sc.npz"), **semantic}}
        gw = Gateway(parse_settings(data, str(tmp_path / "gw.toml"), tmp_path))
        route, step, _ = gw.chain.steps
        canned = Canned()
        made.append(gw)
        return gw, step, canned, Chain([route, step, canned])

    yield build
    for gw in made:
        asyncio.run(gw.close())


def chat(text: str, **extra) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": text}], "temperature": 0, **extra}


def ask(chain: Chain, body: dict, key=None, endpoint: str = "chat") -> tuple[str, str, dict]:
    ex = Exchange(endpoint, copy.deepcopy(body), key=key)
    reply = asyncio.run(chain(ex))
    return reply.headers[HEADER], answer(reply), ex.outcome


class Key:
    def __init__(self, id: int, name: str):
        self.id, self.name = id, name


def test_the_same_question_reworded_in_case_and_quotes_hits_and_another_line_misses(make) -> None:
    _, step, canned, chain = make()
    assert ask(chain, chat(ASK))[:2] == ("miss", "answer-1")
    decision, text, outcome = ask(chain, chat("what line follows thus saith the lord of hosts"))
    assert (decision, text) == ("hit", "answer-1") and float(outcome["semantic_similarity"]) >= step.cfg.threshold
    assert outcome["semantic_cache_reason"] == "similar"
    decision, text, outcome = ask(chain, chat('Who speaks "love and mercy and grace"?'))
    assert (decision, text) == ("miss", "answer-2") and outcome["semantic_cache_reason"] == "stored"
    assert canned.calls == 2


def test_a_hit_never_crosses_tenant_model_settings_system_prompt_or_numbers(make) -> None:
    _, _, canned, chain = make()
    ask(chain, chat(ASK), key=Key(1, "a"))
    others = [(chat(ASK), Key(2, "b")), (chat(ASK, model="n"), Key(1, "a")), (chat(ASK, max_tokens=5), Key(1, "a")),
              ({**chat(ASK), "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": ASK}]}, Key(1, "a")),
              (chat('What line follows "Thus saith the Lord of hosts" 2?'), Key(1, "a"))]
    for n, (body, key) in enumerate(others, start=2):
        assert ask(chain, body, key=key)[:2] == ("miss", f"answer-{n}")
    assert ask(chain, chat(ASK.lower()), key=Key(1, "a"))[:2] == ("hit", "answer-1")


def test_a_question_as_close_as_a_hit_but_about_another_line_or_name_misses(make) -> None:
    # "ghosts", "Falstaff" and "Hal" are not in the test embedder's vocabulary: to it these questions are ASK
    # word for word (similarity 1.0), the wrong hit every embedder makes on a one-word change of a quoted line.
    _, step, canned, chain = make()
    ask(chain, chat(ASK))
    decision, text, outcome = ask(chain, chat('What line follows "Thus saith the Lord of ghosts"?'))
    assert (decision, text) == ("miss", "answer-2") and float(outcome["semantic_similarity"]) >= step.cfg.threshold
    assert outcome["semantic_particulars"] == "differ"
    assert ask(chain, chat("what line follows: thus saith the lord of hosts"))[:2] == ("hit", "answer-1")  # unquoted, same line
    ask(chain, chat("Who speaks to Falstaff?"))
    assert ask(chain, chat("Who speaks to Hal?"))[:2] == ("miss", "answer-4")  # a name outside quotes is a particular
    assert ask(chain, chat("who speaks to falstaff"))[:2] == ("hit", "answer-3")


def test_with_frames_the_same_line_asked_as_another_task_misses_and_a_rewording_hits(make) -> None:
    # Thresholds for the small test embedder (its similarities run lower than a real one's): both questions
    # about the line pass the whole-question threshold; only their frames tell them apart.
    explain = 'Explain "Thus saith the Lord of hosts".'
    _, _, canned, chain = make(threshold=0.45, save_interval_s=0)  # its index stays its own
    ask(chain, chat(ASK))
    assert ask(chain, chat(explain))[:2] == ("hit", "answer-1")  # without frames: the wrong hit

    _, step, canned, chain = make(threshold=0.45, frame_threshold=0.55)
    ask(chain, chat(ASK))
    decision, text, outcome = ask(chain, chat(explain))
    assert (decision, text) == ("miss", "answer-2") and outcome["semantic_frame"] == "differ"
    assert float(outcome["semantic_similarity"]) >= 0.45 and "semantic_particulars" not in outcome  # close, same line
    decision, text, outcome = ask(chain, chat('What line comes after "Thus saith the Lord of hosts"?'))
    assert (decision, text) == ("hit", "answer-1") and float(outcome["semantic_frame_similarity"]) >= 0.55
    assert ask(chain, chat("what line follows: thus saith the lord of hosts"))[:2] == ("hit", "answer-1")  # equal frames


def test_sampled_multi_turn_and_switched_off_requests_bypass_it(make) -> None:
    _, _, canned, chain = make(bypass_keys=["internal"])
    turns = [{"role": "user", "content": "Who art thou"}, {"role": "assistant", "content": "A king"}, {"role": "user", "content": ASK}]
    for body, key, reason in [(chat(ASK, temperature=0.7), None, "sampled"), ({**chat(ASK), "messages": turns}, None, "multi-turn"),
                              (chat(ASK, model="off"), None, "route-off"), (chat(ASK), Key(3, "internal"), "key-off")]:
        for _ in range(2):
            decision, _, outcome = ask(chain, body, key=key)
            assert (decision, outcome["semantic_cache_reason"]) == ("bypass", reason)
    assert canned.calls == 8


def test_multi_turn_compares_the_last_question_when_every_earlier_turn_is_identical(make) -> None:
    _, _, canned, chain = make(multi_turn=True)
    turns = [{"role": "user", "content": "Who art thou"}, {"role": "assistant", "content": "A king"}]
    body = {**chat(ASK), "messages": [*turns, {"role": "user", "content": ASK}]}
    ask(chain, body)
    reworded = {**chat(ASK), "messages": [*turns, {"role": "user", "content": ASK.lower()}]}
    assert ask(chain, reworded)[:2] == ("hit", "answer-1")
    other_history = {**chat(ASK), "messages": [turns[0], {"role": "assistant", "content": "A queen"}, {"role": "user", "content": ASK}]}
    assert ask(chain, other_history)[:2] == ("miss", "answer-2")


def test_a_stream_is_replayed_as_a_stream_and_a_failed_answer_is_not_kept(make) -> None:
    gw, _, canned, chain = make()
    assert ask(chain, chat(ASK, stream=True))[:2] == ("miss", "answer-1")
    assert ask(chain, chat(ASK.lower(), stream=True))[:2] == ("hit", "answer-1")
    assert ask(chain, chat(ASK))[:2] == ("miss", "answer-2")  # a JSON request is its own scope

    class Failing:
        name = "upstream"

        async def __call__(self, ex, call_next):
            raise APIError(502, "backend gone")

    failing = Chain([gw.chain.steps[0], gw.chain.steps[1], Failing()])
    ex = Exchange("chat", chat("Where does this come from: love and death"))
    with pytest.raises(APIError) as e:
        asyncio.run(failing(ex))
    assert e.value.headers[HEADER] == "miss" and ex.outcome["semantic_cache_reason"] == "not-ok"
    metrics = gw.telemetry.metrics.registry.get_sample_value
    assert metrics("londinium_gateway_semantic_cache_total", {"model": "m", "decision": "hit", "reason": "similar"}) == 1
    assert metrics("londinium_gateway_semantic_cache_total", {"model": "m", "decision": "miss", "reason": "not-ok"}) == 1


def test_the_index_survives_a_restart_and_refuses_a_damaged_file(make, tmp_path) -> None:
    gw, step, _, chain = make(save_interval_s=0)
    ask(chain, chat(ASK))
    assert not (tmp_path / "sc.npz").exists()  # save_interval_s = 0: only on shutdown
    asyncio.run(gw.close())
    _, step2, canned2, chain2 = make()
    assert len(step2.index) == 1 and ask(chain2, chat(ASK.lower()))[:2] == ("hit", "answer-1") and canned2.calls == 0
    (tmp_path / "sc.npz").write_bytes(b"not an index")
    with pytest.raises(ConfigError, match="sc.npz: not a semantic cache index.*move or delete it"):
        make()
    assert (tmp_path / "sc.npz").read_bytes() == b"not an index"  # nothing overwritten


def test_the_index_drops_expired_entries_then_the_least_recently_used() -> None:
    now = [1000.0]
    index = SemanticIndex(dim=2, max_entries=2, max_bytes=10, clock=lambda: now[0])
    a, b, c = np.array([1, 0], np.float32), np.array([0, 1], np.float32), np.array([0.6, 0.8], np.float32)
    index.add("s", a, b"aa", ttl_s=10, question="qa")
    index.add("s", b, b"bb", ttl_s=100, question="qb")
    found = index.nearest("s", a)
    assert [(sim, index.values[row], index.questions[row]) for sim, row in found] == [(1.0, b"aa", "qa"), (0.0, b"bb", "qb")]
    assert index.nearest("t", a) == []
    now[0] += 20  # a expired
    assert [index.values[row] for _, row in index.nearest("s", a)] == [b"bb"]
    index.add("s", c, b"cc", ttl_s=100, question="qc")  # the expired one makes room
    assert len(index) == 2 and sorted(index.questions) == ["qb", "qc"]
    now[0] += 1
    index.touch(index.nearest("s", b, k=1)[0][1])  # b used: c is now the least recently used
    index.add("s", a, b"dddd", ttl_s=100)
    assert sorted(index.values) == [b"bb", b"dddd"] and sorted(index.questions) == ["", "qb"]
    index.add("s", c, b"x" * 11, ttl_s=100)  # over max_bytes alone: not kept
    assert len(index) == 2 and index.bytes == 6


def test_a_missing_corpus_embedder_is_one_line_naming_the_setting(tmp_path) -> None:
    data = {"gateway": {"database": str(tmp_path / "gw.db"), "chain": ["route", "semantic_cache", "upstream"]},
            "backends": [{"name": "a", "base_url": "http://127.0.0.1:1/v1", "model": "a"}], "routes": [{"alias": "m", "backends": ["a"]}],
            "semantic_cache": {"embedder_path": "nowhere/embedder.npz"}}
    with pytest.raises(ConfigError, match=r"semantic_cache.embedder_path = .*nowhere/embedder.npz.*londinium index vectors"):
        Gateway(parse_settings(data, str(tmp_path / "gw.toml"), tmp_path))


def test_an_index_of_an_older_format_is_ignored_not_refused(tmp_path) -> None:
    index = SemanticIndex(dim=2)
    index.add("s", np.array([1, 0], np.float32), b"aa", ttl_s=100, question="q")
    snapshot = index.snapshot("corpus")
    meta = json.loads(snapshot["meta"].tobytes())
    snapshot["meta"] = np.frombuffer(json.dumps({**meta, "format": 1}).encode(), np.uint8)
    write(tmp_path / "old.npz", snapshot)
    loaded, note = SemanticIndex.load(tmp_path / "old.npz", "corpus", 2, 10, 1000)
    assert len(loaded) == 0 and note.startswith("ignored: written in format 1")
    index.save(tmp_path / "new.npz", "corpus")
    loaded, note = SemanticIndex.load(tmp_path / "new.npz", "corpus", 2, 10, 1000)
    assert note == "1 entries" and loaded.questions == ["q"]
