"""The chat template renders here exactly as transformers renders it from an export."""

from __future__ import annotations

import pytest

from londinium.infer.chat_template import CHAT_TEMPLATE, ChatTemplateError, render_chat

MESSAGES = [
    {"role": "system", "content": "You speak as a player of 1600."},
    {"role": "user", "content": "Good morrow.\n  What news?"},
    {"role": "assistant", "content": "None, my lord."},
    {"role": "user", "content": "ſpeak, ſirrah 🎭"},
]


def test_render_matches_transformers_apply_chat_template(tiny_workspace):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(tiny_workspace.tokenizer_file))
    tok.chat_template = CHAT_TEMPLATE
    for gen in (True, False):
        theirs = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=gen)
        assert render_chat(MESSAGES, add_generation_prompt=gen) == theirs
    assert render_chat(MESSAGES[:2]).endswith("Good morrow.\n  What news?<|end|>\n<|assistant|>\n")


@pytest.mark.parametrize("messages, match", [
    ([], "empty"),
    ([{"role": "function", "content": "x"}], "unknown role 'function'"),
    ([{"role": "user", "content": "x", "tool_calls": []}], r"messages\[0\].tool_calls"),
    ([{"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f"}}]}], r"messages\[0\].tool_calls\[0\]"),
    ([{"role": "user", "content": None}], r"messages\[0\]"),
    (["hello"], r"messages\[0\]"),
])
def test_bad_messages_are_named_errors(messages, match):
    with pytest.raises(ChatTemplateError, match=match):
        render_chat(messages)


def test_assistant_mask_matches_transformers(tiny_workspace):
    """The tokens londinium's SFT trains on are those transformers (and TRL's assistant_only_loss)
    mask on an export: the template's {% generation %} blocks, the same ids."""
    from transformers import PreTrainedTokenizerFast

    from londinium.infer.chat_template import tokenize_chat
    from londinium.tokenizer.codec import load_tokenizer

    tok = PreTrainedTokenizerFast(tokenizer_file=str(tiny_workspace.tokenizer_file))
    tok.chat_template = CHAT_TEMPLATE
    ours_tok = load_tokenizer(tiny_workspace)
    answered = [*MESSAGES, {"role": "assistant", "content": "Thy ſon, my liege."}]
    for messages in (answered, answered[1:3]):
        theirs = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        ours = tokenize_chat(ours_tok, messages, add_generation_prompt=False)
        assert ours.ids == list(theirs["input_ids"])
        assert ours.assistant_mask == list(theirs["assistant_masks"])
        answer = [i for i, m in zip(ours.ids, ours.assistant_mask) if m]
        assert tok.decode(answer) == "".join(m["content"] + "<|end|>" for m in messages if m["role"] == "assistant")


def test_a_typed_role_token_stays_text_and_the_markers_render_nothing(tiny_workspace):
    from londinium.infer.chat_template import INFERENCE_TEMPLATE, tokenize_chat
    from londinium.tokenizer.codec import load_tokenizer

    tokenizer = load_tokenizer(tiny_workspace)
    messages = [{"role": "user", "content": "say <|end|> now"}, {"role": "assistant", "content": "<|end|>"}]
    chat = tokenize_chat(tokenizer, messages, add_generation_prompt=False)
    end = tokenizer.token_to_id("<|end|>")
    assert chat.ids.count(end) == 2  # the two turns' ends, not the typed ones
    assert render_chat(messages, False, template=INFERENCE_TEMPLATE) == chat.text == render_chat(messages, False)
    assert "{% generation %}" in CHAT_TEMPLATE and "{% generation %}" not in INFERENCE_TEMPLATE


TOOLS = [{"type": "function", "function": {"name": "search_corpus", "description": "Search <the> corpus & say",
                                           "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]
TOOL_TURNS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Who is Hamlet?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "search_corpus", "arguments": '{"query":"Hamlet"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "search_corpus", "arguments": {"query": "Dane"}}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "The Prince of Denmark."},
    {"role": "tool", "tool_call_id": "call_2", "content": "Nothing."},
    {"role": "assistant", "content": "A prince [1].", "tool_calls": [
        {"id": "call_3", "type": "function", "function": {"name": "search_corpus", "arguments": '{"query":"prince"}'}}]},
]


def test_tool_turns_render_and_mask_as_transformers_does(tiny_workspace):
    """Tools, an assistant's calls (arguments as OpenAI's JSON text or as an object) and the tools'
    results: the same text, ids and assistant mask as transformers gives on an export."""
    from transformers import PreTrainedTokenizerFast

    from londinium.infer.chat_template import tokenize_chat
    from londinium.tokenizer.codec import load_tokenizer

    tok = PreTrainedTokenizerFast(tokenizer_file=str(tiny_workspace.tokenizer_file))
    tok.chat_template = CHAT_TEMPLATE
    for tools in (TOOLS, None):
        theirs = tok.apply_chat_template(TOOL_TURNS, tools=tools, tokenize=True, return_dict=True,
                                         return_assistant_tokens_mask=True)
        ours = tokenize_chat(load_tokenizer(tiny_workspace), TOOL_TURNS, add_generation_prompt=False, tools=tools)
        assert ours.text == tok.apply_chat_template(TOOL_TURNS, tools=tools, tokenize=False)
        assert ours.ids == list(theirs["input_ids"]) and ours.assistant_mask == list(theirs["assistant_masks"])
    text = render_chat(TOOL_TURNS, False, tools=TOOLS)
    assert text.startswith("<|system|>\nBe brief.\n\n") and text.count("<|system|>") == 1
    assert '<|assistant|>\n<tool_call>\n{"name":"search_corpus","arguments":{"query":"Hamlet"}}\n</tool_call>\n' in text
    assert '<|user|>\n<tool_response>\nThe Prince of Denmark.\n</tool_response><|end|>' in text
    assert 'A prince [1].\n<tool_call>\n{"name":"search_corpus","arguments":{"query":"prince"}}\n</tool_call><|end|>' in text


def test_a_call_or_result_that_types_a_role_token_stays_text(tiny_workspace):
    from londinium.infer.chat_template import tokenize_chat
    from londinium.tokenizer.codec import load_tokenizer

    tokenizer = load_tokenizer(tiny_workspace)
    turns = [{"role": "user", "content": "x"},
             {"role": "assistant", "content": None, "tool_calls": [
                 {"function": {"name": "f", "arguments": '{"q":"<|end|><|system|>"}'}}]},
             {"role": "tool", "tool_call_id": "c", "content": "<|end|>"}]
    chat = tokenize_chat(tokenizer, turns, add_generation_prompt=False)
    assert chat.ids.count(tokenizer.token_to_id("<|end|>")) == 3 and tokenizer.token_to_id("<|system|>") not in chat.ids
