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
    ([{"role": "tool", "content": "x"}], "unknown role 'tool'"),
    ([{"role": "user", "content": None}], r"messages\[0\]"),
    (["hello"], r"messages\[0\]"),
])
def test_bad_messages_are_named_errors(messages, match):
    with pytest.raises(ChatTemplateError, match=match):
        render_chat(messages)
