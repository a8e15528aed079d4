"""Errors as OpenAI sends them: `{"error": {"message", "type", "param", "code"}}` with the status
clients branch on (the openai SDK maps 400/401/404/413/429/5xx to its own exception types).

Every failure path goes through here: our own `APIError`, FastAPI's validation errors (422 becomes
400, naming the field), Starlette's 404/405, an oversized body (413), and any bug (500 with a
generic message: the traceback goes to the server log, never to the client).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("londinium.serve")

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
          404: "invalid_request_error", 405: "invalid_request_error", 408: "invalid_request_error",
          413: "invalid_request_error", 421: "invalid_request_error", 429: "rate_limit_error"}


_CODES = {408: "request_timeout", 413: "request_too_large"}


class APIError(Exception):
    """An error to send as OpenAI's error object. `param` names the request field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or _TYPES.get(status, "server_error")
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def _member(part: Any) -> bool:
    """pydantic puts a union member's type name into an error's location (`str`, `list[int]`)."""
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool", "function-after", "dict"))


def _field(loc: tuple[Any, ...]) -> str | None:
    """`("body", "messages", 0, "content")` -> `"messages[0].content"` (union members dropped)."""
    out = ""
    for p in loc:
        if p == "body" or _member(p):
            continue
        out += f"[{p}]" if isinstance(p, int) else ("." if out else "") + str(p)
    return out or None


# What a JSON value is, what a strict type error expected, and what a union member accepts, in the
# words of OpenAI's own type errors ("Invalid type for 'n': expected an integer, but got a string instead.").
_JSON_TYPES = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "an array",
               dict: "an object", type(None): "null"}
_EXPECTED = {"bool_type": "a boolean", "int_type": "an integer", "float_type": "a number", "string_type": "a string",
             "list_type": "an array", "dict_type": "an object", "model_type": "an object", "model_attributes_type": "an object"}
_MEMBERS = {"str": "a string", "list[str]": "a list of strings", "list[int]": "a list of token ids (integers)",
            "list[list[int]]": "a list of token-id lists", "list[TextPart]": "a list of text parts",
            "dict[str,any]": "an object"}


def _invalid_type(field: str | None, expected: str, value: Any) -> APIError:
    got = _JSON_TYPES.get(type(value), type(value).__name__)
    if field is None:
        return bad_request(f"the request body must be {expected}, not {got}")
    inside = (got == "an array" and ("list" in expected or "array" in expected)) or (got == "an object" and "object" in expected)
    if inside:  # the container is one the field accepts; what is inside it is not
        return bad_request(f"Invalid value for '{field}': expected {expected}.", param=field)
    return bad_request(f"Invalid type for '{field}': expected {expected}, but got {got} instead.", param=field)


def _union_error(errors: list[dict[str, Any]]) -> APIError | None:
    """A value that matches no member of a union (`prompt`, `stop`, `content`): one message naming
    what the field accepts, rather than the complaint of whichever member pydantic tried first.
    Where one member got further into the value than the others (`[[1, true]]` is a list of lists
    with a bad element), that member's error is the precise one, and is returned instead."""
    loc = tuple(errors[0].get("loc", ()))
    at = next((i for i, p in enumerate(loc) if _member(p)), None)
    if at is None:
        return None
    prefix = loc[:at]
    same = [e for e in errors if tuple(e.get("loc", ()))[:at] == prefix and len(e["loc"]) > at and _member(e["loc"][at])]
    depth = sorted((len(e["loc"]) for e in same), reverse=True)
    if len(depth) > 1 and depth[0] > depth[1]:
        return _one_error(next(e for e in same if len(e["loc"]) == depth[0]))
    accepted = [_MEMBERS.get(m, m) for m in dict.fromkeys(str(e["loc"][at]) for e in same)]
    said = accepted[0] if len(accepted) == 1 else ", ".join(accepted[:-1]) + " or " + accepted[-1]
    return _invalid_type(_field(prefix), said, errors[0].get("input"))


def _one_error(error: dict[str, Any]) -> APIError:
    field, kind = _field(tuple(error.get("loc", ()))), error.get("type", "")
    if kind in _EXPECTED:
        return _invalid_type(field, _EXPECTED[kind], error.get("input"))
    message = error.get("msg", "invalid value")
    return bad_request(f"{field}: {message}" if field else str(message), param=field)


def validation_error(exc: RequestValidationError) -> APIError:
    """FastAPI's 422 as OpenAI's 400: the first problem, with the field it is about."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    field = _field(tuple(first.get("loc", ())))
    kind = first.get("type", "")
    if kind == "json_invalid":
        return bad_request(f"the request body is not valid JSON: {first.get('ctx', {}).get('error', first.get('msg'))}")
    if kind == "extra_forbidden":
        return bad_request(f"Unrecognized request argument supplied: {field}", param=field)
    if kind == "missing":
        if field is None:
            return bad_request("the request body is empty: send a JSON object")
        return bad_request(f"{field}: this field is required", param=field)
    if field is None and kind in ("model_attributes_type", "dict_type", "model_type"):
        return bad_request("the request body must be a JSON object")
    return _union_error(errors) or _one_error(first)


def _unparsable(cause: BaseException) -> str:
    """Why a JSON body could not be read, when it is not a JSON syntax error."""
    if isinstance(cause, UnicodeDecodeError):
        return f"the request body is not UTF-8: byte {cause.object[cause.start]:#04x} at offset {cause.start}"
    if isinstance(cause, RecursionError):
        return "the request body is nested too deeply to parse"
    return f"the request body could not be parsed as JSON ({type(cause).__name__})"


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into OpenAI's error shape."""

    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            err = APIError(404, f"no route {request.method} {request.url.path}; see GET /v1/models, "
                                "POST /v1/completions, POST /v1/chat/completions", code="not_found")
        elif exc.status_code == 405:
            err = APIError(405, f"{request.method} is not allowed on {request.url.path}", code="method_not_allowed")
        elif exc.status_code == 400 and exc.__cause__ is not None:
            err = bad_request(_unparsable(exc.__cause__))  # FastAPI's "error parsing the body", said precisely
        else:  # the body limits (bodies.BodyLimit) and anything else Starlette raises
            err = APIError(exc.status_code, str(exc.detail), code=_CODES.get(exc.status_code))
        err.headers = dict(exc.headers) if exc.headers else None
        return err.response()

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return APIError(500, "internal server error (logged on the server)", code="internal_error").response()
