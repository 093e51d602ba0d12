"""The FastAPI app factory; state is opened in the lifespan so tests and programs share it."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from lifeline.collector.api import problems
from lifeline.collector.api.redirects import RelativeRedirects
from lifeline.collector.api.routes import (
    alarms,
    assets,
    cases,
    catalog,
    console,
    departments,
    events,
    gateways,
    health,
    keys,
    metrics,
    open311,
    readings,
    reports,
    stats,
    webhooks,
    workorders,
)
from lifeline.collector.runtime import CollectorConfig, Runtime

AppConfig = CollectorConfig

DESCRIPTION = """The command-center API of a Lifeline collector: alarms (list, acknowledge, live
Server-Sent Events), webhooks, 数字城管 cases, device work orders (设备运维工单) and the device
online rate, assets, gateways, devices, readings, Open311.

Every endpoint except /healthz, /readyz, the /console page and the Open311 reads needs an API
key, sent as `Authorization: Bearer KEY` or `X-API-Key: KEY` (the SSE stream also takes
`?api_key=`).
Technical roles are hierarchical: viewer < dispatcher < operator (acknowledge, commands,
work orders) < admin (keys, webhooks, assets, departments). Case actions follow the 数字城管
duties: 监督员 (inspector), 受理员 (intake), 值班长 (shift_lead), 派遣员 (dispatcher), 专业部门
(department, scoped to its department codes), 领导 (leader, read-only); the permission matrix
is in docs/integration.md. A department key sees only its own everywhere: its cases and work
orders, their alarms, devices, readings and events, its statistics (404 for anything else;
403 on the technical endpoints). Errors are application/problem+json.
"""


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

    app = FastAPI(
        title="Lifeline collector",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        # Swagger UI is served from the collector's own copy (routes/console.py), so /docs works
        # without the internet; FastAPI's pages would load it, and ReDoc, from a CDN.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    problems.install(app)
    app.add_middleware(RelativeRedirects)
    routers = (
        health,
        alarms,
        events,
        cases,
        reports,
        workorders,
        stats,
        gateways,
        assets,
        readings,
        keys,
        departments,
        webhooks,
        catalog,
    )
    for module in (*routers, open311, metrics, console):
        app.include_router(module.router)
    return app
