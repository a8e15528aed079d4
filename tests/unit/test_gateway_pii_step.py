"""The PII guardrail alone (gateway/pii.py, pii_mask.py, pii_detect.py): the `pii` step in a chain of
the real `route` step and an upstream that echoes what it was sent, so whatever reached the "backend"
is visible. The mask -> unmask round trip on generated texts, streams split at every boundary, block,
log, custom recognizers, per-route and per-key actions, and config errors."""

from __future__ import annotations

import asyncio
import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("presidio_analyzer")

from londinium.errors import ConfigError  # noqa: E402
from londinium.gateway.chain import Chain, Exchange, Reply  # noqa: E402
from londinium.gateway.pii import Pii  # noqa: E402
from londinium.gateway.pii_mask import PLACEHOLDER, Masking  # noqa: E402
from londinium.gateway.runtime import Gateway  # noqa: E402
from londinium.gateway.settings import parse_settings  # noqa: E402
from londinium.serve.errors import APIError  # noqa: E402

EMAIL, PHONE, CARD, IP = "john.doe@example.com", "+44 20 7946 0958", "4111 1111 1111 1111", "192.168.10.42"


class Echo:
    """Stands where `upstream` would: answers with the request's last text, as JSON or as a stream cut
    into `cuts` pieces (character offsets), and keeps every body it was sent."""

    name = "upstream"

    def __init__(self):
        self.bodies: list[dict] = []
        self.cuts: list[int] = []

    async def __call__(self, ex: Exchange, call_next) -> Reply:
        self.bodies.append(copy.deepcopy(ex.body))
        text = ex.body["messages"][-1]["content"] if ex.endpoint == "chat" else ex.body["prompt"]
        if not ex.stream:
            return Reply(200, body={"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})
        bounds = [0, *sorted(set(self.cuts)), len(text)]
        return Reply(200, events=self._events([text[a:b] for a, b in zip(bounds, bounds[1:])]))

    async def _events(self, pieces: list[str]):
        for piece in pieces:
            yield {"id": "s", "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
        yield {"id": "s", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}


@pytest.fixture(scope="module")
def made():
    """One gateway per distinct [pii] table (building Presidio's analyzer takes a moment), shared by the module."""
    gateways: dict[str, tuple[Gateway, Pii]] = {}
    yield gateways
    for gw, _ in gateways.values():
        gw.store.close()


@pytest.fixture
def chain(made, tmp_path_factory):
    def make(**pii) -> tuple[Chain, Echo, Gateway]:
        name = repr(sorted(pii.items()))
        if name not in made:
            data = {"gateway": {"database": str(tmp_path_factory.mktemp("pii") / "gw.db"), "chain": ["route", "pii", "upstream"]},
                    "backends": [{"name": "a", "base_url": "http://127.0.0.1:1/v1", "model": "a"}],
                    "routes": [{"alias": "m", "backends": ["a"]}, {"alias": "strict", "backends": ["a"], "pii_actions": {"EMAIL_ADDRESS": "block"}},
                               {"alias": "open", "backends": ["a"], "pii": False}],
                    "pii": pii}
            gw = Gateway(parse_settings(data, "gw.toml"))
            made[name] = (gw, gw.chain.steps[1])
        gw, step = made[name]
        echo = Echo()
        return Chain([gw.chain.steps[0], step, echo]), echo, gw

    return make


def client_text(reply: Reply) -> str:
    if reply.events is None:
        return reply.body["choices"][0]["message"]["content"]

    async def read():
        return "".join(c["choices"][0]["delta"].get("content", "") for c in [x async for x in reply.events] if c["choices"])

    return asyncio.run(read())


def send(chain: Chain, text: str, model: str = "m", stream: bool = False, key=None) -> tuple[str, Exchange]:
    ex = Exchange("chat", {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}, key=key)
    return client_text(asyncio.run(chain(ex))), ex


# Text around the entities: letters, digits, spaces and the characters placeholders are made of.
FILLER = st.text(alphabet=st.sampled_from(list("abcXYZ019 _<>.,:-@EMAIL")), max_size=14)
ENTITY = st.one_of(
    st.from_regex(r"[a-z]{2,8}\.[a-z]{2,8}@(example|mail|post)\.(com|org|co\.uk)", fullmatch=True),
    st.sampled_from([PHONE, "(212) 555-0187", "+1 415 555 0134"]),
    st.sampled_from([CARD, "5500 0000 0000 0004", "3400 000000 00009"]),
    st.tuples(*[st.integers(1, 254)] * 4).map(lambda t: ".".join(map(str, t))),
    st.sampled_from(["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000"]),
)


@st.composite
def texts(draw) -> str:
    parts = [draw(FILLER)]
    for _ in range(draw(st.integers(0, 4))):
        parts += [" ", draw(ENTITY), " ", draw(FILLER)]
    return "".join(parts)


def test_mask_then_unmask_gives_back_exactly_the_text_on_generated_texts(chain) -> None:
    _, _, gw = chain()
    detector = gw.chain.steps[1].detector

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(texts())
    def check(text: str) -> None:
        spans = detector.find(text)
        masking = Masking([text])
        masked = masking.mask(text, [(s.entity, s.start, s.end) for s in spans])
        for s in spans:
            assert text[s.start:s.end] not in PLACEHOLDER.sub("", masked) or text[s.start:s.end] in PLACEHOLDER.sub("", text)
        assert masking.unmask(masked) == text
        if spans:
            assert PLACEHOLDER.search(masked)
        stream = masking.stream()  # the same, one character at a time: the worst split there is
        pieces = []
        for ch in masked:
            pieces.append(stream.feed(ch))
            held = stream.held
            assert held == "" or any(p.startswith(held) and p != held for p in masking.values)
        assert "".join(pieces) + stream.flush() == text

    check()


def one_presidio_pass(detector, text: str, entities: list[str] | None = None) -> list[tuple[str, int, int]]:
    """Every recognizer of `entities` on the text at once (what the step did before phones were looked
    for last), overlaps resolved as `Detector.find` resolves them."""
    found = detector.analyzer.analyze(text=text, language="en", entities=entities or detector.entities, score_threshold=detector.threshold)
    kept: list = []
    for r in sorted(found, key=lambda r: (-(r.end - r.start), -r.score, r.start)):
        if all(r.end <= k.start or r.start >= k.end for k in kept):
            kept.append(r)
    return sorted((r.entity_type, r.start, r.end) for r in kept)


def test_phones_are_looked_for_in_what_the_other_recognizers_left(chain) -> None:
    _, _, gw = chain()
    detector = gw.chain.steps[1].detector
    apart = lambda a, b: a[2] <= b[1] or a[1] >= b[2]  # noqa: E731

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(texts())
    def check(text: str) -> None:
        found = sorted((s.entity, s.start, s.end) for s in detector.find(text))
        phones, others = [f for f in found if f[0] == "PHONE_NUMBER"], [f for f in found if f[0] != "PHONE_NUMBER"]
        assert others == one_presidio_pass(detector, text, [e for e in detector.entities if e != "PHONE_NUMBER"])
        assert all(apart(p, o) for p in phones for o in others)
        for before in one_presidio_pass(detector, text):  # a phone one pass found is kept unless another finding covers it
            assert before in found or before[0] == "PHONE_NUMBER" and not all(apart(before, o) for o in others)

    check()
    # One pass missed this phone: phonenumbers read it and the card's digits as one candidate, which is no number.
    text = f" {PHONE}  {CARD} "
    assert [s.entity for s in detector.find(text)] == ["PHONE_NUMBER", "CREDIT_CARD"]
    assert [e for e, _, _ in one_presidio_pass(detector, text)] == ["CREDIT_CARD"]
    # And took a card with a digit before it for a phone number.
    text = " 0 3400 000000 00009 "
    assert [s.entity for s in detector.find(text)] == ["CREDIT_CARD"]
    assert [e for e, _, _ in one_presidio_pass(detector, text)] == ["PHONE_NUMBER"]


def test_the_upstream_sees_placeholders_only_and_the_client_the_values(chain) -> None:
    c, echo, _ = chain()
    text = f"Write to {EMAIL} or {EMAIL}, ring {PHONE}, card {CARD}, host {IP}."
    answer, ex = send(c, text)
    assert answer == text
    sent = echo.bodies[0]["messages"][0]["content"]
    assert all(value not in sent for value in (EMAIL, PHONE, CARD, IP))
    assert sent.count("<EMAIL_ADDRESS_1>") == 2 and "<PHONE_NUMBER_1>" in sent and "<CREDIT_CARD_1>" in sent and "<IP_ADDRESS_1>" in sent
    assert ex.outcome == {"pii": "masked", "pii_found": "CREDIT_CARD=1,EMAIL_ADDRESS=2,IP_ADDRESS=1,PHONE_NUMBER=1"}


def test_a_stream_is_unmasked_exactly_wherever_the_chunks_split_a_placeholder(chain) -> None:
    c, echo, _ = chain()
    text = f"Mail {EMAIL} then <EM and {IP}>"
    _, ex = send(c, text)
    masked = echo.bodies[0]["messages"][0]["content"]
    for cut in range(1, len(masked)):
        for second in (None, cut + 3):  # one split, and two close together (inside one placeholder)
            echo.cuts = [cut] + ([second] if second and second < len(masked) else [])
            answer, _ = send(c, text, stream=True)
            assert answer == text, (cut, second)


def test_a_blocked_entity_is_a_400_naming_its_type_never_its_value(chain) -> None:
    c, echo, _ = chain(actions={"EMAIL_ADDRESS": "mask", "CREDIT_CARD": "block"})
    with pytest.raises(APIError) as e:
        send(c, f"my card is {CARD}, mail {EMAIL}")
    assert e.value.status == 400 and e.value.code == "pii_blocked" and "CREDIT_CARD" in e.value.message
    assert CARD not in e.value.message and EMAIL not in e.value.message and echo.bodies == []
    with pytest.raises(APIError):  # a route's own action: the email is blocked on 'strict' only
        send(c, f"mail {EMAIL}", model="strict")


def test_log_only_passes_the_text_unchanged_and_counts_it(chain) -> None:
    c, echo, gw = chain(actions={"EMAIL_ADDRESS": "log"})
    text = f"mail {EMAIL}"
    answer, ex = send(c, text)
    assert answer == text and echo.bodies[0]["messages"][0]["content"] == text
    assert ex.outcome == {"pii": "logged", "pii_found": "EMAIL_ADDRESS=1"}
    assert EMAIL not in str(ex.log_body) and "<EMAIL_ADDRESS_1>" in str(ex.log_body)  # what a log may show
    assert gw.telemetry.metrics.registry.get_sample_value(
        "londinium_gateway_pii_entities_total", {"model": "m", "entity": "EMAIL_ADDRESS", "action": "log"}) >= 1


def test_own_patterns_and_deny_lists_are_masked_and_per_key_actions_win(chain) -> None:
    c, echo, gw = chain(actions={"ORDER_ID": "mask", "PROJECT": "mask", "EMAIL_ADDRESS": "mask"},
                        patterns={"ORDER_ID": "ORD-[0-9]{6}"}, deny_lists={"PROJECT": ["Falcon"]},
                        keys={"partner": {"EMAIL_ADDRESS": "off"}}, bypass_keys=["internal"])
    text = f"Order ORD-123456 of project Falcon for {EMAIL}"
    answer, _ = send(c, text)
    assert answer == text and echo.bodies[-1]["messages"][0]["content"] == "Order <ORDER_ID_1> of project <PROJECT_1> for <EMAIL_ADDRESS_1>"
    partner = gw.store.create_key("partner")[0]
    send(c, text, key=partner)
    assert echo.bodies[-1]["messages"][0]["content"] == f"Order <ORDER_ID_1> of project <PROJECT_1> for {EMAIL}"
    _, ex = send(c, text, key=gw.store.create_key("internal")[0])
    assert echo.bodies[-1]["messages"][0]["content"] == text and ex.outcome == {"pii": "bypass"}
    _, ex = send(c, text, model="open")  # a route with pii = false
    assert ex.outcome == {"pii": "bypass"}


def test_a_placeholder_the_client_wrote_itself_is_never_reused(chain) -> None:
    c, echo, _ = chain()
    text = f"<EMAIL_ADDRESS_1> is literal; {EMAIL} is not"
    answer, _ = send(c, text)
    assert answer == text and "<EMAIL_ADDRESS_2>" in echo.bodies[0]["messages"][0]["content"]


@pytest.mark.parametrize("pii, message", [
    ({"actions": {"EMAIL_ADDRESS": "hide"}}, "pii.actions.EMAIL_ADDRESS = 'hide': must be one of mask, block, log, off"),
    ({"actions": {"PASSPORT_X": "mask"}}, "no recognizer finds 'PASSPORT_X'"),
    ({"actions": {"PERSON": "mask"}}, "a name needs an NER model"),
    ({"patterns": {"order id": "x"}}, "entity names are capitals"),
    ({"actions": {"ORDER_ID": "mask"}, "patterns": {"ORDER_ID": "ORD-("}}, "pii.patterns.ORDER_ID: not a valid regular expression"),
    ({"ner_model": "/nonexistent/model"}, "pii.ner_model /nonexistent/model is not a folder"),
])
def test_a_bad_pii_table_is_one_config_error_naming_the_field(tmp_path, pii, message) -> None:
    data = {"gateway": {"database": str(tmp_path / "gw.db"), "chain": ["route", "pii", "upstream"]},
            "backends": [{"name": "a", "base_url": "http://127.0.0.1:1/v1", "model": "a"}],
            "routes": [{"alias": "m", "backends": ["a"]}], "pii": pii}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        Gateway(parse_settings(data, "gw.toml"))


class ToolEcho:
    """Stands where `upstream` would: calls a tool with the arguments of the request's earlier tool call,
    as JSON or as a stream whose argument fragments are 3 characters long (a placeholder always split)."""

    name = "upstream"

    def __init__(self):
        self.bodies: list[dict] = []

    async def __call__(self, ex: Exchange, call_next) -> Reply:
        self.bodies.append(copy.deepcopy(ex.body))
        arguments = ex.body["messages"][1]["tool_calls"][0]["function"]["arguments"]
        call = {"id": "call_2", "type": "function", "function": {"name": "send", "arguments": arguments}}
        if not ex.stream:
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            return Reply(200, body={"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]})
        return Reply(200, events=self._events(arguments))

    async def _events(self, arguments: str):
        yield {"id": "s", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_2", "type": "function",
                                                                          "function": {"name": "send", "arguments": ""}}]}, "finish_reason": None}]}
        for i in range(0, len(arguments), 3):
            yield {"id": "s", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": arguments[i:i + 3]}}]},
                                           "finish_reason": None}]}
        yield {"id": "s", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}


