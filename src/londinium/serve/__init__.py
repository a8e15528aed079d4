"""`londinium serve`: an OpenAI-compatible HTTP server over the continuous-batching engine.

    app.py        the FastAPI app factory: routes, auth, body limit, loading and draining states
    protocol.py   request models with OpenAI's field names, and the response/chunk shapes
    prompts.py    a request -> token ids and SamplingParams (context checks, chat template)
    streaming.py  Server-Sent Events framed as the openai SDK parses them
    convert.py    per-token log-probabilities in OpenAI's two shapes
    errors.py     every error as OpenAI's {"error": {...}} with the right status
    metrics.py    Prometheus metrics and the one-JSON-line-per-request log
    server.py     `serve()`: uvicorn, model loading in the background, graceful SIGTERM

See docs/serving.md.
"""
