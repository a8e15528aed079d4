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

import json
import re
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping, Sequence

from londinium.errors import LondiniumError

ROLES = ("system", "user", "assistant", "tool")
END_OF_TURN = "<|end|>"
# Tool turns. The vocabulary reserves no token for them (it never changes after `tokenizer train`), so they
# are plain-text tags inside the existing turns, the Hermes/Qwen2.5 convention that vLLM's `hermes` tool
# parser reads: the tools' signatures in the system turn, each call the assistant makes as
# `<tool_call>\n{"name":...,"arguments":{...}}\n</tool_call>`, each result as a user turn holding
# `<tool_response>\n...\n</tool_response>`. The server's tool-call grammar writes exactly this text.
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>\n", "\n</tool_call>"
TOOLS_PREAMBLE = "You can call these functions; their signatures are JSON Schema:\n<tools>"
TOOLS_HOWTO = ("\n</tools>\nTo call one, write <tool_call>\n{\"name\":<name>,\"arguments\":<object>}\n</tool_call>; "
               "its result comes back in <tool_response>.")

CHAT_TEMPLATE = (
    "{% if tools %}"
    "{{ '<|system|>\\n' }}"
    "{% if messages and messages[0]['role'] == 'system' %}{{ messages[0]['content'] ~ '\\n\\n' }}{% endif %}"
    "{{ '" + TOOLS_PREAMBLE.replace("\n", "\\n") + "' }}"
    "{% for tool in tools %}{{ '\\n' ~ (tool | tojson) }}{% endfor %}"
    "{{ '" + TOOLS_HOWTO.replace("\n", "\\n").replace("\"", "\\\"") + "<|end|>\\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant', 'tool'] %}"
    "{{ raise_exception('unknown role ' ~ message['role'] ~ ': use system, user, assistant or tool') }}"
    "{% endif %}"
    "{% if message['role'] == 'system' and loop.first and tools %}"  # already in the tools turn above
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\\n' }}{% generation %}"
    "{% if message['content'] %}{{ message['content'] }}{% endif %}"
    "{% if message['tool_calls'] %}"
    "{% for call in message['tool_calls'] %}"
    "{% if message['content'] or not loop.first %}{{ '\\n' }}{% endif %}"
    "{% set arguments = call['function']['arguments'] %}"
    "{{ '<tool_call>\\n{\"name\":' ~ (call['function']['name'] | tojson) ~ ',\"arguments\":' }}"
    "{{ arguments if arguments is string else (arguments | tojson) }}"
    "{{ '}\\n</tool_call>' }}"
    "{% endfor %}"
    "{% endif %}"
    "{{ '<|end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% elif message['role'] == 'tool' %}"
    "{{ '<|user|>\\n<tool_response>\\n' ~ message['content'] ~ '\\n</tool_response><|end|>\\n' }}"
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
_GEN_SPLIT = re.compile(f"[{_GEN_OPEN}{_GEN_CLOSE}]")
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
    env.filters["tojson"] = _tojson
    return env.from_string(template)


def _tojson(value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    """transformers' `tojson` (Jinja's own escapes <, > and & for HTML, which would change the text)."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _check(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None) -> None:
    if not messages:
        raise ChatTemplateError("messages is empty: give at least one message")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ChatTemplateError(f"messages[{i}]: expected an object with a role and a string 'content'")
        if m.get("role") not in ROLES:
            raise ChatTemplateError(f"messages[{i}]: unknown role {m.get('role')!r}: use system, user, assistant or tool")
        calls = m.get("tool_calls")
        # An assistant turn that only calls tools has no content (OpenAI sends null).
        if not isinstance(m.get("content"), str) and not (m["role"] == "assistant" and calls and m.get("content") is None):
            raise ChatTemplateError(f"messages[{i}]: expected an object with a string 'content'")
        if calls is not None and (m["role"] != "assistant" or not isinstance(calls, list)):
            raise ChatTemplateError(f"messages[{i}].tool_calls: only an assistant message has tool_calls, a list")
        for k, call in enumerate(calls or []):
            f = call.get("function") if isinstance(call, Mapping) else None
            if not isinstance(f, Mapping) or not isinstance(f.get("name"), str) or \
                    not isinstance(f.get("arguments"), (str, Mapping)):
                raise ChatTemplateError(f"messages[{i}].tool_calls[{k}]: expected {{'function': {{'name': str, "
                                        "'arguments': a JSON string or an object}}}")
    if tools is not None and (not isinstance(tools, Sequence) or not all(isinstance(t, Mapping) for t in tools)):
        raise ChatTemplateError("tools: expected a list of objects (OpenAI's function tools)")


def render_chat(messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
                template: str = CHAT_TEMPLATE, tools: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The prompt text for `messages` (`[{"role": ..., "content": ...}, ...]`), with the `tools`
    (OpenAI's `[{"type": "function", "function": {...}}]`) described in the system turn when given."""
    _check(messages, tools)
    return _compiled(template).render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                      tools=list(tools) if tools else None)


@dataclass(frozen=True)
class ChatTokens:
    """A conversation as the model reads it: token ids, the rendered text, and per token 1 where it
    is what the assistant writes (its turns' content and their `<|end|>`), else 0."""

    ids: list[int]
    text: str
    assistant_mask: list[int]


def tokenize_chat(tokenizer: Any, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
                  tools: Sequence[Mapping[str, Any]] | None = None) -> ChatTokens:
    """The chat template applied to `messages` (and `tools`), as token ids with the assistant mask.

    The template's role markers become control tokens, what a message carries stays plain text: a
    user (or a tool's result, or a call's arguments) that holds "<|end|>" must not end a turn. So each
    content and each call's arguments is rendered as a unique marker and encoded on its own, without
    special tokens. The assistant mask is what the template's `{% generation %}` blocks hold, as
    `transformers` computes it. The tools' signatures are rendered as transformers renders them."""
    from londinium.tokenizer.codec import encode

    _check(messages, tools)
    marker = f"\ue000{uuid.uuid4().hex}"
    plain: list[str] = []

    def mark(text: Any) -> Any:
        if not isinstance(text, str) or not text:  # kept as is: the template tests it for emptiness
            return text
        plain.append(text)
        return f"{marker}{len(plain) - 1}{_CONTENT_END}"

    shown = []
    for m in messages:
        one = {"role": m["role"], "content": mark(m["content"])}
        if m.get("tool_calls"):
            one["tool_calls"] = [{"function": {"name": c["function"]["name"], "arguments": mark(c["function"]["arguments"])}}
                                 for c in m["tool_calls"]]
        shown.append(one)
    rendered = _compiled(CHAT_TEMPLATE).render(messages=shown, add_generation_prompt=add_generation_prompt,
                                               tools=list(tools) if tools else None, **{_TRACK: True})
    ids: list[int] = []
    mask: list[int] = []
    for g, chunk in enumerate(_GEN_SPLIT.split(rendered)):
        # str.split on the marker, not a pattern made of it: the marker is new for every call, so a
        # pattern would be compiled for every conversation (90 of 246 s tokenizing 84k conversations).
        head, *marked = chunk.split(marker)
        pieces = [encode(tokenizer, head, allow_special=True) if head else []]
        for m in marked:
            index, _, rest = m.partition(_CONTENT_END)
            pieces.append(encode(tokenizer, plain[int(index)]))  # a plain text: no control tokens
            pieces.append(encode(tokenizer, rest, allow_special=True) if rest else [])
        for piece in pieces:
            ids += piece
            mask += [g % 2] * len(piece)  # odd chunks lie inside a generation block
    return ChatTokens(ids, render_chat(messages, add_generation_prompt, tools=tools), mask)
