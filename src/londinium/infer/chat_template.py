"""The chat template: how a list of messages becomes the text the model continues.

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
A base model trained only on the corpus has never seen these tokens in use: it continues the text.
"""

from __future__ import annotations

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
    "{{ '<|' ~ message['role'] ~ '|>\\n' ~ message['content'] ~ '<|end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


class ChatTemplateError(LondiniumError):
    """The messages cannot be rendered: an unknown role, or content that is not text."""


def _raise(message: str) -> None:
    raise ChatTemplateError(message)


@lru_cache(maxsize=4)
def _compiled(template: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return env.from_string(template)


def render_chat(messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
                template: str = CHAT_TEMPLATE) -> str:
    """The prompt text for `messages` (`[{"role": ..., "content": ...}, ...]`)."""
    if not messages:
        raise ChatTemplateError("messages is empty: give at least one message")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("content"), str):
            raise ChatTemplateError(f"messages[{i}]: expected an object with a string 'content'")
        if m.get("role") not in ROLES:
            raise ChatTemplateError(f"messages[{i}]: unknown role {m.get('role')!r}: use system, user or assistant")
    return _compiled(template).render(messages=list(messages), add_generation_prompt=add_generation_prompt)
