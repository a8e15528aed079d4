"""The FastAPI app: OpenAI's endpoints over one model and its continuous-batching engine loop.

    app = create_app(load=lambda: engine, model_name="main", serve=cfg.serve, generate=cfg.generate)

`load` runs on a background thread when the app starts, so the port answers at once: until the
model is ready, and again while the server drains on SIGTERM, requests get 503 (and /health says
which). Routes: POST /v1/completions, POST /v1/chat/completions, GET /v1/models[/{id}], GET /health,
POST /v1/embeddings (with `mounts=[retrieval_mount(...)]`),
GET /metrics, GET /openapi.json, /docs, /redoc, and the playground (`/` and /v1/londinium/...: see
`playground.py`). With `serve.api_key` set, every route but /health and the playground's static files
needs `Authorization: Bearer KEY` (the schema and docs pages too, unless `serve.open_docs`). Every route
answers only to a Host naming this server and to its own or an allowed browser Origin (`hosts.py`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Callable, Sequence

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import JSONResponse, Response

from londinium.config import GenerateConfig, IndexConfig, ServeConfig
from londinium.errors import LondiniumError
from londinium.serve import errors
from londinium.serve.bodies import BodyLimit
from londinium.serve.convert import chat_logprobs, completion_logprobs
from londinium.serve.errors import APIError, bad_request
from londinium.serve.hosts import guard
from londinium.serve.metrics import CONTENT_TYPE, Metrics, RequestLog
from londinium.serve.prompts import Prepared, chat_inputs, completion_inputs
from londinium.serve.playground import mount_playground
from londinium.serve.protocol import (AssistantMessage, ChatChoice, ChatCompletionRequest, ChatCompletionResponse,
                                      CompletionChoice, CompletionRequest, CompletionResponse, ModelCard, ModelList,
                                      Usage)
from londinium.serve.reports import Provenance
from londinium.serve.sse import EventStream
from londinium.serve.streaming import Call, events
from londinium.serve.tools import parse_calls

log = logging.getLogger("londinium.serve")


class ServerState:
    """The model being served and where the server is in its life: loading, ready, draining."""

    def __init__(self, load: Callable[[], Any], model_name: str, serve: ServeConfig,
                 on_load_error: Callable[[BaseException], None] | None = None):
        self.load, self.model_name, self.cfg = load, model_name, serve
        self.on_load_error = on_load_error
        self.engine: Any = None
        self.loop: Any = None
        self.pool: ThreadPoolExecutor | None = None  # threads that wait for non-streamed results
        self.load_error: BaseException | None = None
        self.draining = False
        self.created = int(time.time())
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.loop is not None and not self.draining

    def start(self) -> None:
        """Load the model and start the engine loop (on a background thread)."""
        from londinium.infer.scheduler import EngineLoop, running_for_budget

        try:
            engine = self.load()
            if self.cfg.memory_budget_mb:
                self.cfg.max_running = running_for_budget(engine, self.cfg.memory_budget_mb, self.cfg.max_step_tokens)
                log.info("londinium serve: max_running = %d from serve.memory_budget_mb = %g", self.cfg.max_running,
                         self.cfg.memory_budget_mb)
            # Sized now, since a memory budget sizes max_running only once the model is known.
            self.pool = ThreadPoolExecutor(max_workers=self.cfg.max_running + self.cfg.max_waiting + 4,
                                           thread_name_prefix="londinium-wait")
            loop = EngineLoop(engine, max_running=self.cfg.max_running, max_step_tokens=self.cfg.max_step_tokens,
                              max_waiting=self.cfg.max_waiting, stream_interval=self.cfg.stream_interval)
            loop.start()
        except BaseException as e:  # noqa: BLE001 - reported to the server, which exits with it
            self.load_error = e
            if not isinstance(e, LondiniumError):
                log.exception("loading the model failed")
            if self.on_load_error:
                self.on_load_error(e)
            return
        self.engine, self.loop = engine, loop
        log.info("londinium serve: %s ready as model %r", getattr(engine, "loaded_from", "model"), self.model_name)

    def drain(self, timeout_s: float) -> None:
        """Stop admitting; let running requests finish for up to timeout_s, then cancel the rest."""
        self.draining = True
        with self._stop_lock:
            if self._stopped.is_set():
                return
            if self.loop is not None:
                self.loop.stop(timeout_s=timeout_s)
            self._stopped.set()

    def stats(self) -> dict:
        return self.loop.stats() if self.loop is not None else {}


class RequireKey:
    """ASGI middleware: with a key set, 401 for any request to a path outside `open_paths` that does
    not send `Authorization: Bearer KEY`. A middleware, not a route dependency, so it runs before the
    body is read or validated: without the key, a request learns nothing about what the API accepts.
    The key is compared in constant time (`hmac.compare_digest`)."""

    def __init__(self, app: Any, key: str, open_paths: frozenset[str]):
        self.app, self.key, self.open_paths = app, key.encode(), open_paths

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not self.key or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        scheme, _, token = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
            error = APIError(401, "Incorrect or missing API key: send the header 'Authorization: Bearer <key>'",
                             code="invalid_api_key")
            return await error.response()(scope, receive, send)
        await self.app(scope, receive, send)


class Observe:
    """ASGI middleware: every /v1 request is counted in the metrics and written to the request log,
    whatever answered it (a route, a validation error, the body limit, a 404)."""

    def __init__(self, app: Any, metrics: Metrics, request_log: RequestLog):
        self.app, self.metrics, self.log = app, metrics, request_log

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        record: dict[str, Any] = {"id": None, "endpoint": scope["path"], "status": None}
        scope.setdefault("state", {})["record"] = record
        arrived = time.perf_counter()
        sent: dict[str, int] = {}

        async def watched(message: dict) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            record["status"] = record["status"] or sent.get("status", 500)
            record["e2e_s"] = round(time.perf_counter() - arrived, 6)
            _per_token(record)
            if scope["path"] not in ("/v1/completions", "/v1/chat/completions"):
                record["endpoint"] = "other"
            self.metrics.observe(record)
            self.log.write(record)


def _per_token(record: dict[str, Any]) -> None:
    """Time per output token: the decode time after the first token, over the tokens after it."""
    ttft, tokens, choices = record.get("ttft_s"), record.get("completion_tokens") or 0, len(record.get("finish_reasons") or [1])
    per_choice = tokens / max(1, choices)
    if ttft is not None and per_choice > 1:
        record["tpot_s"] = round(max(0.0, record["e2e_s"] - ttft) / (per_choice - 1), 6)
    if ttft is not None:
        record["ttft_s"] = round(ttft, 6)


def create_app(load: Callable[[], Any], model_name: str, serve: ServeConfig | None = None,
               generate: GenerateConfig | None = None, request_log: RequestLog | None = None,
               on_load_error: Callable[[BaseException], None] | None = None, provenance: Provenance | None = None,
               index: IndexConfig | None = None,
               mounts: Sequence[Callable[[FastAPI, ServerState], None]] = ()) -> FastAPI:
    """The server for the engine `load()` returns (an `londinium.infer.engine.Engine`). `provenance`
    says where the model comes from (its workspace's reports and search index, for the playground).
    Each of `mounts` adds routes or middleware of its own (`serve/retrieval.py`: /v1/embeddings, the
    +rag alias); its middleware runs inside the checks below (Host, key, body limit)."""
    cfg = serve or ServeConfig()
    gen = generate or GenerateConfig()
    state = ServerState(load, model_name, cfg, on_load_error)
    request_log = request_log or RequestLog(cfg.request_log or None, cfg.log_prompts)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=state.start, name="londinium-load", daemon=True).start()
        yield
        await asyncio.to_thread(state.drain, cfg.shutdown_timeout_s)
        if state.pool is not None:
            state.pool.shutdown(wait=False, cancel_futures=True)
        request_log.close()

    app = FastAPI(title="londinium", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state
    metrics = Metrics(state.stats)
    app.state.metrics = metrics
    errors.install(app)

    def ready() -> None:
        if state.draining:
            raise APIError(503, "the server is shutting down; retry on another instance", code="shutting_down",
                           headers={"Retry-After": "1"})
        if state.loop is None:
            if state.load_error is not None:
                raise APIError(503, "the model failed to load (see the server log)", code="model_unavailable")
            raise APIError(503, "the model is still loading; retry in a moment", code="model_loading",
                           headers={"Retry-After": "1"})

    def check_model(name: str) -> None:
        if name != state.model_name:
            raise APIError(404, f"The model `{name}` does not exist. This server serves `{state.model_name}` "
                                "(see GET /v1/models).", param="model", code="model_not_found")

    def submit(call_id: str, prepared: Prepared) -> list[Any]:
        """Queue every prompt of a request; all or nothing."""
        from londinium.infer.scheduler import EngineStopped, QueueFull

        handles: list[Any] = []
        try:
            for i, (ids, params) in enumerate(zip(prepared.ids, prepared.params)):
                rid = call_id if len(prepared.ids) == 1 else f"{call_id}-{i}"
                handles.append(state.loop.submit(ids, params, request_id=rid, stream=prepared.stream))
        except BaseException as e:
            for h in handles:
                h.cancel()
            if isinstance(e, QueueFull):
                wait = max(1, math.ceil(getattr(e, "retry_after_s", 1.0) or 1.0))
                raise APIError(429, f"the server is at capacity ({cfg.max_waiting} requests waiting); retry after {wait} s",
                               code="rate_limit_exceeded", headers={"Retry-After": str(wait)}) from None
            if isinstance(e, EngineStopped):
                raise APIError(503, "the server is shutting down; retry on another instance", code="shutting_down") from None
            if isinstance(e, LondiniumError):  # SamplingError, PromptError: the engine's own checks
                raise bad_request(str(e)) from None
            raise
        return handles

    def engine_error(e: BaseException) -> APIError:
        if isinstance(e, LondiniumError):
            log.error("request failed in the engine: %s", e)
            return APIError(500, f"the engine failed on this request: {e}", code="engine_error")
        log.error("request failed in the engine", exc_info=e)
        return APIError(500, "internal server error (logged on the server)", code="internal_error")

    async def results(call: Call, request: Request) -> list[Any]:
        """Every prompt's Completion, cancelling the request if the client goes away meanwhile."""
        loop = asyncio.get_running_loop()
        waits = [loop.run_in_executor(state.pool, h.result) for h in call.handles]

        async def watch() -> None:
            while True:
                await asyncio.sleep(0.25)
                if await request.is_disconnected():
                    call.record["status"], call.record["error"] = 499, "client disconnected"
                    call.cancel()
                    return

        watcher = asyncio.create_task(watch())
        try:
            done = await asyncio.gather(*waits)
        except Exception as e:  # noqa: BLE001
            raise engine_error(e) from None
        finally:
            watcher.cancel()
        if any(c.finish_reason == "cancelled" for comp in done for c in comp.choices):
            raise APIError(503, "the server is shutting down and cancelled this request; retry it", code="shutting_down")
        first = [getattr(c.timing, "ttft_s", None) for c in done]
        if all(t is not None for t in first):
            call.record["ttft_s"] = min(first)
        tokens = sum(c.timing.completion_tokens for c in done)
        call.record.update(prompt_tokens=call.prompt_tokens, completion_tokens=tokens,
                           finish_reasons=[ch.finish_reason for c in done for ch in c.choices])
        return done

    def begin(request: Request, prefix: str, kind: str, prepared: Prepared, echo: bool = False) -> Call:
        p = prepared.params[0]
        if len(prepared.ids) > cfg.max_waiting:  # a 429 would invite a retry that can never succeed
            raise bad_request(f"prompt: {len(prepared.ids)} prompts in one request, more than this server queues "
                              f"(serve.max_waiting = {cfg.max_waiting}); send them in smaller requests", param="prompt")
        if p.samples > cfg.max_running:
            field = "best_of" if p.best_of is not None and p.best_of > p.n else "n"
            raise bad_request(f"{field} = {p.samples}: more samples than this server decodes at once "
                              f"(serve.max_running = {cfg.max_running})", param=field)
        call_id = f"{prefix}-{uuid.uuid4().hex}"
        record = request.scope.get("state", {}).get("record", {})
        record.update(id=call_id, model=state.model_name, n=prepared.params[0].n, stream=prepared.stream)
        record["prompt"] = prepared.texts if len(prepared.texts) > 1 else prepared.texts[0]
        handles = submit(call_id, prepared)
        return Call(call_id, kind, state.model_name, prepared, handles, state.engine.token_bytes, record, echo=echo)

    def stream(call: Call) -> EventStream:
        return EventStream(events(call, engine_error))

    def usage(call: Call) -> Usage:
        p, c = call.prompt_tokens, call.record["completion_tokens"]
        return Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)

    v1 = APIRouter(prefix="/v1")

    @v1.post("/completions", response_model=None)
    async def completions(req: CompletionRequest, request: Request) -> Any:
        check_model(req.model)
        ready()
        prepared = completion_inputs(req, state.engine, gen)
        call = begin(request, "cmpl", "completion", prepared, echo=bool(req.echo))
        if prepared.stream:
            return stream(call)
        done = await results(call, request)
        choices = []
        for p, comp in enumerate(done):
            prefix = prepared.texts[p] if req.echo else ""
            for c in comp.choices:
                lp = completion_logprobs(c.logprobs, len(prefix)) if c.logprobs is not None else None
                choices.append(CompletionChoice(index=p * call.n + c.index, text=prefix + c.text, logprobs=lp,
                                                finish_reason=c.finish_reason))
        return CompletionResponse(id=call.id, created=call.created, model=call.model, choices=choices, usage=usage(call)).model_dump()

    @v1.post("/chat/completions", response_model=None)
    async def chat_completions(req: ChatCompletionRequest, request: Request) -> Any:
        check_model(req.model)
        ready()
        prepared = chat_inputs(req, state.engine, gen)
        call = begin(request, "chatcmpl", "chat", prepared)
        if prepared.stream:
            return stream(call)
        [comp] = await results(call, request)
        choices = []
        for c in comp.choices:
            message, finish = AssistantMessage(content=c.text), c.finish_reason
            calls = parse_calls(c.text) if prepared.tools and prepared.tools.calls_tools else None
            if calls:
                message, finish = AssistantMessage(content=None, tool_calls=calls), "tool_calls"
            choices.append(ChatChoice(index=c.index, message=message, finish_reason=finish,
                                      logprobs=chat_logprobs(c.logprobs, state.engine.token_bytes) if c.logprobs is not None else None))
        return ChatCompletionResponse(id=call.id, created=call.created, model=call.model, choices=choices, usage=usage(call)).model_dump()

    def card() -> ModelCard:
        context = state.engine.context if state.engine is not None else 0
        return ModelCard(id=state.model_name, created=state.created, max_model_len=context)

    @v1.get("/models")
    async def models() -> Any:
        ready()
        return ModelList(data=[card()]).model_dump()

    @v1.get("/models/{name:path}")
    async def model(name: str) -> Any:
        check_model(name)
        ready()
        return card().model_dump()

    app.include_router(v1)
    playground = mount_playground(app, state, ready, check_model, provenance or Provenance(), gen,
                                  (index or IndexConfig()).snippet_chars) if cfg.playground else frozenset()

    @app.get("/health")
    async def health() -> JSONResponse:
        status = "draining" if state.draining else "ok" if state.loop is not None else \
            "failed" if state.load_error is not None else "loading"
        return JSONResponse({"status": status, "model": state.model_name}, status_code=200 if status == "ok" else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    # The API's schema and its two viewers: behind the key like every route but /health, unless
    # serve.open_docs opens them (a schema tells a scanner what to try).
    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="londinium API")

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> Response:
        return get_redoc_html(openapi_url="/openapi.json", title="londinium API")

    for mount in mounts:
        mount(app, state)
    # The last added runs first: Observe sees every request, including those refused for their Host,
    # the key or BodyLimit; the Host/Origin check comes before the key (a browser's CORS preflight
    # carries none), and the key before the body is read, so without it nothing is parsed.
    app.add_middleware(BodyLimit, limit=int(cfg.max_body_mb * 1024 * 1024), timeout_s=cfg.read_timeout_s)
    opened = {"/health"} | playground | ({"/openapi.json", "/docs", "/redoc"} if cfg.open_docs else set())
    app.add_middleware(RequireKey, key=cfg.api_key or "", open_paths=frozenset(opened))
    guard(app, cfg.host, cfg.allowed_hosts, cfg.allowed_origins, refuse=lambda status, message, code:
          APIError(status, message, code=code).response())
    app.add_middleware(Observe, metrics=metrics, request_log=request_log)
    return app
