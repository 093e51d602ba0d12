"""Every parameter and header of every operation, with input schemathesis does not make.

schemathesis draws values its schema allows or nearly allows; this goes further, on purpose:
each path, query and header parameter of the published OpenAPI document, one at a time, gets
non-ASCII text, bidi and zero-width characters, percent-encoded NUL and invalid UTF-8, huge
and negative numbers, floats where integers go, 10 000 characters, path tricks, repetition.
The answer is never a 5xx, and every 4xx is application/problem+json (issue 17, "never 500"),
except under /open311/v2, where it is the GeoReport v2 error list the spec prescribes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lifeline.collector.models import Role
from tests.integration.test_api_http import running_api, seed

pytestmark = [pytest.mark.integration, pytest.mark.proof]

# Raw, already percent-encoded where a URL needs it: they go into the URL as they are.
VALUES = [
    "",
    "%E4%B8%AD%E6%96%87",  # 中文
    "%E2%80%AE1",  # right-to-left override
    "a%E2%80%8Bb",  # zero-width space
    "%F0%9F%94%A5",  # an emoji (4-byte UTF-8)
    "%00",
    "%FF%FE",  # not UTF-8 at all
    "%C0%AF",  # overlong UTF-8 for '/'
    "..%2F..%2Fetc%2Fpasswd",
    "-1",
    "0",
    "9223372036854775808",  # 2**63
    "-9223372036854775809",
    "9" * 400,
    "1e309",
    "NaN",
    "-inf",
    "0x10",
    "1.5",
    "true",
    "x" * 10_000,
    "%25",  # a literal '%'
    "a,b,,c",
]
# Header values go on the wire as bytes (latin-1), not percent-encoded.
HEADER_VALUES = [
    b"",
    "中文".encode(),
    b"\xff\xfe",
    b"x" * 8000,
    b"-1",
    b"9" * 400,
    b"NaN",
    b"Bearer",
    b"Bearer \xe4\xb8\xad",
    b"llk_" + b"A" * 300,
]
# JSON values for each property of a request body, the others kept plausible.
BODY_VALUES: list[Any] = [
    "",
    "中文" * 600,
    "a\u0000b",
    "\u202e\ufeff",
    "x" * 10_000,
    -1,
    0,
    2**63,
    -(2**63) - 1,
    10**400,
    1e308,
    -1e308,
    0.5,
    True,
    None,
    [],
    ["x"] * 1000,
    {},
    {"$ref": "#"},
    [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
]
HEADERS = ["Authorization", "X-API-Key", "Last-Event-ID", "Content-Type", "Accept", "Host"]
# The stream never ends when its parameters are good; test_api_http.py covers it.
SKIP = {"/api/v1/events/stream"}


def _schema(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = spec["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in node:  # X | None: the X
        node = next((_schema(spec, n) for n in node["anyOf"] if n.get("type") != "null"), node)
    return node


def _plausible(spec: dict[str, Any], node: dict[str, Any]) -> Any:
    node = _schema(spec, node)
    if "enum" in node:
        return node["enum"][0]
    if "default" in node:
        return node["default"]
    return {"string": "x", "integer": 1, "number": 1.0, "boolean": False, "array": [],
            "object": {}}.get(node.get("type", "string"), "x")  # fmt: skip


def _bodies(spec: dict[str, Any], op: dict[str, Any]) -> list[tuple[str, Any]]:
    """(property, body) for each property of the operation's JSON body and hostile value."""
    content = op.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return []
    schema = _schema(spec, content["schema"])
    props = schema.get("properties", {})
    base = {name: _plausible(spec, p) for name, p in props.items()}
    out: list[tuple[str, Any]] = [("(body)", v) for v in BODY_VALUES]
    for name in props:
        out += [(name, {**base, name: v}) for v in BODY_VALUES]
    return out


def _fill(path: str, params: list[dict[str, Any]], name: str, value: str) -> str:
    for p in params:
        if p["in"] == "path":
            path = path.replace("{" + p["name"] + "}", value if p["name"] == name else "1")
    return path


def _open311_error(status: int, text: str) -> bool:
    """True if `text` is a GeoReport v2 error list (JSON or XML) naming `status`."""
    if text.startswith("<?xml"):
        return f"<errors><error><code>{status}</code>" in text
    try:
        body = json.loads(text)
    except ValueError:
        return False
    return isinstance(body, list) and bool(body) and body[0].get("code") == status


def test_every_parameter_and_header_answers_4xx_problem_json_never_5xx(tmp_path: Path) -> None:
    with running_api(f"sqlite:///{tmp_path}/f.db") as api:
        seed(api)
        spec = api.client.get("/openapi.json").json()
        auth = api.h(Role.ADMIN)
        bad: list[str] = []
        tried = 0

        def check(
            method: str, url: str, headers: dict[str, Any], what: str, body: Any = None
        ) -> None:
            nonlocal tried
            tried += 1
            if body is None and method in ("post", "put", "patch"):
                body = {}
            r = api.client.request(method, url, headers=headers, json=body)
            problem = r.headers.get("content-type", "") == "application/problem+json"
            if url.startswith("/open311/v2/"):
                problem = _open311_error(r.status_code, r.text)
            if r.status_code >= 500 or (r.status_code >= 400 and not problem):
                bad.append(
                    f"{method.upper()} {url[:120]} [{what}] -> {r.status_code} {r.text[:200]}"
                )

        for path, item in spec["paths"].items():
            if path in SKIP:
                continue
            for method, op in item.items():
                # Deleting or revoking with the fuzzer's own key would lock it out.
                if method == "delete" and "keys" in path:
                    continue
                params = op.get("parameters", [])
                for p in params:
                    if p["in"] not in ("path", "query"):
                        continue
                    for value in VALUES:
                        url = _fill(path, params, p["name"], value)
                        if p["in"] == "query":
                            url = f"{url}?{p['name']}={value}"
                        check(method, url, auth, p["name"])
                for what, body in _bodies(spec, op):
                    check(method, _fill(path, params, "", "1"), auth, what, body)
                for header in HEADERS:
                    for raw in HEADER_VALUES:
                        headers = {**(auth if header != "Authorization" else {}), header: raw}
                        check(method, _fill(path, params, "", "1"), headers, header)
        # Bodies that are not JSON at all, and what no operation of the document names.
        for content in (b"\xff\xfe", b"[" * 5000 + b"]" * 5000, b'{"a": 1e999999}', b"{" * 3):
            for url in ("/api/v1/keys", "/api/v1/webhooks", "/api/v1/cases/x/actions"):
                headers = {**auth, "Content-Type": "application/json"}
                r = api.client.post(url, content=content, headers=headers)
                if r.status_code >= 500 or r.headers["content-type"] != "application/problem+json":
                    bad.append(f"POST {url} {content[:20]!r} -> {r.status_code}")
        for method, url in [("GET", "/nope"), ("PATCH", "/api/v1/alarms"), ("GET", "/console/%FF")]:
            check(method.lower(), url, auth, "route")
    assert tried > 3000
    assert not bad, f"{len(bad)} of {tried}:\n" + "\n".join(bad[:25])
