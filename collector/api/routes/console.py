"""The live console: one static page (HTML + JS + CSS, no build step) served by the collector.

The page itself holds no data, so it is served without a key; it asks for one and then calls
the API (and the SSE stream) with it.
"""

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

router = APIRouter(include_in_schema=False)

STATIC = files("collector") / "static"
TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript", "css": "text/css"}


def _file(name: str) -> Response:
    kind = name.rsplit(".", 1)[1]
    return Response(
        (STATIC / name).read_bytes(),
        media_type=TYPES[kind],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/")
def root() -> RedirectResponse:
    """The console is the home page."""
    return RedirectResponse("/console")


@router.get("/console")
def console() -> Response:
    """The console page."""
    return _file("console.html")


@router.get("/console/console.js")
def script() -> Response:
    """The console's script."""
    return _file("console.js")


@router.get("/console/console.css")
def style() -> Response:
    """The console's style sheet."""
    return _file("console.css")
