"""Presidio's analyzer and anonymizer as the REST services LiteLLM's Presidio guardrail calls
(`POST /analyze`, `POST /anonymize`, as Microsoft's Docker images serve them), for
benchmarks/gateway_pii_peer.py. The analyzer is the one the gateway's `pii` step uses (the same
offline pattern recognizers, gateway/pii_detect.py), so both sides find the same spans; anonymizing is
Presidio's default `replace` operator (`<ENTITY_TYPE>`), written out here because the
presidio-anonymizer package is not a londinium dependency.

    python benchmarks/presidio_service.py --port 5002
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from londinium.gateway.pii_detect import Detector

ENTITIES = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS"]


def build() -> Starlette:
    detector = Detector(ENTITIES, language="en", score_threshold=0.4, where="presidio_service")

    async def health(request: Request) -> Response:
        return Response("Presidio Analyzer service is up")

    async def analyze(request: Request) -> Response:
        body = await request.json()
        wanted = set(body.get("entities") or ENTITIES)
        found = [s for s in detector.find(body["text"]) if s.entity in wanted]
        return JSONResponse([{"entity_type": s.entity, "start": s.start, "end": s.end, "score": s.score} for s in found])

    async def anonymize(request: Request) -> Response:
        body = await request.json()
        text, items = body["text"], []
        for r in sorted(body.get("analyzer_results") or [], key=lambda r: r["start"], reverse=True):
            new = f"<{r['entity_type']}>"
            text = text[:r["start"]] + new + text[r["end"]:]
            items.append({"operator": "replace", "entity_type": r["entity_type"], "start": r["start"], "end": r["start"] + len(new), "text": new})
        return JSONResponse({"text": text, "items": items})

    return Starlette(routes=[Route("/health", health), Route("/analyze", analyze, methods=["POST"]),
                             Route("/anonymize", anonymize, methods=["POST"])])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    uvicorn.run(build(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
