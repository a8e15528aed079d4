"""The playground: a web page at `/` over this server's own API (chat, token probabilities, scoring,
corpus search, reports, a side-by-side comparison). `serve.playground = false` leaves it out, with
its /v1/londinium routes (`extensions.py`): the server is then OpenAI's API only.

The page is static files from the package's `web/` folder (HTML, CSS and JavaScript modules: no build
step, nothing fetched from another site): `index.html` at `/`, the others at `/playground/<name>`.
They are read once when the app is made and served from memory, so only those names exist. They are
open without the API key (the page asks for the key and sends it with every API call), so
`mount_playground` returns their paths for the key check to let through; everything the page reads
goes through /v1 and needs the key.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Callable

from fastapi import FastAPI
from fastapi.responses import Response

from londinium.serve.errors import APIError
from londinium.serve.extensions import londinium_routes
from londinium.serve.reports import Provenance

TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}

# The page runs only what this server sent: its own scripts and styles (no inline code), images from
# here (plots arrive as blob: URLs, fetched with the key), and fetches to any http(s) server, because
# Compare may ask another server (which must allow this page's origin: serve.allowed_origins).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self' http: https:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def assets() -> dict[str, tuple[bytes, str]]:
    """The playground's files, name -> (content, media type)."""
    out = {}
    for f in resources.files("londinium").joinpath("web").iterdir():
        kind = TYPES.get("." + f.name.rsplit(".", 1)[-1])
        if f.is_file() and kind:
            out[f.name] = (f.read_bytes(), kind)
    return out


def mount_playground(app: FastAPI, state: Any, ready: Callable[[], None], check_model: Callable[[str], None],
                     provenance: Provenance, generate: Any, snippet_chars: int = 240) -> frozenset[str]:
    """Add the page, its files and the /v1/londinium routes to `app`; return the paths open without a key."""
    app.include_router(londinium_routes(state, ready, check_model, provenance, generate, snippet_chars))
    files = assets()

    def serve(name: str) -> Response:
        if name not in files:
            raise APIError(404, f"the playground has no file {name!r}", code="not_found")
        body, kind = files[name]
        headers = {**HEADERS, "Content-Security-Policy": CSP} if kind.startswith("text/html") else HEADERS
        return Response(body, media_type=kind, headers=headers)

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return serve("index.html")

    @app.get("/playground/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        return serve(name)

    return frozenset({"/", *(f"/playground/{name}" for name in files)})
