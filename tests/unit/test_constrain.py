"""Constrained decoding: an untrained model under a grammar still emits only what the grammar accepts.

The model has random weights, so nothing but the mask makes its output JSON: every completed sample
must parse and validate, however many seeds are drawn.
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import torch
from engine_fixtures import make_model, make_tokenizer

from londinium.infer import Engine, SamplingParams
from londinium.infer.constrain import Constraint, ConstraintError, advance

pytestmark = pytest.mark.usefixtures("one_thread")

SCHEMAS = {
    "flat, required keys, enum": {
        "type": "object", "additionalProperties": False, "required": ["name", "mood"],
        "properties": {"name": {"type": "string", "maxLength": 6}, "mood": {"enum": ["glad", "sad", "wroth"]}}},
    "numbers": {
        "type": "object", "additionalProperties": False, "required": ["act", "scene", "weight"],
        "properties": {"act": {"type": "integer", "minimum": 1, "maximum": 5}, "scene": {"type": "integer"},
                       "weight": {"type": "number"}, "prose": {"type": "boolean"}}},
    "nesting and arrays": {
        "type": "object", "additionalProperties": False, "required": ["speaker", "lines"],
        "properties": {
            "speaker": {"type": "object", "additionalProperties": False, "required": ["who"],
                        "properties": {"who": {"enum": ["HAMLET", "OPHELIA"]}, "age": {"type": "integer", "maximum": 99}}},
            "lines": {"type": "array", "maxItems": 3, "items": {"type": "string", "maxLength": 4}}}},
}
SAMPLES = 64  # per schema: 192 seeded samples in all


@pytest.fixture(scope="module")
def engine() -> Engine:
    tok = make_tokenizer()
    return Engine(make_model(tok, context=128), tok, max_running=32)


@pytest.mark.parametrize("name", SCHEMAS)
def test_untrained_model_under_a_schema_always_validates(engine, name):
    schema = SCHEMAS[name]
    constraint = Constraint.json_schema(schema)
    params = [SamplingParams(max_tokens=60, temperature=1.0, seed=seed, constraint=constraint) for seed in range(SAMPLES)]
    completions = engine.generate(["Thou art"] * SAMPLES, params)
    finished = [c for c in completions if c.finish_reason == "stop"]
    for c in finished:
        jsonschema.validate(json.loads(c.text), schema)
    # The rest ran out of tokens mid-value: their text is a prefix of a valid one, never a complete wrong one.
    assert all(c.finish_reason == "length" and len(c.token_ids) == 60 for c in completions if c.finish_reason != "stop")
    assert len(finished) >= SAMPLES // 2, f"only {len(finished)} of {SAMPLES} samples completed within 60 tokens"


def test_json_object_regex_and_choice(engine):
    kinds = [(Constraint.json_object(), lambda t: isinstance(json.loads(t), dict)),
             (Constraint.regex(r"[0-9]{3}-[a-z]{2,4}"), lambda t: re.fullmatch(r"[0-9]{3}-[a-z]{2,4}", t)),
             (Constraint.choice(["yea", "nay", "I know not"]), lambda t: t in ("yea", "nay", "I know not"))]
    for constraint, ok in kinds:
        for c in engine.generate(["To"] * 8, [SamplingParams(max_tokens=40, seed=s, constraint=constraint) for s in range(8)]):
            assert c.finish_reason == "length" or ok(c.text), (constraint.kind, c.text)
            assert c.finish_reason == "stop" or constraint.kind == "json_object", (constraint.kind, c.text)


def test_unconstrained_rows_decode_alike_alone_and_beside_constrained_ones(engine):
    free = [SamplingParams(max_tokens=20, temperature=0.0), SamplingParams(max_tokens=20, temperature=0.9, seed=7)]
    alone = [c.token_ids for c in engine.generate(["Thou art", "Shall I"], free)]
    constrained = SamplingParams(max_tokens=20, seed=3, constraint=Constraint.json_schema(SCHEMAS["numbers"]))
    mixed = engine.generate(["To", "Thou art", "To", "Shall I"], [constrained, free[0], constrained, free[1]])
    assert [mixed[1].token_ids, mixed[3].token_ids] == alone
    assert mixed[0].token_ids == mixed[2].token_ids  # a seeded constrained sample is reproducible too


def test_streaming_with_logprobs_gives_the_same_valid_text(engine):
    params = SamplingParams(max_tokens=60, seed=11, logprobs=2, constraint=Constraint.json_schema(SCHEMAS["flat, required keys, enum"]))
    [whole] = engine.generate(["Thou art"], params)
    deltas = list(engine.stream("Thou art", params))
    assert "".join(d.text for d in deltas) == whole.text
    assert [t for d in deltas for t in d.token_ids] == whole.token_ids
    assert len(whole.choices[0].logprobs) == len(whole.token_ids)
    assert all(lp.logprob <= 0 and len(lp.top) == 2 for lp in whole.choices[0].logprobs)
    if whole.finish_reason == "stop":
        jsonschema.validate(json.loads(whole.text), SCHEMAS["flat, required keys, enum"])


def test_ignore_eos_still_ends_a_constrained_sequence_at_end_of_text(engine):
    # A grammar that may end or go on ([a-z]+), and end-of-text made all but certain wherever it is allowed.
    params = [SamplingParams(max_tokens=20, seed=s, ignore_eos=True, logit_bias={engine.eos_id: 100},
                             constraint=Constraint.regex("[a-z]+")) for s in range(4)]
    for c in engine.generate(["Thou art"] * 4, params):
        assert c.finish_reason == "stop" and c.token_ids[-1] == engine.eos_id and re.fullmatch("[a-z]+", c.text), c.text


def test_a_grammar_cut_short_by_max_tokens_ends_with_length(engine):
    [c] = engine.generate(["To"], SamplingParams(max_tokens=3, seed=1, constraint=Constraint.json_schema(SCHEMAS["numbers"])))
    assert c.finish_reason == "length" and c.text.startswith("{")


def test_a_schema_the_library_refuses_is_a_clear_error(engine):
    with pytest.raises(ConstraintError, match="json schema cannot be compiled"):
        engine.generate(["To"], SamplingParams(max_tokens=4, constraint=Constraint.json_schema({"$ref": "#/nowhere"})))
    with pytest.raises(ConstraintError, match="regex cannot be compiled"):
        engine.generate(["To"], SamplingParams(max_tokens=4, constraint=Constraint.regex("[a-")))


def test_matchers_of_one_grammar_start_at_its_beginning_and_move_alone(engine):
    # Matchers are copies of one compiled grammar: advancing one must not move another, old or new.
    grammars, constraint = engine.grammars, Constraint.json_schema(SCHEMAS["numbers"])
    first, second = grammars.matcher(constraint), grammars.matcher(constraint)
    allowed = lambda m: torch.isfinite(grammars.mask(torch.zeros(1, engine.vocab_size), [0], [m])[0]).nonzero()[:, 0].tolist()
    at_start = allowed(first)
    assert at_start and all(engine.token_text(t).startswith("{") for t in at_start)
    advance(first, at_start[0], constraint)
    assert allowed(first) != at_start
    assert allowed(second) == at_start and allowed(grammars.matcher(constraint)) == at_start


def test_a_refused_grammar_is_refused_again(engine):
    # The compiled grammars are kept, refusals too: the second request gets the same clear error.
    for _ in range(2):
        with pytest.raises(ConstraintError, match="regex cannot be compiled"):
            engine.grammars.matcher(Constraint.regex("(unclosed"))
