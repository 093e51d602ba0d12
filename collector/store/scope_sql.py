"""What a 专业部门 key may see, as SQL: the one place every department-scoped query asks.

A scope is the department names a key is limited to — every name its department codes have
had (collector.cases.duties.scope_names); None elsewhere means no limit. What a
scope sees follows from its cases, as a 数字城管 platform shows a 专业部门 its own work:

- cases whose 主办 or a 协办 is one of its departments;
- work orders (设备运维工单) whose maintainer is one of them;
- alarm occurrences attached to one of those cases or work orders;
- devices (gateway, device) of one of those cases or work orders, or bound to the asset of
  one of those cases (which covers the devices of their alarms); the gateways of those
  devices; the assets of those cases and devices;
- events of all of these.

An empty scope sees nothing. Each function adds its parameters to `params` (named `sc_…`, the
same values each time, so fragments combine in one query) and returns SQL text that holds
placeholders only.

The checks are correlated (`EXISTS` on the row's own key, backed by the indexes of migration
19), so a query costs in proportion to the rows it looks at, not to a department's whole
history: a district keeps a million cases, and an event stream asks once a second. Only rows
of many per device (readings, status changes, device events) look the device up in the set of
devices in scope, made once a query.
"""

# Every fragment here is constant SQL text with placeholders; no value is ever spliced in.
# ruff: noqa: S608

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


def case_is(ref: str, scope: Scope, params: dict[str, Any]) -> str:
    """A condition: the case numbered by the SQL expression `ref` is in scope."""
    cases = case_in(scope, params, "sc_c")
    return f"EXISTS (SELECT 1 FROM cases sc_c WHERE sc_c.case_no = {ref} AND {cases})"


def order_is(ref: str, scope: Scope, params: dict[str, Any]) -> str:
    """A condition: the work order numbered by the SQL expression `ref` is in scope."""
    dept = department_in("sc_o.department", scope, params)
    return f"EXISTS (SELECT 1 FROM work_orders sc_o WHERE sc_o.order_no = {ref} AND {dept})"


def alarm_is(alarm_id: str, scope: Scope, params: dict[str, Any]) -> str:
    """A condition: the alarm whose id is the SQL expression `alarm_id` is attached to a case
    or work order in scope."""
    refs = f"{case_is('sc_l.ref', scope, params)} OR {order_is('sc_l.ref', scope, params)}"
    return f"EXISTS (SELECT 1 FROM alarm_links sc_l WHERE sc_l.alarm_id = {alarm_id} AND ({refs}))"


def device_is(gateway: str, device: str, scope: Scope, params: dict[str, Any]) -> str:
    """A condition: the device named by the SQL expressions `gateway` and `device` is in scope:
    the device of a case or work order in scope, or bound to the asset of a case in scope (an
    alarm attached to a case is of one of these, so its device needs no lookup of its own)."""
    cases = case_in(scope, params, "sc_dc")
    dept = department_in("sc_do.department", scope, params)
    at = f"gateway_id = {gateway} AND {{0}}.device = {device}"
    return (
        f"(EXISTS (SELECT 1 FROM cases sc_dc WHERE sc_dc.{at.format('sc_dc')} AND {cases})"
        f" OR EXISTS (SELECT 1 FROM work_orders sc_do WHERE sc_do.{at.format('sc_do')}"
        f" AND {dept})"
        f" OR EXISTS (SELECT 1 FROM device_assets sc_db JOIN cases sc_dc ON sc_dc.asset ="
        f" sc_db.asset WHERE sc_db.{at.format('sc_db')} AND {cases}))"
    )


def devices(scope: Scope, params: dict[str, Any]) -> str:
    """A subquery of (gateway_id, device) pairs: the announced devices in scope."""
    mine = device_is("sc_d.gateway_id", "sc_d.device", scope, params)
    return f"SELECT sc_d.gateway_id, sc_d.device FROM devices sc_d WHERE {mine}"


def device_in(gateway: str, device: str, scope: Scope, params: dict[str, Any]) -> str:
    """A condition on a row of many per device (readings, status changes): the device named
    by the columns `gateway` and `device` is in scope (the set is computed once a query)."""
    return f"({gateway}, {device}) IN ({devices(scope, params)})"


def gateway_is(gateway: str, scope: Scope, params: dict[str, Any]) -> str:
    """A condition: the gateway named by the SQL expression `gateway` has a device in scope."""
    mine = device_is("sc_g.gateway_id", "sc_g.device", scope, params)
    return f"EXISTS (SELECT 1 FROM devices sc_g WHERE sc_g.gateway_id = {gateway} AND {mine})"


def asset_is(code: str, scope: Scope, params: dict[str, Any]) -> str:
    """A condition: the asset whose code is the SQL expression `code` is the asset of a case in
    scope or is watched by a device in scope."""
    cases = case_in(scope, params, "sc_ac")
    bound = device_is("sc_ab.gateway_id", "sc_ab.device", scope, params)
    return (
        f"(EXISTS (SELECT 1 FROM cases sc_ac WHERE sc_ac.asset = {code} AND {cases})"
        f" OR EXISTS (SELECT 1 FROM device_assets sc_ab WHERE sc_ab.asset = {code} AND {bound}))"
    )


def event_in(alias: str, scope: Scope, params: dict[str, Any]) -> str:
    """A condition on a row of the `events` table, named `alias`: it is about a case, work
    order, alarm, device or gateway in scope (by its type's category and its subject). An
    event of another category is out of scope: a new category stays hidden until it is
    written here."""
    # The patterns travel as parameters: a literal % would be a placeholder to psycopg.
    params.update({f"sc_{c}": f"{c}.%" for c in EVENT_CATEGORIES})
    # Qualified: cases and work orders have a `subject` column of their own.
    t, subject = f"{alias}.type", f"{alias}.subject"
    # A device's subject is `gateway/device`, which no index splits: the set of devices in
    # scope is made once a query (a district has thousands of devices) and looked up.
    devs = f"SELECT s.gateway_id || '/' || s.device FROM ({devices(scope, params)}) s"
    return (
        f"(({t} LIKE :sc_case AND {case_is(subject, scope, params)})"
        f" OR ({t} LIKE :sc_work_order AND {order_is(subject, scope, params)})"
        f" OR ({t} LIKE :sc_alarm AND {alarm_is(subject, scope, params)})"
        f" OR ({t} LIKE :sc_device AND {subject} IN ({devs}))"
        f" OR ({t} LIKE :sc_gateway AND {gateway_is(subject, scope, params)}))"
    )
