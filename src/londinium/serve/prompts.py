"""From a request to what the engine takes: token ids per prompt and one SamplingParams each.

Defaults: a field the request leaves out takes the `[generate]` config's value
(`SamplingParams.from_config`), as vLLM takes a model's generation_config.json. One exception, as in
vLLM: an omitted `max_tokens` is capped so that prompt + completion fit the context, where an explicit
one that does not fit is a 400.

Context errors follow vLLM: a prompt that fills the context is refused with `param` naming the input
(`prompt` or `messages`), a prompt that fits but not with `max_tokens` more is refused with
`param: "max_tokens"`; both give the numbers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from londinium.infer.chat_template import END_OF_TURN, ChatTemplateError, tokenize_chat
from londinium.infer.constrain import Constraint, ConstraintError
from londinium.infer.sampling import SamplingError, SamplingParams
from londinium.serve.errors import APIError, bad_request
from londinium.serve.protocol import ChatCompletionRequest, CompletionRequest, _Sampling
from londinium.serve.tools import ToolPlan, tool_plan
from londinium.tokenizer.codec import decode, encode


@dataclass
class Prepared:
    """One request's prompts as token ids, their text (for echo and the request log), and params."""

    ids: list[list[int]]
    texts: list[str]
    params: list[SamplingParams]
    stream: bool
    include_usage: bool
    tools: ToolPlan | None = None  # a chat request's tools (`serve/tools.py`): how its replies are read


def _common_checks(req: _Sampling) -> tuple[bool, bool]:
    stream = bool(req.stream)
    if req.stream_options is not None and not stream:
        raise bad_request("stream_options is only allowed when stream is true", param="stream_options")
    if req.stream_options is not None and req.stream_options.continuous_usage_stats:
        raise bad_request("stream_options.continuous_usage_stats is not supported: usage comes in the last chunk "
                          "(stream_options.include_usage)", param="stream_options.continuous_usage_stats")
    include_usage = bool(stream and req.stream_options and req.stream_options.include_usage)
    return stream, include_usage


