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


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
StoreDep = Annotated[Store, Depends(get_store)]
