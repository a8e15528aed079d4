"""Instruction data for SFT: both formats the field uses read to the same messages, every fault is
named by file, line and field, and the batches put the loss on the assistant's tokens only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers.tool_transcripts import SEARCH, reflecting_line

from londinium.train.sft_batches import ChatLoader, iter_chat_batches, pad_rows, replay_rows
from londinium.train.sft_data import DataError, held_out, read_conversations, tokenize


def _write(tmp_path, *rows) -> str:
    path = tmp_path / "data.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_messages_and_prompt_completion_read_the_same(tmp_path):
    pair = {"prompt": "Who art thou?", "completion": "A friend."}
    messages = {"messages": [{"role": "user", "content": "Who art thou?"}, {"role": "assistant", "content": "A friend."}]}
    parts = {"messages": [{"role": "developer", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
                          {"role": "user", "content": "Who art thou?"}, {"role": "assistant", "content": "A friend."}], "id": "x"}
    a, b, c = read_conversations(_write(tmp_path, pair, "", messages, parts))
    assert a.messages == b.messages == c.messages[1:]
    assert c.messages[0] == {"role": "system", "content": "Be brief."}
    assert c.where.endswith("line 4")


@pytest.mark.parametrize("row, field", [
    ('{"messages": [', "not valid JSON"),
    ([1, 2], "not a JSON object"),
    ({"text": "hello"}, "no \"messages\""),
    ({"messages": []}, "field 'messages' must be a non-empty list"),
    ({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}, "field 'messages[0].role'"),
    ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]}, "field 'messages[0].content'"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}, {"role": "assistant", "content": "y"}]},
     "field 'messages[0].content[0]'"),
    ({"messages": [{"role": "user", "content": "x"}]}, "ends with the assistant's answer"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": " "}]}, "field 'messages[1].content' is an empty answer"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "y"}]},
     "field 'messages[1].role'"),
    ({"messages": [{"role": "user", "content": "x", "name": "n"}, {"role": "assistant", "content": "y"}]}, "field 'messages[0].name'"),
    ({"prompt": "x"}, "field 'completion' is missing"),
    ({"prompt": "x", "completion": [{"role": "user", "content": "y"}]}, "field 'completion' must hold assistant"),
])
def test_a_bad_line_is_named_by_file_line_and_field(tmp_path, row, field):
    good = {"prompt": "a", "completion": "b"}
    path = _write(tmp_path, good, row)
    with pytest.raises(DataError) as e:
        read_conversations(path)
    assert str(e.value).startswith(f"{path}: line 2: ") and field in str(e.value)


def _tool_line(call: dict | None = None, result: dict | None = None, **row) -> dict:
    call = {"id": "c1", "type": "function", "function": {"name": "search", "arguments": '{"q":"mercy"}'}, **(call or {})}
    return {"tools": [SEARCH], **row, "messages": [
        {"role": "user", "content": "Where is mercy?"}, {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "Portia: The quality of mercy", **(result or {})},
        {"role": "assistant", "content": "In Portia's speech."}]}


def _without(line: dict, index: int) -> dict:
    return {**line, "messages": [m for i, m in enumerate(line["messages"]) if i != index]}


def _with(line: dict, index: int, **fields) -> dict:
    return {**line, "messages": [{**m, **fields} if i == index else m for i, m in enumerate(line["messages"])]}


@pytest.mark.parametrize("row, field", [
    (_tool_line(tools="search"), "field 'tools' must be a list"),
    (_tool_line(tools=[{"type": "function", "function": {"description": "x"}}]), "field 'tools[0].function.name'"),
    (_tool_line(call={"function": {"name": "search", "arguments": "{q: 1"}}), "field 'messages[1].tool_calls[0].function.arguments' is not valid JSON"),
    (_tool_line(call={"function": {"name": "search", "arguments": "[1]"}}), "field 'messages[1].tool_calls[0].function.arguments' must be a JSON object"),
    (_tool_line(call={"function": {"name": "fetch", "arguments": "{}"}}), "field 'messages[1].tool_calls[0].function.name' is 'fetch', which 'tools' does not offer"),
    (_tool_line(result={"tool_call_id": "c9"}), "field 'messages[2].tool_call_id' is 'c9'"),
    (_tool_line(result={"name": "search"}), "field 'messages[2].name' is not supported in a tool message"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "r"}, {"role": "assistant", "content": "y"}]},
     "field 'messages[1]' is a tool result with no assistant tool call before it"),
    ({"messages": [{"role": "user", "content": "x", "tool_calls": []}, {"role": "assistant", "content": "y"}]},
     "field 'messages[0].tool_calls' is not supported in a user message"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": []}]},
     "field 'messages[1].tool_calls' must be a non-empty list"),
    # transcripts of several calls: a failed one, the reflection, another, two at once
    (_without(reflecting_line(), 2), "field 'messages[1].tool_calls[0]' (id 'c1') has no tool result before 'messages[2]'"),
    (_without(reflecting_line(), 7), "field 'messages[5].tool_calls[0]' (id 'c3') has no tool result before 'messages[7]'"),
    (_with(reflecting_line(), 7, tool_call_id="c4"), "field 'messages[7].tool_call_id' is 'c4', a call already answered"),
    (_with(reflecting_line(), 4, tool_call_id="c1"), "field 'messages[4].tool_call_id' is 'c1', which no call of the assistant turn before it has ('c2')"),
    ({**reflecting_line(), "messages": [*reflecting_line()["messages"][:5], {"role": "tool", "content": "again"},
                                         *reflecting_line()["messages"][5:]]},
     "field 'messages[5]' is a tool result too many: every call of 'messages[3]' is answered"),
])
def test_a_bad_tool_turn_is_named_by_line_and_field(tmp_path, row, field):
    path = _write(tmp_path, _tool_line(), row)
    with pytest.raises(DataError) as e:
        read_conversations(path)
    assert str(e.value).startswith(f"{path}: line 2: ") and field in str(e.value), str(e.value)


def test_a_transcript_of_several_calls_and_an_error_trains_every_assistant_turn(tmp_path, tiny_workspace):
    from londinium.infer.chat_template import render_chat
    from londinium.tokenizer.codec import load_tokenizer

    line = reflecting_line()
    no_ids = {**line, "messages": [{k: v for k, v in m.items() if k != "tool_call_id"} for m in line["messages"]]}
    ends_calling = {**line, "messages": line["messages"][:4]}  # a line may end with the assistant's call
    [c, _, last] = read_conversations(_write(tmp_path, line, no_ids, ends_calling))
    assert last.messages[-1]["tool_calls"][0]["id"] == "c2"
    tokenizer = load_tokenizer(tiny_workspace)
    [e], _ = tokenize([c], tokenizer, 2048)
    assert tokenizer.decode(e.ids.tolist(), skip_special_tokens=False) == render_chat(list(c.messages), False, tools=[SEARCH])
    trained = tokenizer.decode(e.ids[e.mask].tolist(), skip_special_tokens=False)
    read = tokenizer.decode(e.ids[~e.mask].tolist(), skip_special_tokens=False)
    call = '<tool_call>\n{{"name":"search","arguments":{{"q":"{}"}}}}\n</tool_call>'.format
    assert trained == (f"{call('')}<|end|>The query was empty; I search for the word.\n{call('mercy')}<|end|>"
                       f"{call('Portia')}\n{call('strained')}<|end|>In Portia's speech.<|end|>")
    for result in ("Error: the query is empty", "quality of mercy", "is not strain'd", "Enter PORTIA"):
        assert result in read and result not in trained  # the error and the results are read, not learnt


def test_tool_calls_are_trained_on_and_tool_results_are_not(tmp_path, tiny_workspace):
    from londinium.infer.chat_template import render_chat
    from londinium.tokenizer.codec import load_tokenizer

    as_object = _tool_line(call={"function": {"name": "search", "arguments": {"q": "mercy"}}})
    [c, same] = read_conversations(_write(tmp_path, _tool_line(), as_object))
    assert c.tools == (SEARCH,) and c.messages == same.messages  # an object's arguments are written as compact JSON
    tokenizer = load_tokenizer(tiny_workspace)
    [e], _ = tokenize([c], tokenizer, 1024)
    assert tokenizer.decode(e.ids.tolist(), skip_special_tokens=False) == render_chat(list(c.messages), False, tools=[SEARCH])
    trained = tokenizer.decode(e.ids[e.mask].tolist(), skip_special_tokens=False)
    read = tokenizer.decode(e.ids[~e.mask].tolist(), skip_special_tokens=False)
    assert trained == '<tool_call>\n{"name":"search","arguments":{"q":"mercy"}}\n</tool_call><|end|>In Portia\'s speech.<|end|>'
    assert "quality of mercy" in read and '"search"' in read  # the result and the tool's signature: read only


def test_an_empty_or_missing_file_is_refused(tmp_path):
    with pytest.raises(DataError, match="holds no conversations"):
        read_conversations(_write(tmp_path, ""))
    with pytest.raises(DataError, match="nothing.jsonl"):
        read_conversations(tmp_path / "nothing.jsonl")


def test_the_held_out_share_goes_by_content_not_position(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(40)]
    train, val = held_out(read_conversations(_write(tmp_path, *rows)), 0.1)
    assert len(val) == 4 and len(train) == 36
    more = held_out(read_conversations(_write(tmp_path, {"prompt": "new", "completion": "line"}, *rows[::-1])), 0.1)[1]
    assert len({c.digest() for c in val} & {c.digest() for c in more}) >= 3  # one line added, in another order: one moves at most


@pytest.fixture(scope="module")
def examples(tiny_workspace, tmp_path_factory):
    from londinium.tokenizer.codec import load_tokenizer

    rows = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Say {w}"},
                          {"role": "assistant", "content": f"{w} {w}"}, {"role": "user", "content": "Again"},
                          {"role": "assistant", "content": w}]}
            for w in ("thou", "thee", "lord", "king", "queen", "crown", "grace", "sword")]
    path = _write(tmp_path_factory.mktemp("sft"), *rows)
    tokenizer = load_tokenizer(tiny_workspace)
    out, too_long = tokenize(read_conversations(path), tokenizer, 64)
    assert not too_long
    return out, tokenizer


def test_targets_are_the_assistant_tokens_only(examples):
    exs, tokenizer = examples
    x, y = pad_rows([(e.ids, e.mask) for e in exs], pad_id=0, length=max(map(len, exs)) - 1)
    for e, xr, yr in zip(exs, x, y):
        n = len(e) - 1
        assert (xr[:n] == e.ids[:-1]).all()
        targets = [int(t) for t in yr if t != -1]
        word = tokenizer.decode(targets, skip_special_tokens=False)
        assert word.count("<|end|>") == 2 and "<|user|>" not in word and "Again" not in word and "brief" not in word
        assert (yr[n:] == -1).all()  # padding: no loss


def test_batches_split_the_loss_by_the_replay_share_and_resume_exactly(examples, tiny_workspace):
    from londinium.data.loader import open_shard

    exs, _ = examples
    shard = open_shard(tiny_workspace, "train")
    loader = ChatLoader(exs, shard, batch_size=8, replay_share=0.25, seed=3, pad_id=0)
    assert replay_rows(8, 0.25) == 2 and replay_rows(8, 0.0) == 0 and replay_rows(2, 0.9) == 1
    batches = [loader.next_batch() for _ in range(5)]
    for b in batches:
        w = b.weights.numpy()
        assert w[:6].sum() == pytest.approx(0.75) and w[6:].sum() == pytest.approx(0.25)
        assert (w[b.y.numpy() == -1] == 0).all() and (b.y[6:] != -1).all()  # replay rows: every next token
    again = ChatLoader(exs, shard, batch_size=8, replay_share=0.25, seed=3, pad_id=0)
    again.next_batch(), again.next_batch()
    state = again.state_dict()
    resumed = ChatLoader(exs, shard, batch_size=8, replay_share=0.25, seed=3, pad_id=0)
    resumed.load_state_dict(state)
    for b in batches[2:]:
        r = resumed.next_batch()
        assert r.x.equal(b.x) and r.y.equal(b.y) and r.weights.equal(b.weights) and r.tokens == b.tokens
    with pytest.raises(Exception, match="seed"):
        ChatLoader(exs, shard, batch_size=8, replay_share=0.25, seed=4, pad_id=0).load_state_dict(state)


def test_the_end_of_an_answer_weighs_end_weight_answer_tokens_within_the_conversations_share(examples, tiny_workspace):
    from londinium.data.loader import open_shard

    exs, tokenizer = examples
    end = tokenizer.token_to_id("<|end|>")
    shard = open_shard(tiny_workspace, "train")
    plain = ChatLoader(exs, shard, batch_size=8, replay_share=0.25, seed=3, pad_id=0).next_batch()
    same = ChatLoader(exs, shard, batch_size=8, replay_share=0.25, seed=3, pad_id=0, end_id=end, end_weight=1.0).next_batch()
    assert same.weights.equal(plain.weights)  # weight 1 is the plain split, to the bit
    b = ChatLoader(exs, shard, batch_size=8, replay_share=0.25, seed=3, pad_id=0, end_id=end, end_weight=5.0).next_batch()
    w, y = b.weights.numpy(), b.y.numpy()
    assert w[:6].sum() == pytest.approx(0.75) and w[6:].sum() == pytest.approx(0.25)
    assert (w[6:] == plain.weights.numpy()[6:]).all()  # replay rows untouched
    chats, targets = w[:6], y[:6]
    ends, words = chats[targets == end], chats[(targets != end) & (targets != -1)]
    assert len(ends) == 12 and len(set(ends.tolist())) == 1 and len(set(words.tolist())) == 1  # two answers a conversation
    assert ends[0] == pytest.approx(5 * words[0])


def test_two_ranks_read_disjoint_conversations(examples):
    exs, _ = examples
    ranks = [ChatLoader(exs, None, batch_size=2, replay_share=0.0, seed=1, pad_id=0, rank=r, world_size=2) for r in (0, 1)]
    seen = [[tuple(row.tolist()) for _ in range(2) for row in loader.next_batch().x] for loader in ranks]
    assert not set(seen[0]) & set(seen[1]) and len(set(seen[0]) | set(seen[1])) == 8  # one epoch, split
    held = [list(iter_chat_batches(exs, 3, 0, rank=r, world_size=2)) for r in (0, 1)]
    assert sum(x.shape[0] for part in held for x, _ in part) == len(exs)

