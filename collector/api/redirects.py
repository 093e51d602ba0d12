"""Relative redirects: a Location header never carries the request's Host back to the client."""

from urllib.parse import urlsplit, urlunsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RelativeRedirects:
    """ASGI middleware that rewrites an absolute `Location` (Starlette's trailing-slash redirect
    builds it from the Host header) to its path and query, as RFC 9110 section 10.2.2 allows.

    A reflected Host turns `GET /console/` into a redirect to any site the requester names:
    cache poisoning behind a proxy, or an open redirect in a link.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def relative(message: Message) -> None:
            if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
                message["headers"] = [
                    (name, _relative(value) if name.lower() == b"location" else value)
                    for name, value in message.get("headers", [])
                ]
            await send(message)

        await self.app(scope, receive, relative)


def _relative(location: bytes) -> bytes:
    parts = urlsplit(location.decode("latin-1"))
    path = parts.path or "/"
    # "//host/x" as a path would itself be read as another host
    path = "/" + path.lstrip("/")
    return urlunsplit(("", "", path, parts.query, parts.fragment)).encode("latin-1")
