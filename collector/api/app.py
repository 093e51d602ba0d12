"""The FastAPI app factory; state is opened in the lifespan so tests and programs share it."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from collector.api.routes import assets, cases, gateways, health, readings
from collector.runtime import CollectorConfig, Runtime

AppConfig = CollectorConfig


def create_app(config: CollectorConfig, runtime: Runtime | None = None) -> FastAPI:
    """Build the API; opens (and starts) a Runtime from `config` unless one is given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        rt = runtime if runtime is not None else await run_in_threadpool(Runtime, config)
        if owned:
            await run_in_threadpool(rt.start)
        app.state.runtime = rt
        try:
            yield
        finally:
            if owned:
                await run_in_threadpool(rt.close)

    app = FastAPI(title="Lifeline collector", version="1", lifespan=lifespan)
    for module in (health, readings, gateways, assets, cases):
        app.include_router(module.router)
    return app
