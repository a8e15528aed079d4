"""The gateway's HTTP surface: one OpenAI-compatible endpoint in front of many backends.

    app = create_app(Gateway(load_settings("gateway.toml")))

Routes: POST /v1/chat/completions and /v1/completions (through the chain), GET /v1/models (the
route aliases), GET /health (the gateway and each backend), GET /metrics. Request bodies are passed
on as they came (the backend checks its own fields); the gateway reads only what it acts on:
`model`, `stream`, `stream_options`, the prompt or messages, `max_tokens`. Every answer carries
`x-londinium-request-id`, and once a backend answered `x-londinium-backend`, `x-londinium-route`
(the decision and its reason) and `x-londinium-overhead-ms` (the gateway's own time: arrival to
the answer's headers, less the time waiting for the answering backend). The Host/Origin check and
the body limits are the server's own (`serve.hosts.guard`, `serve.bodies.BodyLimit`).
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from londinium.gateway.chain import Exchange, Reply
from londinium.gateway.runtime import Gateway
from londinium.serve import errors
from londinium.serve.bodies import BodyLimit
from londinium.serve.errors import APIError, bad_request
from londinium.serve.hosts import guard
from londinium.serve.metrics import CONTENT_TYPE
from londinium.serve.sse import DONE, sse

log = logging.getLogger("londinium.gateway")


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except UnicodeDecodeError:
        raise bad_request("the request body is not UTF-8") from None
    except (ValueError, RecursionError) as e:
        raise bad_request(f"the request body is not valid JSON: {str(e)[:120]}") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    if not isinstance(body.get("model"), str):
        raise bad_request("model: this field is required (a string: one of GET /v1/models)", param="model")
    for flag in ("stream",):
        if flag in body and not isinstance(body[flag], bool):
            raise bad_request(f"Invalid type for '{flag}': expected a boolean.", param=flag)
    return body


def _headers(ex: Exchange, overhead: float | None) -> dict[str, str]:
    out = {"x-londinium-request-id": ex.id}
    if ex.backend is not None:
        out["x-londinium-backend"] = ex.backend.name
        out["x-londinium-route"] = f"{ex.model} -> {ex.backend.name}; {ex.reason}".encode("ascii", "replace").decode()
        out["x-londinium-attempts"] = str(ex.attempts)
    if overhead is not None:
        out["x-londinium-overhead-ms"] = f"{overhead * 1000:.3f}"
    return out


def create_app(gateway: Gateway) -> FastAPI:
    g = gateway.settings.gateway
    telemetry = gateway.telemetry

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await gateway.start()
        yield
        gateway.draining = True
        await gateway.close()

    app = FastAPI(title="londinium gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = gateway
    errors.install(app)

    async def handle(request: Request, endpoint: str) -> Response:
        if gateway.draining:
            raise APIError(503, "the gateway is shutting down; retry on another instance", code="shutting_down",
                           headers={"Retry-After": "1"})
        ex = Exchange(endpoint, await _body(request), authorization=_bearer(request))
        span = telemetry.start(ex)
        gateway.in_flight += 1
        streaming, overhead = False, None
        try:
            reply = await _run(ex, span)
            overhead = time.perf_counter() - ex.arrived - ex.upstream_s if ex.backend is not None else None
            if reply.events is None:
                return JSONResponse(reply.body, status_code=reply.status, headers={**reply.headers, **_headers(ex, overhead)})
            streaming = True
            return StreamingResponse(_frame(ex, reply.events, span, overhead), media_type="text/event-stream",
                                     headers={**reply.headers, **_headers(ex, overhead), "Cache-Control": "no-cache",
                                              "X-Accel-Buffering": "no"})
        except APIError as e:
            ex.status, ex.error = ex.status or e.status, ex.error or e.message
            e.headers = {**(e.headers or {}), **_headers(ex, None)}
            raise
        except Exception as e:  # a bug: errors.install answers 500 and logs the traceback
            ex.status, ex.error = 500, f"internal error ({type(e).__name__})"
            raise
        finally:
            if not streaming:
                gateway.in_flight -= 1
                telemetry.finish(ex, span, overhead if ex.status and ex.status < 400 and ex.backend else None)

    async def _run(ex: Exchange, span: Any) -> Reply:
        if span is None:
            return await gateway.chain(ex)
        from opentelemetry import trace

        with trace.use_span(span, end_on_exit=False):
            return await gateway.chain(ex)

    async def _frame(ex: Exchange, events: AsyncIterator[dict], span: Any, overhead: float | None) -> AsyncIterator[str]:
        """The chunks as SSE; the usage chunk and `usage` fields only if the client asked for them."""
        wanted = ex.client_wants_usage
        try:
            try:
                async for chunk in events:
                    if ex.first_chunk_s is None:
                        ex.first_chunk_s = time.perf_counter() - ex.arrived
                    if not wanted and "usage" in chunk:
                        if not chunk.get("choices"):
                            continue
                        chunk = {k: v for k, v in chunk.items() if k != "usage"}
                    yield sse(chunk)
            except APIError as e:  # after the 200 an error can only be an event
                yield sse(e.body())
            except Exception:
                log.exception("gateway: a stream failed")
                yield sse(APIError(500, "internal server error (logged on the gateway)", code="internal_error").body())
            yield DONE
        finally:
            gateway.in_flight -= 1
            telemetry.finish(ex, span, overhead)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Response:
        return await handle(request, "chat")

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Response:
        return await handle(request, "completion")

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        token = _bearer(request)
        key = await gateway.store.run(gateway.store.find_key, token) if token else None
        key = key if key is not None and key.revoked is None else None
        if g.keys_required and key is None:  # as the `auth` step decides
            raise APIError(401, "Incorrect or missing API key", code="invalid_api_key")
        aliases = [a for a in gateway.routers if key is None or not key.models or a in key.models]
        return {"object": "list", "data": [{"id": a, "object": "model", "created": 0, "owned_by": "londinium-gateway"}
                                           for a in aliases]}

    @app.get("/health")
    async def health() -> JSONResponse:
        backends = {b.name: {"healthy": b.healthy, "breaker": b.breaker.state, "in_flight": b.in_flight,
                             "context": b.context} for b in gateway.backends.values()}
        status = "draining" if gateway.draining else "ok"
        return JSONResponse({"status": status, "backends": backends}, status_code=200 if status == "ok" else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(telemetry.metrics.render(), media_type=CONTENT_TYPE)

    app.add_middleware(BodyLimit, limit=int(g.max_body_mb * 1024 * 1024), timeout_s=g.read_timeout_s, setting="gateway")
    guard(app, g.host, g.allowed_hosts, g.allowed_origins, setting="gateway",
          refuse=lambda status, message, code: APIError(status, message, code=code).response())
    return app
