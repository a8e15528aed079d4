"""What the gateway reports about itself: Prometheus metrics, OpenTelemetry spans, the request log.

Metrics (GET /metrics, one registry per gateway; labels come from the config and status codes only,
so their number is bounded whatever the traffic):

    londinium_gateway_requests_total{model, backend, status}       finished requests
    londinium_gateway_request_seconds{model}                        arrival to the last byte
    londinium_gateway_overhead_seconds                              the gateway's own time (not the backend's)
    londinium_gateway_attempts_total{backend, outcome}              calls to backends: ok, or why they fell back
    londinium_gateway_tokens_total{model, backend, kind}            prompt and completion tokens served
    londinium_gateway_cost_dollars_total{model, backend}
    londinium_gateway_in_flight{backend}, _breaker_open{backend}, _backend_healthy{backend}

Spans follow OpenTelemetry's GenAI semantic conventions: a server span per request named
`{gen_ai.operation.name} {gen_ai.request.model}` with `gen_ai.usage.input_tokens` and
`output_tokens`, `gen_ai.response.model`, `gen_ai.response.finish_reasons`; a child span per chain
step (`gateway.auth`, ...) and per backend attempt. No prompt or completion text goes into a span.
The tracer provider is the gateway's own (never the process-global one).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from londinium.errors import ConfigError
from londinium.gateway.chain import Exchange
from londinium.gateway.settings import TelemetrySection
from londinium.serve.metrics import _LATENCY, RequestLog

_OVERHEAD = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class Metrics:
    def __init__(self, backends: list[Any]):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("londinium_gateway_requests", "Requests finished, by model alias, backend and HTTP status.",
                                ["model", "backend", "status"], registry=r)
        self.latency = Histogram("londinium_gateway_request_seconds", "Arrival to the last byte.", ["model"],
                                 buckets=_LATENCY, registry=r)
        self.overhead = Histogram("londinium_gateway_overhead_seconds", "Time spent in the gateway itself (total less the backend's).",
                                  buckets=_OVERHEAD, registry=r)
        self.attempts = Counter("londinium_gateway_attempts", "Calls to backends, by outcome.", ["backend", "outcome"], registry=r)
        self.tokens = Counter("londinium_gateway_tokens", "Tokens served.", ["model", "backend", "kind"], registry=r)
        self.cost = Counter("londinium_gateway_cost_dollars", "Cost of the tokens served, at the backends' prices.",
                            ["model", "backend"], registry=r)
        in_flight = Gauge("londinium_gateway_in_flight", "Requests in flight to a backend.", ["backend"], registry=r)
        breaker = Gauge("londinium_gateway_breaker_open", "1 while a backend's circuit breaker is open or half-open.", ["backend"], registry=r)
        healthy = Gauge("londinium_gateway_backend_healthy", "1 while a backend passes its health check.", ["backend"], registry=r)
        for b in backends:
            in_flight.labels(b.name).set_function(lambda b=b: b.in_flight)
            breaker.labels(b.name).set_function(lambda b=b: float(b.breaker.state != "closed"))
            healthy.labels(b.name).set_function(lambda b=b: float(b.healthy))

    def observe(self, ex: Exchange, seconds: float, overhead: float | None) -> None:
        backend = ex.backend.name if ex.backend is not None else "-"
        model = ex.model if ex.route is not None else "-"  # unknown aliases would make labels unbounded
        self.requests.labels(model, backend, str(ex.status)).inc()
        self.latency.labels(model).observe(seconds)
        if overhead is not None:
            self.overhead.observe(overhead)
        if ex.usage:
            self.tokens.labels(model, backend, "prompt").inc(ex.usage["prompt_tokens"])
            self.tokens.labels(model, backend, "completion").inc(ex.usage["completion_tokens"])
        if ex.cost:
            self.cost.labels(model, backend).inc(ex.cost)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def make_tracer(cfg: TelemetrySection) -> tuple[Any, Any, Any]:
    """(tracer, provider, in-memory exporter or None) for the configured exporter; (None, None, None) for 'none'."""
    if cfg.exporter == "none":
        return None, None, None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": cfg.service_name}))
    memory = None
    if cfg.exporter == "memory":
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))
    elif cfg.exporter in ("console", "file"):
        if cfg.exporter == "file" and not cfg.file:
            raise ConfigError("telemetry.exporter = 'file' needs telemetry.file, the JSON-lines file to append spans to")
        out = open(cfg.file, "a", encoding="utf-8") if cfg.exporter == "file" else sys.stderr
        exporter = ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")
        # Batched: a bounded queue (2,048 spans) written from its own thread, never on the request's path.
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError("telemetry.exporter = 'otlp' needs the OTLP exporter: pip install opentelemetry-exporter-otlp-proto-http") from None
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(**({"endpoint": cfg.otlp_endpoint} if cfg.otlp_endpoint else {}))))
    return provider.get_tracer("londinium.gateway"), provider, memory


class Telemetry:
    """Metrics, spans and the request log of one gateway."""

    def __init__(self, cfg: TelemetrySection, backends: list[Any], request_log: str, log_prompts: bool):
        self.metrics = Metrics(backends)
        self.tracer, self.provider, self.memory = make_tracer(cfg)
        self.log = RequestLog(request_log or None, log_prompts)

    def start(self, ex: Exchange) -> Any:
        if self.tracer is None:
            return None
        from opentelemetry.trace import SpanKind

        operation = "chat" if ex.endpoint == "chat" else "text_completion"
        attributes = {"gen_ai.operation.name": operation, "gen_ai.request.model": ex.model, "londinium.gateway.request_id": ex.id}
        for field, attr in (("max_tokens", "gen_ai.request.max_tokens"), ("max_completion_tokens", "gen_ai.request.max_tokens"),
                            ("temperature", "gen_ai.request.temperature"), ("top_p", "gen_ai.request.top_p"), ("seed", "gen_ai.request.seed")):
            value = ex.body.get(field)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                attributes[attr] = value
        return self.tracer.start_span(f"{operation} {ex.model}", kind=SpanKind.SERVER, attributes=attributes)

    def finish(self, ex: Exchange, span: Any, overhead: float | None) -> None:
        seconds = time.perf_counter() - ex.arrived
        self.metrics.observe(ex, seconds, overhead)
        if span is not None:
            from opentelemetry.trace import Status, StatusCode

            if ex.usage:
                span.set_attribute("gen_ai.usage.input_tokens", ex.usage["prompt_tokens"])
                span.set_attribute("gen_ai.usage.output_tokens", ex.usage["completion_tokens"])
            if ex.backend is not None:
                span.set_attribute("gen_ai.response.model", ex.backend.cfg.model)
                span.set_attribute("londinium.gateway.backend", ex.backend.name)
            if ex.finish_reasons:
                span.set_attribute("gen_ai.response.finish_reasons", [str(r) for r in ex.finish_reasons])
            span.set_attribute("londinium.gateway.attempts", ex.attempts)
            span.set_attribute("http.response.status_code", ex.status or 0)
            if ex.reason:
                span.set_attribute("londinium.gateway.route_reason", ex.reason)
            for step_decision, value in ex.outcome.items():  # the steps' decisions (cache, pii, ...): names and counts, never a value
                span.set_attribute(f"londinium.gateway.{step_decision}", value)
            if (ex.status or 0) >= 400:
                span.set_attribute("error.type", str(ex.status))
                span.set_status(Status(StatusCode.ERROR, (ex.error or "")[:200]))
            span.end()
        record = {"id": ex.id, "endpoint": ex.endpoint, "model": ex.model, "status": ex.status,
                  "key": ex.key.id if ex.key is not None else None, "backend": ex.backend.name if ex.backend else None,
                  "route": ex.reason, "attempts": ex.attempts, "stream": ex.stream, **(ex.usage or {}),
                  "usage_source": ex.usage_source, "cost": ex.cost, "e2e_s": round(seconds, 6),
                  **({"first_chunk_s": round(ex.first_chunk_s, 6)} if ex.first_chunk_s is not None else {}),
                  "overhead_s": round(overhead, 6) if overhead is not None else None,
                  "steps": {name: round(s, 6) for name, s in ex.trace}, **({"outcome": ex.outcome} if ex.outcome else {})}
        if ex.error:
            record["error"] = ex.error
        if self.log.log_prompts:
            from londinium.gateway.router import prompt_text

            record["prompt"] = prompt_text(ex.log_body if ex.log_body is not None else ex.body, ex.endpoint)
        self.log.write(record)

    def close(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()
        self.log.close()