def test_tool_call_arguments_are_masked_on_the_way_in_and_unmasked_on_the_way_out(chain) -> None:
    _, _, gw = chain()
    route, step = gw.chain.steps[0], gw.chain.steps[1]
    echo = ToolEcho()
    tool_chain = Chain([route, step, echo])
    arguments = json.dumps({"to": EMAIL, "phone": PHONE})
    messages = [{"role": "user", "content": f"Write to {EMAIL}."},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                                                                       "function": {"name": "send", "arguments": arguments}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": f"sent to {EMAIL} from {IP}"}]
    for stream in (False, True):
        ex = Exchange("chat", {"model": "m", "messages": messages, "stream": stream})
        reply = asyncio.run(tool_chain(ex))
        seen = json.dumps(echo.bodies[-1])
        assert EMAIL not in seen and PHONE not in seen and IP not in seen and "<EMAIL_ADDRESS_1>" in seen
        assert json.loads(echo.bodies[-1]["messages"][1]["tool_calls"][0]["function"]["arguments"]) == \
            {"to": "<EMAIL_ADDRESS_1>", "phone": "<PHONE_NUMBER_1>"}  # still JSON: a placeholder needs no escaping
        if not stream:
            got = reply.body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
        else:
            async def read():
                return [c async for c in reply.events]
            chunks = asyncio.run(read())
            got = "".join(t["function"].get("arguments", "") for c in chunks for t in c["choices"][0]["delta"].get("tool_calls", []))
            assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
        assert got == arguments and ex.outcome["pii"] == "masked"
