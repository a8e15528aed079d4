"""`/v1/londinium/...`: what the playground needs beyond OpenAI's API, named as londinium's own.

    GET  /v1/londinium/model                 the served model: parameters, context, training, report card figures,
                                             the corpus profile's example prompt
    POST /v1/londinium/score                 a text scored token by token, as `londinium eval` scores a document
    POST /v1/londinium/chat/prompt           the prompt a chat request would give the model (the chat template applied)
    GET  /v1/londinium/search?q=...          the corpus index's hits (only when the workspace has an index)
    GET  /v1/londinium/document?id=...       one corpus document with its provenance
    GET  /v1/londinium/reports[/{name}[/{file}]]   the reports' list, a report's Markdown, one of its plots

They sit under /v1, so they are behind `serve.api_key`, the Host/Origin guard, the body limit and
the request log like OpenAI's routes, and answer errors in OpenAI's shape. OpenAI's API has no way to
score a prompt (`echo` with `logprobs` is refused: the engine does not score prompt tokens), so
scoring is a route of its own; it runs the model on a worker thread beside the engine loop (a forward
pass without a cache reads the weights and changes nothing), one text at a time.
"""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any, Callable, Optional

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict

from londinium.errors import LondiniumError
from londinium.serve.errors import APIError, bad_request
from londinium.serve.prompts import _text as unicode_text
from londinium.serve.prompts import chat_inputs
from londinium.serve.protocol import ChatCompletionRequest
from londinium.serve.reports import Provenance, find_report, missing_hint, report_list

# A scored text may span this many contexts (sliding windows): longer texts are `londinium eval --text`'s job.
MAX_SCORED_CONTEXTS = 8


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    text: str


class ScoredToken(BaseModel):
    text: str  # the piece of the text this token covers (joined, the pieces are the text)
    start: int  # character offset of the token in the text
    logprob: float  # natural log of its probability given everything before it


class ScoreResponse(BaseModel):
    model: str
    tokens: list[ScoredToken]
    token_count: int
    bytes: int
    loss: Optional[float]  # null for an empty text
    perplexity: Optional[float]
    bits_per_byte: Optional[float]


class ChatPrompt(BaseModel):
    prompt: str
    prompt_tokens: int
    template: str


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


class CorpusSearch:
    """The workspace's search index, loaded on first use; a missing or damaged one is remembered and
    answered with its one-line error (the server serves the model anyway)."""

    def __init__(self, provenance: Provenance, snippet_chars: int):
        self.provenance, self.snippet_chars = provenance, snippet_chars
        self._index: Any = None
        self._error: str | None = None
        self._lock = threading.Lock()

    def index(self) -> Any:
        from londinium.index.search import CorpusIndex

        with self._lock:
            if self._index is None and self._error is None:
                ws = self.provenance.workspace
                if ws is None or not ws.index_meta.is_file():
                    where = f"workspace {ws.root}" if ws is not None else "the served workspace"
                    self._error = f"this server has no corpus search index: run `londinium index build` in {where}, then restart the server"
                else:
                    try:
                        self._index = CorpusIndex.load(ws, self.snippet_chars)
                    except LondiniumError as e:
                        self._error = str(e)
            if self._index is None:
                raise APIError(404, self._error or "no search index", code="no_search_index")
            return self._index

    def status(self) -> dict[str, Any]:
        """{"available": bool, "error": why not, or null}."""
        try:
            self.index()
            return {"available": True, "error": None}
        except APIError as e:
            return {"available": False, "error": e.message}


