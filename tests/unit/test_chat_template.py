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
