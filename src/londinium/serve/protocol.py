"""The OpenAI HTTP API's request and response shapes, field for field (with vLLM's sampling extras).

Requests refuse unknown fields, as OpenAI does ("Unrecognized request argument supplied"), so a
misspelt parameter is an error, not silently ignored. Fields OpenAI defines that this server cannot
honour (deprecated functions, a suffix, stored completions) are declared, so the error can
say why they fail (`prompts.py` refuses them); the few it accepts and ignores are listed in
docs/serving.md with the reason. Types are strict, as OpenAI checks them: `"2"` is not an integer,
`"yes"` not a boolean, `2.0` or `true` not a token id; an integer is still a number (pydantic's
strict float accepts it). Ranges are checked in one place, `SamplingParams.validate`; here only
types. Streamed chunks are built as plain dicts in `streaming.py` (a delta carries only the fields
it has, as OpenAI's do).
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Request):
    include_usage: Optional[bool] = None
    include_obfuscation: Optional[bool] = None  # accepted and ignored: chunks carry no padding field (docs)
    continuous_usage_stats: Optional[bool] = None  # vLLM's usage in every chunk: true is refused


class _Sampling(_Request):
    """Fields both endpoints share. `None` means "not given": the [generate] config decides."""

    model: str
    n: int = 1
    seed: Optional[int] = None
    stop: Union[str, list[str], None] = None
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    frequency_penalty: Optional[float] = None
    presence_penalty: Optional[float] = None
    logit_bias: Optional[dict[str, float]] = None
    user: Optional[str] = None
    # vLLM's extras (the same names as vLLM's SamplingParams)
    top_k: Optional[int] = None
    min_p: Optional[float] = None
    repetition_penalty: Optional[float] = None
    ignore_eos: Optional[bool] = None  # decode past the end-of-text token: fixed output lengths for benchmarks


class CompletionRequest(_Sampling):
    """POST /v1/completions."""

    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: Optional[int] = None
    best_of: Optional[int] = None
    echo: Optional[bool] = False
    logprobs: Optional[int] = None
    suffix: Optional[str] = None
    response_format: Optional[dict[str, Any]] = None  # an extension (as vLLM's): the chat endpoint's JSON modes


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ChatMessage(_Request):
    role: str
    content: Union[str, list[TextPart], None] = None
    name: Optional[str] = None  # accepted and ignored: the chat template has no place for a speaker's name
    # Declared so that a message carrying them is refused with the reason (empty values pass: the
    # openai SDK sends a reply's `refusal: null` back when a client appends the reply to the history).
    refusal: Optional[str] = None
    tool_calls: Optional[list[dict[str, Any]]] = None
    tool_call_id: Optional[str] = None
    function_call: Optional[dict[str, Any]] = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatCompletionRequest(_Sampling):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage]
    max_tokens: Optional[int] = None  # deprecated by OpenAI in favour of max_completion_tokens
    max_completion_tokens: Optional[int] = None
    logprobs: Optional[bool] = False
    top_logprobs: Optional[int] = None
    response_format: Optional[dict[str, Any]] = None
    tools: Optional[list[dict[str, Any]]] = None
    tool_choice: Optional[Union[str, dict[str, Any]]] = None
    parallel_tool_calls: Optional[bool] = None
    functions: Optional[list[dict[str, Any]]] = None
    function_call: Optional[Union[str, dict[str, Any]]] = None
    store: Optional[bool] = None  # true is refused: nothing is stored
    metadata: Optional[dict[str, str]] = None  # accepted and ignored: tags for stored completions
    service_tier: Optional[str] = None  # "auto" and "default" accepted (there is one tier); others refused


# ---- responses -----------------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[Optional[float]] = Field(default_factory=list)
    top_logprobs: list[Optional[dict[str, float]]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: Optional[CompletionLogprobs] = None
    finish_reason: Optional[str] = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Optional[Usage] = None
    system_fingerprint: Optional[str] = None


class TopLogprobEntry(BaseModel):
    token: str
    logprob: float
    bytes: Optional[list[int]] = None


class ChatTokenLogprob(TopLogprobEntry):
    top_logprobs: list[TopLogprobEntry] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    content: Optional[list[ChatTokenLogprob]] = None
    refusal: Optional[list[ChatTokenLogprob]] = None


class FunctionCall(BaseModel):
    name: str
    arguments: str  # a JSON object, as text (OpenAI's shape)


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: Optional[str] = None
    refusal: Optional[str] = None
    tool_calls: Optional[list[ToolCall]] = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: Optional[ChatLogprobs] = None
    finish_reason: Optional[str] = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Optional[Usage] = None
    system_fingerprint: Optional[str] = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "londinium"
    max_model_len: int  # vLLM's extra: the context length, so clients can size their prompts


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
