"""API-key authentication and role checks as dependencies.

A key travels in `Authorization: Bearer KEY` or `X-API-Key: KEY`. Only the SSE stream also takes
`?api_key=KEY`, because a browser's EventSource cannot set headers; prefer the headers elsewhere
(URLs end up in proxy logs and browser history).

A 专业部门 (department) key sees only its own departments' work. The rule is fail-closed: the
plain `Viewer` (and every higher rung) refuses such a key with a 403, so a new endpoint serves
it nothing until it takes a `ScopedReader` instead — and the Reader's `scope` goes to every
store query the endpoint makes (what a scope sees is written once, in store/scope_sql.py).
A `reporter` key (公众上报应用) is refused by every one of these dependencies, and a public
endpoint treats it as no key: it only posts Open311 reports (routes/open311.py checks it there).
"""

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from lifeline.collector.api.deps import StoreDep
from lifeline.collector.cases.duties import scope_names
from lifeline.collector.keys import KEY_HEADERS, digest
from lifeline.collector.models import ApiKey, Role
from lifeline.collector.store import Store, StoreError

_bearer = HTTPBearer(auto_error=False, description="API key as a bearer token")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="lifeline"'}
MAX_KEY_CHARS = 200


def _lookup(store: StoreDep, token: str | None) -> ApiKey:
    if not token:
        raise HTTPException(401, f"an API key is required: send it as {KEY_HEADERS}", _CHALLENGE)
    if len(token) > MAX_KEY_CHARS:
        raise HTTPException(401, "invalid API key", _CHALLENGE)
    key = store.api_key_by_hash(digest(token))
    if key is None:
        raise HTTPException(401, "invalid or revoked API key", _CHALLENGE)
    return key


def _from_headers(
    store: StoreDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_header)],
) -> ApiKey:
    return _lookup(store, bearer.credentials if bearer else header)


def _from_headers_or_query(
    store: StoreDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_header)],
    api_key: Annotated[
        str | None,
        Query(max_length=MAX_KEY_CHARS, description="for EventSource, which cannot set headers"),
    ] = None,
) -> ApiKey:
    return _lookup(store, bearer.credentials if bearer else header or api_key)


# Keys a public endpoint has seen valid lately, by digest, with when (monotonic seconds): while
# the database is down it cannot check a key, and /readyz's reasons matter most just then.
_recently_valid: dict[str, tuple[ApiKey, float]] = {}
_RECENT_S = 600.0


def _optional(
    store: StoreDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_header)],
) -> ApiKey | None:
    token = bearer.credentials if bearer else header
    if not token:
        return None
    try:
        key = _lookup(store, token)
    except StoreError:
        seen = _recently_valid.get(digest(token[:MAX_KEY_CHARS]))
        return seen[0] if seen and time.monotonic() - seen[1] < _RECENT_S else None
    if len(_recently_valid) > 1000:  # keys are few; bound it anyway
        _recently_valid.clear()
    _recently_valid[digest(token)] = (key, time.monotonic())
    return key


def _not_reporter(key: ApiKey) -> None:
    # An app's key ships inside the app, so whoever unpacks it must learn nothing with it.
    if key.role is Role.REPORTER:
        raise HTTPException(
            403,
            f"key {key.name!r} is a reporter key (公众上报应用): it only posts citizens' reports"
            " (POST /open311/v2/requests.json) and reads nothing",
        )


def _check(key: ApiKey, needed: Role) -> ApiKey:
    _not_reporter(key)
    if not key.role.allows(needed):
        raise HTTPException(
            403, f"this needs the {needed.value} role; key {key.name!r} is {key.role.value}"
        )
    if key.role is Role.DEPARTMENT:
        raise HTTPException(
            403,
            f"key {key.name!r} is a department key (专业部门): it sees only its own departments'"
            " cases, work orders, alarms, devices, readings, events and statistics, and not"
            " this endpoint",
        )
    return key


def _need(role: Role) -> object:
    def dependency(key: Annotated[ApiKey, Depends(_from_headers)]) -> ApiKey:
        return _check(key, role)

    return Depends(dependency)


@dataclass(frozen=True, slots=True)
class Reader:
    """A key on an endpoint that serves every role, with what it may see: `scope` is the
    department names (every name its codes have had) a 专业部门 key is limited to, None
    for every other key. Pass `scope` to each store query (`scope=reader.scope`)."""

    key: ApiKey
    scope: tuple[str, ...] | None


def reader_of(store: Store, key: ApiKey) -> Reader:
    """The Reader of `key`: its department scope looked up in the department registry.
    Raises HTTPException 403 for a reporter key, which reads nothing."""
    _not_reporter(key)
    if key.role is not Role.DEPARTMENT:
        return Reader(key, None)
    scope = scope_names(key, store.department_names())
    return Reader(key, tuple(sorted(scope or ())))


def _reader(store: StoreDep, key: Annotated[ApiKey, Depends(_from_headers)]) -> Reader:
    return reader_of(store, key)


def _stream_reader(
    store: StoreDep, key: Annotated[ApiKey, Depends(_from_headers_or_query)]
) -> Reader:
    return reader_of(store, key)


def _optional_not_scoped(key: Annotated[ApiKey | None, Depends(_optional)]) -> ApiKey | None:
    # A department key learns no more than the public here: the details are the whole city's;
    # nor does a reporter key, which is as good as public.
    public = (Role.DEPARTMENT, Role.REPORTER)
    return None if key is not None and key.role in public else key


Viewer = Annotated[ApiKey, _need(Role.VIEWER)]
Operator = Annotated[ApiKey, _need(Role.OPERATOR)]
Admin = Annotated[ApiKey, _need(Role.ADMIN)]
# Every role, a department key limited to its scope: the endpoint must apply `scope`.
ScopedReader = Annotated[Reader, Depends(_reader)]
StreamReader = Annotated[Reader, Depends(_stream_reader)]
# No key: None (a public endpoint that says more to a key holder); a key that fails: 401;
# a department or reporter key: None too.
MaybeViewer = Annotated[ApiKey | None, Depends(_optional_not_scoped)]
