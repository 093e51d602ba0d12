"""The live console and the API docs page: static files (HTML + JS + CSS, no build step) served
by the collector itself, third-party browser libraries included, so neither needs the internet.

The pages hold no data, so they are served without a key; the console asks for one and then
calls the API (and the SSE stream) with it. Third-party files are served only if
`static/vendor/MANIFEST.json` lists them (scripts/vendor-console.sh fetched and pinned them).
Every page carries a Content-Security-Policy (W3C CSP Level 3) that allows scripts and styles
from this origin only, no inline script, and no framing (`frame-ancestors 'none'`).
"""

import json
from functools import cache
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import RedirectResponse, Response

from lifeline.collector.api.deps import RuntimeDep
from lifeline.collector.api.schemas import ConsoleConfigOut

router = APIRouter(include_in_schema=False)

STATIC = files("lifeline.collector") / "static"
TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "json": "application/json",
    "txt": "text/plain; charset=utf-8",
}
Part = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")]


def csp(img_origin: str | None = None, inline_styles: bool = False) -> str:
    """The Content-Security-Policy of a page: this origin only, plus `img_origin` (a map tile
    server) for images; `inline_styles` for Swagger UI, which sets style attributes."""
    img = "'self' data:" + (f" {img_origin}" if img_origin else "")
    style = "'self'" + (" 'unsafe-inline'" if inline_styles else "")
    return (
        f"default-src 'self'; script-src 'self'; style-src {style}; img-src {img}; "
        "connect-src 'self'; font-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )


def tile_origin(url: str | None) -> str | None:
    """The scheme://host[:port] of a tile URL template (for the CSP), None without one."""
    if not url:
        return None
    parts = urlsplit(url)
    first, _, rest = parts.netloc.partition(".")
    # A CSP host may be wildcarded only as a whole leftmost label: t{s}.host -> *.host
    host = f"*.{rest}" if "{s}" in first else parts.netloc
    return f"{parts.scheme}://{host}"


def _file(name: str, policy: str | None = None) -> Response:
    kind = name.rsplit(".", 1)[1]
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if policy is not None:
        headers["Content-Security-Policy"] = policy
        headers["X-Frame-Options"] = "DENY"  # for browsers without frame-ancestors
        headers["Referrer-Policy"] = "no-referrer"
    return Response((STATIC / name).read_bytes(), media_type=TYPES[kind], headers=headers)


@cache
def vendored() -> dict[str, str]:
    """Every third-party file the manifest lists, as `folder/name` -> its sha256."""
    doc: dict[str, Any] = json.loads((STATIC / "vendor" / "MANIFEST.json").read_text())
    return {
        f"{p['folder']}/{name}": digest
        for p in doc["packages"]
        for name, digest in p["sha256"].items()
    }


@router.get("/")
def root() -> RedirectResponse:
    """The console is the home page."""
    return RedirectResponse("/console")


@router.get("/console")
def console(runtime: RuntimeDep) -> Response:
    """The console page."""
    return _file("console.html", csp(tile_origin(runtime.config.console.tiles_url)))


@router.get("/console/config.json", response_model=ConsoleConfigOut)
def console_config(runtime: RuntimeDep) -> dict[str, Any]:
    """What the console needs to know before it has a key: the map's base layer."""
    cfg = runtime.config.console
    return {"tiles_url": cfg.tiles_url, "tiles_datum": cfg.tiles_datum, "tiles_max_zoom": 19}


@router.get("/console/{name}")
def console_file(name: Part) -> Response:
    """The console's own script and style sheet; 404 for any other name."""
    if name not in ("console.js", "console.css", "docs.js"):
        raise HTTPException(404, f"no console file {name}")
    return _file(name)


@router.get("/console/vendor/{folder}/{name}")
def vendor_file(folder: Part, name: Part) -> Response:
    """A pinned third-party file (Leaflet, uPlot, gcoord, Swagger UI) or its licence; 404 for
    a file not pinned."""
    path = f"{folder}/{name}"
    if path not in vendored():
        raise HTTPException(404, f"no vendored file {path}")
    kind = name.rsplit(".", 1)[1] if "." in name else "txt"
    return Response(
        (STATIC / "vendor" / folder / name).read_bytes(),
        media_type=TYPES.get(kind, TYPES["txt"]),
        headers={"Cache-Control": "max-age=86400", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/docs")
def docs() -> Response:
    """Swagger UI over /openapi.json, from the collector's own copy of swagger-ui-dist."""
    return _file("docs.html", csp(inline_styles=True))
