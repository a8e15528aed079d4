"""The chat template: how a list of messages becomes the text (and the token ids) the model reads.

One Jinja template over the role tokens the tokenizer reserves from the start (`<|system|>`,
`<|user|>`, `<|assistant|>`, `<|end|>`). The export writes it into `tokenizer_config.json`
(`chat_template`), so `transformers`' `apply_chat_template`, vLLM and the londinium server all
render the same text:

    <|system|>
    You speak as a player of 1600.<|end|>
    <|user|>
    Good morrow.<|end|>
    <|assistant|>

`render_chat` renders it here the way `transformers` does (a sandboxed Jinja environment with
`trim_blocks` and `lstrip_blocks`, and `raise_exception` for bad input), so the text is identical.
The model answers after `<|assistant|>` and ends its turn with `<|end|>`, a stop token for chat.
A base model trained only on the corpus has never seen these tokens in use: it continues the text;
supervised fine-tuning (`londinium sft`) teaches it the turns.

What the model is trained to write is marked in the template itself: each assistant turn's content
and its `<|end|>` sit inside `{% generation %}` ... `{% endgeneration %}`, the markers `transformers`
reads for `return_assistant_tokens_mask=True` (and TRL for `assistant_only_loss`). `tokenize_chat`
reads the same markers, so the tokens londinium's SFT trains on are the tokens `transformers`
masks on an export. Jinja engines without the tag (llama.cpp's) get `INFERENCE_TEMPLATE`: the same
template with the markers taken out, which renders the same text.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping, Sequence

from londinium.errors import LondiniumError

ROLES = ("system", "user", "assistant")
END_OF_TURN = "<|end|>"

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' ~ message['role'] ~ ': use system, user or assistant') }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\\n' }}{% generation %}{{ message['content'] ~ '<|end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "{{ '<|' ~ message['role'] ~ '|>\\n' ~ message['content'] ~ '<|end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
# For engines that only render (llama.cpp's GGUF metadata): no generation markers, the same text.
INFERENCE_TEMPLATE = CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")

# Private-use characters no rendered text holds: they bracket what tokenize_chat must find again.
_GEN_OPEN, _GEN_CLOSE, _CONTENT_END = "\ue002", "\ue003", "\ue001"
_TRACK = "_londinium_track_generation"  # a render variable only tokenize_chat sets


class ChatTemplateError(LondiniumError):
    """The messages cannot be rendered: an unknown role, or content that is not text."""


def _raise(message: str) -> None:
    raise ChatTemplateError(message)


def _generation_extension() -> type:
    """`{% generation %}...{% endgeneration %}` as transformers defines it: the body renders as is.
    When `tokenize_chat` asks (a render variable), the body comes back bracketed so it can be found."""
    from jinja2 import nodes, pass_context
    from jinja2.ext import Extension

    class Generation(Extension):
        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

        @pass_context
        def _render(self, context: Any, caller: Any) -> str:
            body = caller()
            return f"{_GEN_OPEN}{body}{_GEN_CLOSE}" if context.get(_TRACK) else body

    return Generation


@lru_cache(maxsize=4)
def _compiled(template: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[_generation_extension()])
    env.globals["raise_exception"] = _raise
    return env.from_string(template)


def _check(messages: Sequence[Mapping[str, Any]]) -> None:
    if not messages:
        raise ChatTemplateError("messages is empty: give at least one message")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("content"), str):
            raise ChatTemplateError(f"messages[{i}]: expected an object with a string 'content'")
        if m.get("role") not in ROLES:
            raise ChatTemplateError(f"messages[{i}]: unknown role {m.get('role')!r}: use system, user or assistant")


def render_chat(messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
                template: str = CHAT_TEMPLATE) -> str:
    """The prompt text for `messages` (`[{"role": ..., "content": ...}, ...]`)."""
    _check(messages)
    return _compiled(template).render(messages=list(messages), add_generation_prompt=add_generation_prompt)


@dataclass(frozen=True)
class ChatTokens:
    """A conversation as the model reads it: token ids, the rendered text, and per token 1 where it
    is what the assistant writes (its turns' content and their `<|end|>`), else 0."""

    ids: list[int]
    text: str
    assistant_mask: list[int]


def tokenize_chat(tokenizer: Any, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> ChatTokens:
    """The chat template applied to `messages`, as token ids with the assistant mask.

    The template's role markers become control tokens, the messages' content stays plain text: a
    user who types "<|end|>" must not end a turn. So each content is rendered as a unique marker and
    encoded on its own, without special tokens. The assistant mask is what the template's
    `{% generation %}` blocks hold, as `transformers` computes it."""
    from londinium.tokenizer.codec import encode

    _check(messages)
    marker = f"\ue000{uuid.uuid4().hex}"
    shown = [{"role": m["role"], "content": f"{marker}{i}{_CONTENT_END}"} for i, m in enumerate(messages)]
    rendered = _compiled(CHAT_TEMPLATE).render(messages=shown, add_generation_prompt=add_generation_prompt, **{_TRACK: True})
    ids: list[int] = []
    mask: list[int] = []
    for g, chunk in enumerate(re.split(f"[{_GEN_OPEN}{_GEN_CLOSE}]", rendered)):
        for k, part in enumerate(re.split(re.escape(marker) + f"(\\d+){_CONTENT_END}", chunk)):
            if k % 2:  # the index of a message, whose content goes in here as plain text
                piece = encode(tokenizer, messages[int(part)]["content"])
            else:
                piece = encode(tokenizer, part, allow_special=True) if part else []
            ids += piece
            mask += [g % 2] * len(piece)  # odd chunks lie inside a generation block
    return ChatTokens(ids, render_chat(messages, add_generation_prompt), mask)
