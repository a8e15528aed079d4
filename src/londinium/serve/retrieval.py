"""Retrieval on the server: `POST /v1/embeddings` in OpenAI's shape, and the `<model>+rag` chat alias.

    app = create_app(load, name, cfg.serve, cfg.generate, mounts=[retrieval_mount(ws, cfg)])

`/v1/embeddings` embeds text with `retrieve.embedder` (model id: the embedder's name, e.g. "corpus";
`encoding_format` float or base64, `dimensions` truncates and renormalises). It takes text only:
token ids are refused with a 400 saying so (LangChain's `OpenAIEmbeddings` sends tiktoken ids
unless `check_embedding_ctx_length=False`, and ids of another tokenizer mean nothing here).

The alias lets an unchanged OpenAI client ask for grounded answers: a chat request to model
`<model>+rag` has its last user message retrieved on; when the best passage does not support an
answer the reply is the refusal, without generating; otherwise the numbered passages go first as a
system message, the model answers, and the reply carries the citations in an extension field,
`citations` (id, title, source, licence, offsets, quote, valid), beside `choices`. Streaming is
refused for the alias (the citations need the whole answer). The index, vectors and embedder load
on the first request that needs them; until they can, those requests get 503 with the reason.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from typing import Any, Callable, Optional, Union

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

from londinium.config import Config
from londinium.errors import LondiniumError
from londinium.serve.bodies import replay_body
from londinium.serve.errors import APIError, bad_request
from londinium.workspace import Workspace

MAX_INPUTS = 2048  # OpenAI's limit on inputs per request
ALIAS_SUFFIX = "+rag"


class EmbeddingRequest(BaseModel):
    """POST /v1/embeddings, OpenAI's fields."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: str
    input: Union[str, list[str], list[int], list[list[int]]]
    encoding_format: Optional[str] = None
    dimensions: Optional[int] = None
    user: Optional[str] = None


class Retrieval:
    """The retriever and embedder, loaded once on first use (thread-safe); a load error is kept and reported."""

    def __init__(self, ws: Workspace, cfg: Config):
        self.ws, self.cfg = ws, cfg
        self._lock = threading.Lock()
        self._embedder: Any = None
        self._retriever: Any = None

    def embedder(self) -> Any:
        with self._lock:
            if self._embedder is None:
                from londinium.retrieve.embedders import open_embedder

                self._embedder = open_embedder(self.ws, self.cfg)
            return self._embedder

    def retriever(self) -> Any:
        with self._lock:
            if self._retriever is None:
                from londinium.retrieve.retriever import Retriever

                self._retriever = Retriever.load(self.ws, self.cfg)
            return self._retriever


async def _loaded(get: Callable[[], Any]) -> Any:
    try:
        return await asyncio.to_thread(get)
    except LondiniumError as e:
        raise APIError(503, f"retrieval is not available on this server: {e}", code="retrieval_unavailable") from None


def texts_of(req: EmbeddingRequest) -> list[str]:
    """The request's texts; token ids, empty strings and too many inputs are 400s naming `input`."""
    given = [req.input] if isinstance(req.input, str) else req.input
    if not given:
        raise bad_request("input is empty: give a string or a list of strings", param="input")
    if any(not isinstance(x, str) for x in given):
        raise bad_request("input: token ids are not accepted, this server embeds text (its embedder does not read another "
                          "tokenizer's ids); send strings (LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False))",
                          param="input")
    if len(given) > MAX_INPUTS:
        raise bad_request(f"input: {len(given)} texts, more than {MAX_INPUTS} in one request", param="input")
    for i, text in enumerate(given):
        if not text.strip():
            raise bad_request(f"input[{i}] is empty: every input must hold some text", param="input")
    return given


def embeddings_body(req: EmbeddingRequest, vectors: np.ndarray, model: str, texts: list[str]) -> dict[str, Any]:
    fmt = req.encoding_format or "float"
    if fmt not in ("float", "base64"):
        raise bad_request(f"encoding_format {fmt!r}: use 'float' or 'base64'", param="encoding_format")
    if req.dimensions is not None:
        if not 1 <= req.dimensions <= vectors.shape[1]:
            raise bad_request(f"dimensions = {req.dimensions}: this embedder gives 1 to {vectors.shape[1]}", param="dimensions")
        from londinium.retrieve.embedders import unit_rows

        vectors = unit_rows(vectors[:, :req.dimensions])
    data = []
    for i, v in enumerate(vectors.astype("<f4")):
        value: Any = base64.b64encode(v.tobytes()).decode() if fmt == "base64" else v.tolist()
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = sum(len(t.split()) for t in texts)  # words: the embedders here count no tokens of their own
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def retrieval_mount(ws: Workspace, cfg: Config) -> Callable[[FastAPI, Any], None]:
    """What `create_app(mounts=...)` calls: adds the embeddings route and the chat alias (innermost,
    so the Host, key and body-size checks have run before it)."""
    retrieval = Retrieval(ws, cfg)

    def mount(app: FastAPI, state: Any) -> None:
        @app.post("/v1/embeddings", response_model=None)
        async def embeddings(req: EmbeddingRequest) -> Any:
            embedder = await _loaded(retrieval.embedder)
            if req.model != embedder.name:
                raise APIError(404, f"The model `{req.model}` does not exist for embeddings. This server embeds with "
                                    f"`{embedder.name}` (retrieve.embedder).", param="model", code="model_not_found")
            texts = texts_of(req)
            vectors = await asyncio.to_thread(embedder.embed, texts)
            return embeddings_body(req, vectors, embedder.name, texts)

        app.add_middleware(RagChat, retrieval=retrieval, state=state)

    return mount