def londinium_routes(state: Any, ready: Callable[[], None], check_model: Callable[[str], None],
                     provenance: Provenance, generate: Any, snippet_chars: int = 240) -> APIRouter:
    """The router; `state` is the app's ServerState, `ready` and `check_model` its request checks,
    `generate` the [generate] defaults (a chat prompt is prepared as /v1/chat/completions prepares it)."""
    from londinium.infer.chat_template import CHAT_TEMPLATE

    router = APIRouter(prefix="/v1/londinium")
    search = CorpusSearch(provenance, snippet_chars)
    scoring = threading.Lock()
    hint: list[str] = []  # the example prompt, read once: it may scan held-out text

    def prompt_hint() -> str:
        """The corpus profile's example prompt, as export's card uses it ("Thou art", or a neutral
        corpus's own held-out words), so the page's examples are in the corpus's language."""
        from londinium.profiles import builtin, profile_for

        if not hint:
            ws = provenance.workspace
            try:
                hint.append(profile_for(ws).prompt_hint(ws) if ws is not None else builtin("neutral").prompt_hint())
            except LondiniumError:  # a damaged data card: the neutral hint rather than no page
                hint.append(builtin("neutral").prompt_hint(ws))
        return hint[0]

    @router.get("/model")
    async def model() -> dict[str, Any]:
        """The served model: size, context, architecture, training, and the report card's headline figures."""
        from dataclasses import asdict

        from londinium.mcp.service import eval_summary

        ready()
        engine, p = state.engine, provenance
        config = getattr(engine.model, "config", None)
        ws = p.workspace if p.export is None else None
        return {"id": state.model_name, "parameters": engine.model.num_params(), "context": engine.context,
                "vocab_size": engine.vocab_size, "architecture": asdict(config) if config is not None else None,
                "loaded_from": engine.loaded_from, "run": p.run or None, "checkpoint": p.checkpoint or None,
                "step": p.step, "training_tokens": p.tokens_seen, "val_loss": p.val_loss,
                "export": str(p.export) if p.export else None,
                "eval": eval_summary(ws, p.run) if ws is not None and p.run else None,
                "prompt_hint": await asyncio.to_thread(prompt_hint),
                "search": await asyncio.to_thread(search.status)}

    @router.post("/score", response_model=ScoreResponse)
    async def score(req: ScoreRequest) -> ScoreResponse:
        """The text's tokens with their log-probabilities, and its loss, perplexity and bits per byte
        exactly as `londinium eval` computes them for a document."""
        from londinium.eval.text_score import score_text
        from londinium.tokenizer.codec import encode

        check_model(req.model)
        ready()
        text, engine = unicode_text(req.text, "text"), state.engine
        limit = MAX_SCORED_CONTEXTS * engine.context
        if len(text) > 8 * limit or len(encode(engine.tokenizer, text)) > limit:  # 8 chars a token is beyond any text
            raise bad_request(f"text: more than {limit:,} tokens ({MAX_SCORED_CONTEXTS} contexts of {engine.context}); "
                              "score a shorter passage here, or a whole file with `londinium eval --text FILE`", param="text")

        def run() -> Any:
            with scoring:
                return score_text(engine.model, engine.tokenizer, engine.token_bytes, text, engine.context)

        s = await asyncio.to_thread(run)
        tokens = [ScoredToken(text=piece, start=start, logprob=-nll) for piece, (start, _), nll in zip(s.pieces, s.spans, s.nll)]
        t = s.tally
        return ScoreResponse(model=state.model_name, tokens=tokens, token_count=t.tokens, bytes=t.bytes,
                             loss=_finite(t.loss), perplexity=_finite(t.perplexity), bits_per_byte=_finite(t.bits_per_byte))

    @router.post("/chat/prompt", response_model=ChatPrompt)
    async def chat_prompt(req: ChatCompletionRequest) -> ChatPrompt:
        """What the same body sent to /v1/chat/completions would give the model: the chat template
        applied to the messages, and its length in tokens (nothing is generated)."""
        check_model(req.model)
        ready()
        prepared = chat_inputs(req, state.engine, generate)
        return ChatPrompt(prompt=prepared.texts[0], prompt_tokens=len(prepared.ids[0]), template=CHAT_TEMPLATE)

    @router.get("/search")
    async def search_corpus(q: str = Query(min_length=1, max_length=2000), k: int = Query(10, ge=1, le=100),
                            source: Optional[str] = None, split: Optional[str] = None,
                            period_from: Optional[int] = None, period_to: Optional[int] = None) -> dict[str, Any]:
        """The corpus index's best hits for `q`, with provenance, snippet and matched words' offsets."""
        index = search.index()
        if not q.strip():
            raise bad_request("q is empty: give some words to search for", param="q")
        try:
            hits = await asyncio.to_thread(index.search, q, k, source or None, split or None, period_from, period_to)
        except LondiniumError as e:  # an unknown source or split, an inverted period range
            raise bad_request(str(e)) from None
        return {"query": q, "hits": [h.to_dict() for h in hits]}

    @router.get("/document")
    async def document(id: str = Query(min_length=1, max_length=10_000)) -> dict[str, Any]:
        """A corpus document (as a search hit names it) with its provenance."""
        index = search.index()
        try:
            doc = index.get(id)
        except LondiniumError as e:
            raise APIError(404, str(e), param="id", code="document_not_found") from None
        return {**doc.provenance(), "text": doc.text}

    @router.get("/reports")
    async def reports() -> dict[str, Any]:
        """Every report with whether this server has it: model card, report card, training curve, data card, tokenizer report."""
        return {"data": report_list(provenance)}

    def report_or_404(name: str) -> Any:
        report = find_report(provenance, name)
        if report is None:
            known = [r["name"] for r in report_list(provenance)]
            why = f"this server has no {name} ({missing_hint(provenance, name)})" if name in known else \
                f"no report named {name!r}; the reports are: {', '.join(known)}"
            raise APIError(404, why, param="name", code="report_not_found")
        return report

    @router.get("/reports/{name}", response_class=PlainTextResponse)
    async def report(name: str) -> PlainTextResponse:
        """A report's Markdown; its plots are at /v1/londinium/reports/{name}/{file}."""
        return PlainTextResponse(report_or_404(name).text(), media_type="text/markdown; charset=utf-8")

    @router.get("/reports/{name}/{file}", response_class=FileResponse)
    async def report_image(name: str, file: str) -> FileResponse:
        """A plot the report links (a PNG beside it)."""
        path = report_or_404(name).image(file)
        if path is None:
            raise APIError(404, f"report {name} shows no image {file!r}", param="file", code="image_not_found")
        return FileResponse(path, media_type="image/png")

    return router
