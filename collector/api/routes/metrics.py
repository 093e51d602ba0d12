"""Prometheus metrics in the text exposition format."""

from collections.abc import Mapping

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from lifeline.collector.api.auth import Viewer
from lifeline.collector.api.deps import RuntimeDep
from lifeline.collector.api.routes import open311
from lifeline.collector.cases.routing import Outcome
from lifeline.collector.cases.workflow import CaseState
from lifeline.collector.cases.workorders import WorkOrderState

router = APIRouter(tags=["metrics"])

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _metric(
    lines: list[str], name: str, kind: str, help_: str, samples: Mapping[str, float]
) -> None:
    lines.append(f"# HELP {name} {help_}")
    lines.append(f"# TYPE {name} {kind}")
    for labels, value in samples.items():
        lines.append(f"{name}{labels} {value:g}")


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request, runtime: RuntimeDep, key: Viewer) -> PlainTextResponse:
    """Ingest counters, dead letters, event-log lag, open cases, work orders, alarm outcomes,
    SSE clients, webhook failures, HTTP connections refused or timed out, calendar years
    without their 调休 arrangement."""
    store = runtime.store
    lines: list[str] = []
    guard = getattr(request.app.state, "http_guard", None)  # set when served by `collector run`
    if guard is not None:
        _metric(lines, "lifeline_http_refused_total", "counter",
                "connections answered 503 at once: the connection cap was reached",
                {"": guard.refused})  # fmt: skip
        _metric(lines, "lifeline_http_timed_out_total", "counter",
                "connections closed for not sending a whole request in time",
                {"": guard.timed_out})  # fmt: skip
    ingest = runtime.ingest
    if ingest is not None:
        s = ingest.stats
        counters = {
            "lifeline_ingest_messages_total": (s.received, "MQTT messages committed"),
            "lifeline_ingest_batches_total": (s.batches, "database transactions committed"),
            "lifeline_ingest_readings_total": (s.readings, "readings stored"),
            "lifeline_ingest_duplicates_total": (s.duplicates, "redelivered batches ignored"),
            "lifeline_ingest_conflicts_total": (
                s.conflicts,
                "batches whose key was stored before with other content (dead-lettered)",
            ),
            "lifeline_ingest_new_epochs_total": (
                s.new_epochs,
                "known gateways that started a new buffer epoch",
            ),
            "lifeline_ingest_store_errors_total": (
                s.store_errors,
                "failed commits (retried, split or dead-lettered)",
            ),
            "lifeline_ingest_poisoned_total": (
                s.poisoned,
                "messages the database kept refusing (dead-lettered with its reason)",
            ),
            "lifeline_ingest_gateway_conflicts_total": (
                s.gateway_conflicts,
                "claims refused to a gateway (another gateway's alarm id or asset)",
            ),
            "lifeline_ingest_rebirths_requested_total": (
                s.rebirths_requested,
                "retained births answered with a rebirth command",
            ),
        }
        for name, (value, help_) in counters.items():
            _metric(lines, name, "counter", help_, {"": value})
        _metric(
            lines, "lifeline_mqtt_connected", "gauge", "1 when connected", {"": int(s.connected)}
        )
    _metric(
        lines,
        "lifeline_dead_letters",
        "gauge",
        "refused payloads stored",
        {"": store.count_dead_letters()},
    )
    lag = max(runtime.store.last_event_id() - runtime.event_pump.last_id, 0)
    _metric(lines, "lifeline_event_log_lag", "gauge", "events not yet announced", {"": lag})
    _metric(
        lines,
        "lifeline_event_pump_failures_total",
        "counter",
        "failed event-log passes",
        {"": runtime.event_pump.failures},
    )
    by_state = store.count_cases_by_state()
    open_cases = {
        f'{{state="{s.value}"}}': by_state.get(s.value, 0)
        for s in CaseState
        if s not in (CaseState.CLOSED, CaseState.VOIDED)
    }
    _metric(lines, "lifeline_open_cases", "gauge", "open cases by state", open_cases)
    orders = store.count_work_orders_by_state()
    _metric(
        lines,
        "lifeline_work_orders",
        "gauge",
        "device work orders by state",
        {f'{{state="{s.value}"}}': orders.get(s.value, 0) for s in WorkOrderState},
    )
    outcomes = store.count_alarm_outcomes()
    _metric(
        lines,
        "lifeline_alarm_outcomes",
        "gauge",
        "alarm occurrences by where they ended (case, work_order, ignored, recorded)",
        {f'{{outcome="{o.value}"}}': outcomes.get(o.value, 0) for o in Outcome},
    )
    _metric(
        lines,
        "lifeline_sse_clients",
        "gauge",
        "connected event streams",
        {"": runtime.notifier.listeners},
    )
    _metric(
        lines,
        "lifeline_webhook_failures_total",
        "counter",
        "failed delivery attempts since start",
        {"": runtime.webhooks.failures},
    )
    _metric(
        lines,
        "lifeline_open311_reports_refused_total",
        "counter",
        "citizen reports refused over a key's rate limit since start",
        {"": open311.limiter(request).refused},
    )
    _metric(
        lines,
        "lifeline_routing_unregistered_total",
        "counter",
        "cases and work orders routed past a department the registry does not hold since start",
        {"": runtime.cases.unregistered_total},
    )
    _metric(
        lines,
        "lifeline_calendar_unlisted_years",
        "gauge",
        "years due times may reach within 60 days whose 调休 the working calendar does not list",
        {"": len(runtime.calendar_warnings())},
    )
    deliveries = {f'{{status="{k}"}}': v for k, v in store.count_deliveries_by_status().items()}
    _metric(lines, "lifeline_webhook_deliveries", "gauge", "deliveries by status", deliveries)
    return PlainTextResponse("\n".join(lines) + "\n", media_type=CONTENT_TYPE)
