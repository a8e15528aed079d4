"""A canned OpenAI-compatible upstream for benchmarks/gateway_overhead.py: answers at once, so what a
gateway adds in front of it is what the benchmark sees. Every answer is `--tokens` words, one word
per stream chunk, with exact usage (a word is a token; the prompt's words likewise).

    python benchmarks/gateway_upstream.py --port 9000 [--tokens 16] [--record received.jsonl]

With --record, the text of every request it receives is appended to that file, one JSON string a line,
before it answers (benchmarks/gateway_pii_peer.py reads what a guardrail let through).
"""

from __future__ import annotations

import argparse
import json

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def build(tokens: int, record: str = "") -> Starlette:
    words = [f"w{i} " for i in range(tokens)]

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "up", "object": "model", "max_model_len": 4096}]})

    async def complete(request: Request) -> Response:
        body = json.loads(await request.body())
        chat = request.url.path.endswith("/chat/completions")
        prompt = " ".join(m.get("content", "") for m in body.get("messages", [])) if chat else str(body.get("prompt", ""))
        if record:
            with open(record, "a", encoding="utf-8") as f:
                f.write(json.dumps(prompt) + "\n")
        n = min(tokens, int(body.get("max_tokens") or tokens))
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": n, "total_tokens": len(prompt.split()) + n}
        head = {"id": "up-1", "created": 0, "model": body.get("model", "up")}
        if not body.get("stream"):
            choice = ({"index": 0, "message": {"role": "assistant", "content": "".join(words[:n])}, "finish_reason": "length"}
                      if chat else {"index": 0, "text": "".join(words[:n]), "finish_reason": "length"})
            return JSONResponse({**head, "object": "chat.completion" if chat else "text_completion", "choices": [choice], "usage": usage})
        include = bool((body.get("stream_options") or {}).get("include_usage"))

        async def events():
            base = {**head, "object": "chat.completion.chunk" if chat else "text_completion"}
            for i, w in enumerate(words[:n]):
                choice = {"index": 0, "delta": {"content": w}, "finish_reason": None} if chat else {"index": 0, "text": w, "finish_reason": None}
                yield f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"
            last = {"index": 0, "delta": {}, "finish_reason": "length"} if chat else {"index": 0, "text": "", "finish_reason": "length"}
            yield f"data: {json.dumps({**base, 'choices': [last]})}\n\n"
            if include:
                yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/models", models), Route("/v1/completions", complete, methods=["POST"]),
                             Route("/v1/chat/completions", complete, methods=["POST"])])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--record", default="", help="append each request's text to this file")
    args = ap.parse_args()
    uvicorn.run(build(args.tokens, args.record), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
