"""Errors as RFC 9457 application/problem+json, and request hygiene (body size, NUL bytes)."""

import json
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lifeline.collector.api.names import AmbiguousDevice
from lifeline.collector.api.routes.open311 import error, format_of
from lifeline.collector.errors import StoreDataError, StoreUnavailable

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
MAX_BODY_BYTES = 64 * 1024


def problem(
    status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """A problem+json response with the standard title for `status` and our `detail`."""
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status}
    body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def answer(path: str, status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    """The error answer for a request to `path`: problem+json, or under /open311/v2 the
    GeoReport v2 error list that spec prescribes (in the format the path's suffix names)."""
    if path.startswith("/open311/v2/"):
        resp = error(format_of(path), status, detail)
        resp.headers.update(headers or {})
        return resp
    return problem(status, detail, headers=headers)


def _where(loc: Any) -> str:
    return ".".join(str(p) for p in loc) if isinstance(loc, list | tuple) else str(loc)


def install(app: FastAPI) -> None:
    """Register the problem+json exception handlers and the request-hygiene middleware."""

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = getattr(exc, "headers", None)
        return answer(request.url.path, exc.status_code, str(exc.detail), headers)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = jsonable_encoder(exc.errors(), custom_encoder={Exception: str})
        for e in errors:
            e.pop("input", None)  # never echo what was sent (it may be a secret)
            e.pop("url", None)
        detail = "; ".join(f"{_where(e.get('loc'))}: {e.get('msg')}" for e in errors)
        return problem(422, detail or "invalid request", errors=errors)

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        # The database is down or busy: say so at once, and when to try again.
        return problem(503, str(exc), headers={"Retry-After": "5"})

    async def refused(request: Request, exc: Exception) -> JSONResponse:
        return problem(422, str(exc))

    async def ambiguous(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AmbiguousDevice)
        return problem(409, str(exc), candidates=exc.candidates)

    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal error; the collector log has the details")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StoreUnavailable, unavailable)
    app.add_exception_handler(StoreDataError, refused)
    app.add_exception_handler(AmbiguousDevice, ambiguous)
    app.add_exception_handler(Exception, crashed)
    app.add_middleware(RequestHygiene, max_body=MAX_BODY_BYTES)


class RequestHygiene:
    """Refuse bodies over `max_body` (413) and NUL characters anywhere in the request (400).

    The body is read up front (it is small by then), so the routes never see a partial one.
    NUL bytes are refused because PostgreSQL text cannot hold them: better a 400 than a 500.
    """

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query: bytes = scope.get("query_string", b"")
        if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
            refusal = answer(scope["path"], 400, "NUL characters are not allowed in the URL")
            await _send(refusal, scope, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_body:
            await _send(self._too_big(scope["path"]), scope, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _send(self._too_big(scope["path"]), scope, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if b"\x00" in body or b"\\u0000" in body:
            refusal = answer(scope["path"], 400, "NUL characters are not allowed in the body")
            await _send(refusal, scope, send)
            return
        first: Message = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, _replay([first], receive), send)

    def _too_big(self, path: str) -> Response:
        return answer(path, 413, f"request body over {self.max_body} bytes")


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _send(response: Response, scope: Scope, send: Send) -> None:
    async def no_receive() -> Message:
        return {"type": "http.disconnect"}

    await response(scope, no_receive, send)


def dumps(doc: Any) -> str:
    """Compact JSON with Chinese kept readable (for SSE data lines)."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
