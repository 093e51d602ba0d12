"""Request dependencies as Annotated aliases."""

from typing import Annotated

from fastapi import Depends, Request

from lifeline.collector.runtime import Runtime
from lifeline.collector.store import Store


def get_runtime(request: Request) -> Runtime:
    """The collector runtime opened in the app lifespan."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_store(request: Request) -> Store:
    """The store opened in the app lifespan."""
    return get_runtime(request).store


def get_now_ms(request: Request) -> int:
    """The case engine's clock now (UTC ms): what a route judges deadlines and colours by, so
    its answer agrees with the times the engine stamps (a test's injected clock included)."""
    return get_runtime(request).cases.now_ms()


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
StoreDep = Annotated[Store, Depends(get_store)]
NowMs = Annotated[int, Depends(get_now_ms)]