def _question(messages: Any) -> str:
    for m in reversed(messages if isinstance(messages, list) else []):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):
                c = " ".join(p.get("text", "") for p in c if isinstance(p, dict))
            if isinstance(c, str) and c.strip():
                return c
    return ""


class RagChat:
    """ASGI middleware: chat requests to `<model>+rag` are grounded (see the module docstring); others pass untouched."""

    def __init__(self, app: Any, retrieval: Retrieval, state: Any):
        self.app, self.retrieval, self.state = app, retrieval, state

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/v1/chat/completions":
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, receive, send)
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        alias = f"{self.state.model_name}{ALIAS_SUFFIX}"
        if not (isinstance(request, dict) and request.get("model") == alias):
            return await self.app(scope, replay_body(body, receive), send)
        try:
            reply = await self._grounded(scope, request, receive)
        except APIError as e:
            return await e.response()(scope, receive, send)
        await _send_json(send, 200, reply)

    async def _grounded(self, scope: dict, request: dict, receive: Callable) -> dict[str, Any]:
        from londinium.retrieve.answer import REFUSAL, cite, grounded_prompt, validate

        if request.get("stream"):
            raise bad_request(f"stream: not available for the {ALIAS_SUFFIX} alias (the citations need the whole answer); "
                              "send stream=false", param="stream")
        question = _question(request.get("messages"))
        if not question:
            raise bad_request("messages: the +rag alias needs a user message with text to retrieve on", param="messages")
        retriever = await _loaded(self.retrieval.retriever)
        try:
            passages = await asyncio.to_thread(retriever.retrieve, question)
        except LondiniumError as e:
            raise bad_request(f"messages: {e}", param="messages") from None
        s = retriever.settings
        if not passages or passages[0].support < s.min_support:
            return _completion(request["model"], REFUSAL, [], refused=True)
        others = [m for m in request.get("messages", []) if not (isinstance(m, dict) and m.get("role") == "system")]
        chosen = fit_passages(retriever, question, [p for p in passages if p.support >= s.min_support],
                              lambda ps: [grounded_prompt(question, ps)[0], *others], self._fits(request))
        if not chosen:
            raise bad_request("messages: no room for even one passage in the model's context beside these messages; "
                              "send a shorter conversation or a smaller max_tokens", param="messages")
        docs = retriever.index
        texts = [docs.documents[docs.by_id[p.id]].text for p in chosen]
        citations = validate(retriever, [cite(n, p, p.start, p.end, t) for n, (p, t) in enumerate(zip(chosen, texts), 1)])
        upstream = {**request, "model": self.state.model_name, "messages": [grounded_prompt(question, chosen)[0], *others]}
        status, reply = await _call(self.app, scope, json.dumps(upstream).encode())
        if status != 200:
            raise APIError(status, (reply.get("error") or {}).get("message", "the model failed on the grounded prompt"),
                           code=(reply.get("error") or {}).get("code"))
        reply["model"] = request["model"]
        reply["citations"] = [c.__dict__ for c in citations]
        reply["refused"] = False
        return reply


    def _fits(self, request: dict) -> Callable[[list[dict]], bool]:
        """Whether chat messages leave the request's completion room in the model's context."""
        from londinium.serve.prompts import encode_chat

        engine = self.state.engine
        asked = request.get("max_completion_tokens") or request.get("max_tokens")
        room = asked if isinstance(asked, int) and asked > 0 else 16

        def fits(messages: list[dict]) -> bool:
            try:
                return len(encode_chat(engine.tokenizer, messages)[0]) + room <= engine.context
            except LondiniumError:
                return False

        return fits


def fit_passages(retriever: Any, question: str, passages: list[Any], messages: Callable[[list[Any]], list[dict]],
                 fits: Callable[[list[dict]], bool]) -> list[Any]:
    """The most of `passages` (best first) whose grounded messages fit: later passages dropped first,
    then the best one narrowed to its sentence that holds most of the question, then cut word by word
    from its end. Offsets follow every cut, so a citation quotes exactly what the model was shown."""
    import dataclasses

    from londinium.retrieve.answer import best_piece

    chosen = list(passages)
    while len(chosen) > 1 and not fits(messages(chosen)):
        chosen.pop()
    if not chosen or fits(messages(chosen)):
        return chosen
    best = chosen[0]
    text = retriever.index.documents[retriever.index.by_id[best.id]].text
    start, end = best_piece(retriever, question, best)
    while end > start:
        narrowed = dataclasses.replace(best, start=start, end=end, text=text[start:end])
        if fits(messages([narrowed])):
            return [narrowed]
        cut = text.rfind(" ", start, end - 1)
        end = cut if cut > start else start
    return []


def _completion(model: str, text: str, citations: list[dict], refused: bool) -> dict[str, Any]:
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}, "citations": citations, "refused": refused}



async def _call(app: Any, scope: dict, body: bytes) -> tuple[int, dict]:
    """Run the inner app on `body` and collect its JSON reply."""
    status, parts = 500, []

    async def collect(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))

    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    await app({**scope, "headers": headers}, replay_body(body, _never), collect)
    try:
        return status, json.loads(b"".join(parts) or b"{}")
    except ValueError:
        return status, {}


async def _never() -> dict:
    await asyncio.Event().wait()  # the request is complete: wait (for ever) as a client that stays connected
    return {"type": "http.disconnect"}


async def _send_json(send: Callable, status: int, obj: dict) -> None:
    body = json.dumps(obj).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