def _text(value: str, field: str) -> str:
    """`value`, refused if it is not Unicode text: JSON may carry a lone surrogate (`"\\ud800"`),
    which no tokenizer can encode (nor UTF-8, nor the request log)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise bad_request(f"{field}: character {e.start} is a lone UTF-16 surrogate ({value[e.start]!r}), not text; "
                          "send valid Unicode", param=field) from None
    return value


def _params(req: _Sampling, gen: Any, vocab_size: int, names: dict[str, str], **extra: Any) -> SamplingParams:
    """The request's SamplingParams over the config's defaults, range-checked. `names` maps an
    engine field name to the request field that set it, so an error names what the client sent."""
    overrides: dict[str, Any] = {k: getattr(req, k) for k in (
        "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "frequency_penalty", "presence_penalty", "seed", "ignore_eos")
        if getattr(req, k) is not None}
    if req.stop is not None:
        overrides["stop"] = [_text(s, "stop") for s in ([req.stop] if isinstance(req.stop, str) else req.stop)]
    if req.logit_bias:
        bias: dict[int, float] = {}
        for key, value in req.logit_bias.items():
            # ASCII digits only: int() also reads " 1", "+1", "1_0" and other scripts' digits ("١")
            if not re.fullmatch(r"-?[0-9]+", key):
                raise bad_request(f"logit_bias: key {key!r} is not a token id (an integer in a string)", param="logit_bias")
            bias[int(key)] = value
        overrides["logit_bias"] = bias
    overrides.update({k: v for k, v in extra.items() if v is not None})
    params = SamplingParams.from_config(gen, n=req.n, **overrides)
    try:
        return params.validate(vocab_size)
    except SamplingError as e:
        m = re.match(r"sampling parameter (\w+)", str(e))
        field = names.get(m.group(1), m.group(1)) if m else None
        message = str(e).replace(f"sampling parameter {m.group(1)}", f"{field}") if m else str(e)
        raise bad_request(message, param=field) from None


def _fit(ids: list[int], params: SamplingParams, requested: int | None, context: int, field: str,
         which: str = "") -> SamplingParams:
    """Check the prompt against the context; cap an omitted max_tokens to what fits."""
    p = len(ids)
    if p >= context:
        raise APIError(400, f"This model's maximum context length is {context} tokens. However, your {field}{which} has "
                            f"{p} tokens, which leaves no room for a completion. Please shorten the {field}.",
                       param=field, code="context_length_exceeded")
    if requested is None:
        return params.replace(max_tokens=min(params.max_tokens, context - p))
    if p + requested > context:
        raise APIError(400, f"This model's maximum context length is {context} tokens. However, you requested "
                            f"{p + requested} tokens ({p} in the {field}{which}, {requested} for the completion). "
                            f"Please reduce the length of the {field} or max_tokens.",
                       param="max_tokens", code="context_length_exceeded")
    return params


def _refuse_if_surely_too_long(texts: list[str], engine: Any, field: str, which: str = "") -> None:
    """Refuse, before tokenizing, text whose size alone proves it cannot fit the context: no token
    stands for more bytes than the vocabulary's longest, so it has at least bytes / longest tokens.
    Tokenizing is what would take the time (4 s for 3 MB, on the event loop every request shares)."""
    size = sum(len(t.encode("utf-8")) for t in texts)
    if size <= engine.context:  # it fits, whatever it becomes
        return
    at_least = -(-size // max(map(len, engine.token_bytes)))
    if at_least >= engine.context:
        raise APIError(400, f"This model's maximum context length is {engine.context} tokens. However, your {field}{which} "
                            f"has at least {at_least:,} tokens ({size:,} bytes), which leaves no room for a completion. "
                            f"Please shorten the {field}.", param=field, code="context_length_exceeded")


def completion_inputs(req: CompletionRequest, engine: Any, gen: Any) -> Prepared:
    """POST /v1/completions: the prompt in any of its four forms."""
    stream, include_usage = _common_checks(req)
    if req.suffix:
        raise bad_request("suffix (insertion) is not supported: the model only continues text", param="suffix")
    if req.echo and req.logprobs is not None:
        raise bad_request("echo together with logprobs is not supported: the engine does not score prompt tokens",
                          param="echo")
    if stream and req.best_of is not None and req.best_of > req.n:
        raise bad_request(f"best_of = {req.best_of} chooses among finished samples, so it cannot stream; "
                          "use best_of = n or stream = false", param="best_of")
    prompt = req.prompt
    if isinstance(prompt, str):
        raw: list[str | list[int]] = [prompt]
    elif prompt and all(isinstance(t, int) for t in prompt):
        raw = [list(prompt)]  # type: ignore[arg-type]
    else:
        raw = list(prompt)  # type: ignore[arg-type]
    if not raw:
        raise bad_request("prompt is empty: give a string, a list of strings, or token ids", param="prompt")
    constraint = response_constraint(req.response_format, engine)
    params = _params(req, gen, engine.vocab_size, {}, max_tokens=req.max_tokens, best_of=req.best_of, logprobs=req.logprobs,
                     constraint=constraint)
    params = _schema_ends_the_reply(params) if constraint else params
    ids_list, texts, plist = [], [], []
    for i, p in enumerate(raw):
        which = f" (prompt {i})" if len(raw) > 1 else ""
        if isinstance(p, str):
            _refuse_if_surely_too_long([_text(p, "prompt")], engine, "prompt", which)
            ids, text = encode(engine.tokenizer, p), p
        else:
            bad = [t for t in p if not 0 <= t < engine.vocab_size]
            if bad:
                raise bad_request(f"prompt{which}: token ids {bad[:5]} are not in the vocabulary (0 .. {engine.vocab_size - 1})",
                                  param="prompt")
            ids, text = list(p), decode(engine.tokenizer, p)
        ids = ids or _start(engine)
        plist.append(_fit(ids, params, req.max_tokens, engine.context, "prompt", which))
        ids_list.append(ids)
        texts.append(text)
    return Prepared(ids_list, texts, plist, stream, include_usage)


def response_constraint(response_format: dict[str, Any] | None, engine: Any) -> Constraint | None:
    """The Constraint OpenAI's `response_format` asks for (None for text), compiled once here so that
    a schema the grammar library refuses is a 400 naming the problem, before anything is queued."""
    if not response_format:
        return None
    kind = response_format.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        constraint = Constraint.json_object()
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise bad_request("response_format.json_schema must be an object with a 'schema' (a JSON Schema object), "
                              "'name' and optionally 'strict'", param="response_format.json_schema")
        # A schema-less json_schema (OpenAI allows it) means any JSON object. `strict` is always honoured.
        constraint = Constraint.json_schema(spec["schema"]) if spec.get("schema") else Constraint.json_object()
    else:
        raise bad_request(f"response_format type {kind!r} is unknown; use 'text', 'json_object' or 'json_schema'",
                          param="response_format.type")
    try:
        engine.grammars.check(constraint)
    except ConstraintError as e:
        raise bad_request(f"response_format: {e}", param="response_format") from None
    return constraint


def _schema_ends_the_reply(params: SamplingParams) -> SamplingParams:
    """Under `response_format`, the grammar decides where the reply ends and stop strings do not apply:
    one matched inside a JSON string would end the reply "stop" with half a value. (smolagents' CodeAgent
    sends its stop strings, "Observation:" and "</code>", with its structured-output schema.)"""
    return params.replace(stop=[]) if params.stop else params


def _start(engine: Any) -> list[int]:
    """An empty prompt starts from end-of-text, the separator the model saw between documents."""
    if engine.eos_id is None:
        raise bad_request("prompt is empty and the tokenizer has no end-of-text token to start from", param="prompt")
    return [engine.eos_id]


ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system message


def encode_chat(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> tuple[list[int], str]:
    """Token ids and text of the chat template applied to `messages` (`chat_template.tokenize_chat`:
    role markers are control tokens, the content stays plain text)."""
    chat = tokenize_chat(tokenizer, messages, tools=tools)
    return chat.ids, chat.text


def _refuse_unsupported(req: ChatCompletionRequest) -> None:
    """The chat fields this server cannot honour: a 400 naming each, never a request half-served
    (the table in docs/serving.md says which fields are refused and which are ignored, and why)."""
    if req.store:
        raise bad_request("store: this server does not store completions; leave it out or send false", param="store")
    if req.service_tier not in (None, "auto", "default"):
        raise bad_request(f"service_tier {req.service_tier!r} is not offered: this server has one tier ('default')",
                          param="service_tier")
    for i, m in enumerate(req.messages):
        for field in ("function_call", "refusal"):
            if getattr(m, field):
                raise bad_request(f"messages[{i}].{field}: function calls (deprecated) and refusals in the history are "
                                  "not supported by this model's chat template; send the text as content",
                                  param=f"messages[{i}].{field}")
        if m.tool_calls and m.role != "assistant":
            raise bad_request(f"messages[{i}].tool_calls: only an assistant message carries tool calls",
                              param=f"messages[{i}].tool_calls")
        if (m.role == "tool") != bool(m.tool_call_id):  # an empty id is none (the SDK may send one back)
            raise bad_request(f"messages[{i}].tool_call_id: a tool message needs the id of the call it answers, "
                              "and only a tool message has one", param=f"messages[{i}].tool_call_id")


def chat_inputs(req: ChatCompletionRequest, engine: Any, gen: Any) -> Prepared:
    """POST /v1/chat/completions: the messages through the chat template, `<|end|>` a stop token."""
    stream, include_usage = _common_checks(req)
    _refuse_unsupported(req)
    plan = tool_plan(req, engine)
    if req.top_logprobs is not None and not req.logprobs:
        raise bad_request("top_logprobs needs logprobs = true", param="top_logprobs")
    if not req.messages:
        raise bad_request("messages is empty: give at least one message", param="messages")
    messages = []
    for i, m in enumerate(req.messages):
        role = ROLE_ALIASES.get(m.role, m.role)
        if role not in ("system", "user", "assistant", "tool"):
            raise bad_request(f"messages[{i}].role: unknown role {m.role!r}; use system, developer, user, assistant "
                              "or tool", param=f"messages[{i}].role")
        if m.content is None and role != "assistant":  # only a reply may be empty (the SDK sends ones back so)
            raise bad_request(f"messages[{i}].content: a {m.role} message needs content, a string or a list of text "
                              "parts, not null", param=f"messages[{i}].content")
        message: dict[str, Any] = {"role": role, "content": _text(m.text(), f"messages[{i}].content")}
        if m.tool_calls:  # checked by the chat template (a 400 naming the call below)
            message["tool_calls"] = m.tool_calls
            message["content"] = message["content"] or None
        messages.append(message)
    tools = plan.tools if plan else None
    _refuse_if_surely_too_long([m["content"] or "" for m in messages] + ([json.dumps(tools)] if tools else []), engine, "messages")
    try:
        ids, text = encode_chat(engine.tokenizer, messages, tools)
    except ChatTemplateError as e:
        raise bad_request(str(e), param="messages") from None
    requested = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    limit_field = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    end = engine.tokenizer.token_to_id(END_OF_TURN)
    schema = None if plan and plan.constraint else response_constraint(req.response_format, engine)
    params = _params(req, gen, engine.vocab_size, {"max_tokens": limit_field, "logprobs": "top_logprobs"},
                     max_tokens=requested, logprobs=logprobs, constraint=plan.constraint if plan and plan.constraint else schema)
    params = _schema_ends_the_reply(params) if schema else params
    if end is not None:
        params = params.replace(stop_token_ids=[*params.stop_token_ids, end])
    params = _fit(ids, params, requested, engine.context, "messages")
    return Prepared([ids], [text], [params], stream, include_usage, plan)
