"""What a 专业部门 key may see, as SQL: the one place every department-scoped query asks.

A scope is the department values a key is limited to — its department codes and their
registered names (collector.cases.duties.scope_names); None elsewhere means no limit. What a
scope sees follows from its cases, as a 数字城管 platform shows a 专业部门 its own work:

- cases whose 主办 or a 协办 is one of its departments;
- work orders (设备运维工单) whose maintainer is one of them;
- alarm occurrences attached to one of those cases or work orders;
- devices (gateway, device) of one of those cases, work orders or alarms, or bound to the
  asset of one of those cases; the gateways of those devices; the assets of those cases and
  devices;
- events of all of these.

An empty scope sees nothing. Each function adds its parameters to `params` (named `sc_…`, the
same values each time, so fragments combine in one query) and returns SQL text that holds
placeholders only.
"""

import json
import re
from collections.abc import Sequence
from typing import Any

from lifeline.collector.event_types import EVENT_CATEGORIES

Scope = Sequence[str]


def department_in(column: str, scope: Scope, params: dict[str, Any]) -> str:
    """A condition: `column` is one of the scope's departments (FALSE for an empty scope)."""
    names = []
    for i, d in enumerate(scope):
        params[f"sc_d{i}"] = d
        names.append(f":sc_d{i}")
    return f"{column} IN ({', '.join(names)})" if names else "FALSE"


def case_in(scope: Scope, params: dict[str, Any], alias: str = "") -> str:
    """A condition on a `cases` row (named `alias`, if given): its 主办 or a 协办 is in scope."""
    p = f"{alias}." if alias else ""
    ors = [department_in(f"{p}department", scope, params)]
    for i, d in enumerate(scope):
        # 协办 are a JSON list of strings: match one as its quoted JSON form.
        quoted = json.dumps(d, ensure_ascii=False)
        params[f"sc_q{i}"] = "%" + re.sub(r"([\\%_])", r"\\\1", quoted) + "%"
        ors.append(f"{p}assist LIKE :sc_q{i} ESCAPE '\\'")
    return "(" + " OR ".join(ors) + ")"


def case_nos(scope: Scope, params: dict[str, Any]) -> str:
    """A subquery: the numbers of the cases in scope."""
    return f"SELECT case_no FROM cases WHERE {case_in(scope, params)}"  # noqa: S608


def order_nos(scope: Scope, params: dict[str, Any]) -> str:
    """A subquery: the numbers of the work orders in scope."""
    dept = department_in("department", scope, params)
    return f"SELECT order_no FROM work_orders WHERE {dept}"  # noqa: S608


def alarm_ids(scope: Scope, params: dict[str, Any]) -> str:
    """A subquery: the alarm ids attached to a case or work order in scope."""
    refs = f"ref IN ({case_nos(scope, params)}) OR ref IN ({order_nos(scope, params)})"
    return f"SELECT alarm_id FROM alarm_links WHERE {refs}"  # noqa: S608


def devices(scope: Scope, params: dict[str, Any]) -> str:
    """A subquery of (gateway_id, device) pairs: the devices in scope."""
    cases = case_in(scope, params, "c")
    refs = f"l.ref IN ({case_nos(scope, params)}) OR l.ref IN ({order_nos(scope, params)})"
    dept = department_in("o.department", scope, params)
    return (
        "SELECT c.gateway_id, c.device FROM cases c"  # noqa: S608 - placeholders only
        f" WHERE c.gateway_id IS NOT NULL AND c.device IS NOT NULL AND {cases}"
        f" UNION SELECT l.gateway_id, l.device FROM alarm_links l WHERE {refs}"
        f" UNION SELECT o.gateway_id, o.device FROM work_orders o WHERE {dept}"
        " UNION SELECT b.gateway_id, b.device FROM device_assets b"
        f" JOIN cases c ON c.asset = b.asset WHERE {cases}"
    )


def device_in(gateway: str, device: str, scope: Scope, params: dict[str, Any]) -> str:
    """A condition: the device named by the columns `gateway` and `device` is in scope."""
    return f"({gateway}, {device}) IN ({devices(scope, params)})"


def gateway_ids(scope: Scope, params: dict[str, Any]) -> str:
    """A subquery: the gateways of the devices in scope."""
    return f"SELECT s.gateway_id FROM ({devices(scope, params)}) s"  # noqa: S608


def asset_codes(scope: Scope, params: dict[str, Any]) -> str:
    """A subquery: the assets of the cases and devices in scope."""
    return (
        "SELECT asset FROM cases WHERE asset IS NOT NULL"  # noqa: S608 - placeholders only
        f" AND {case_in(scope, params)}"
        " UNION SELECT b.asset FROM device_assets b"
        f" WHERE {device_in('b.gateway_id', 'b.device', scope, params)}"
    )


def event_in(scope: Scope, params: dict[str, Any]) -> str:
    """A condition on an `events` row: it is about a case, work order, alarm, device or
    gateway in scope (by its type's category and its subject). An event of another category
    is out of scope: a new category stays hidden until it is written here."""
    devs = f"SELECT s.gateway_id || '/' || s.device FROM ({devices(scope, params)}) s"  # noqa: S608
    # The patterns travel as parameters: a literal % would be a placeholder to psycopg.
    params.update({f"sc_{c}": f"{c}.%" for c in EVENT_CATEGORIES})
    return (
        f"((type LIKE :sc_case AND subject IN ({case_nos(scope, params)}))"
        f" OR (type LIKE :sc_work_order AND subject IN ({order_nos(scope, params)}))"
        f" OR (type LIKE :sc_alarm AND subject IN ({alarm_ids(scope, params)}))"
        f" OR (type LIKE :sc_device AND subject IN ({devs}))"
        f" OR (type LIKE :sc_gateway AND subject IN ({gateway_ids(scope, params)})))"
    )
