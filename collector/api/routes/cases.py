"""City cases: filtered, cursor-paged list; detail with audit trail; workflow actions."""

import time
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field

from collector.api.auth import Dispatcher, Viewer
from collector.api.deps import RuntimeDep, StoreDep
from collector.api.paging import Cursor, Name, PageSize, cursor_int, decode_cursor, encode_cursor
from collector.cases.engine import CaseNotFound
from collector.cases.workflow import Action, Case, CaseState, IllegalTransition, colour
from collector.store import Conflict

router = APIRouter(prefix="/api/v1/cases", tags=["cases"])

CaseNo = Annotated[str, Path(min_length=1, max_length=64)]


class ActionIn(BaseModel):
    """An action on a case: 受理 accept, 派遣 dispatch, 处置 start, 反馈 feedback, 核查 verify,
    结案 close, 延时 extend, 回退 return, 挂账 park/unpark, 作废 void, 督办 escalate, reject."""

    action: Action
    actor: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="who acts, for the audit trail (default: the API key's name)",
    )
    note: str = Field(default="", max_length=2000)
    extend_hours: float = Field(default=0, ge=0, le=24 * 365, description="for 延时 (extend)")


def case_doc(case: Case, now_ms: int) -> dict[str, Any]:
    """The JSON form of a case with its deadline colour now."""
    body = asdict(case)
    body["state"] = case.state.value
    body["colour"] = colour(case, now_ms).value
    return body


def _now_ms() -> int:
    return int(time.time() * 1000)


@router.get("")
def list_cases(
    store: StoreDep,
    key: Viewer,
    state: Annotated[list[CaseState], Query(description="any of these states")] = [],  # noqa: B006 - FastAPI copies defaults
    open_only: bool = False,
    department: Name = None,
    subcategory: Annotated[str | None, Query(pattern=r"^\d{4}$", description="小类")] = None,
    grid: Name = None,
    overdue: Annotated[bool | None, Query(description="deadline passed (red) or not")] = None,
    limit: PageSize = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Cases, newest first, with their deadline colour; `next_cursor` pages on (null: done)."""
    states = {s.value for s in state}
    if open_only:
        finished = {CaseState.CLOSED.value, CaseState.VOIDED.value}
        states = (states or {s.value for s in CaseState}) - finished
        if not states:
            return {"items": [], "next_cursor": None}
    before = None
    if cursor:
        created, case_no = decode_cursor(cursor, 2)
        before = (cursor_int(created), case_no)
    now = _now_ms()
    rows = store.find_cases(
        states=sorted(states),
        department=department,
        subcategory=subcategory,
        grid=grid,
        overdue_at_ms=now if overdue is not None else None,
        overdue=bool(overdue),
        before=before,
        limit=limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [case_doc(c, now) for c in rows],
        "next_cursor": encode_cursor(rows[-1].created_ms, rows[-1].case_no) if more else None,
    }


@router.get("/{case_no}")
def get_case(store: StoreDep, key: Viewer, case_no: CaseNo) -> dict[str, Any]:
    """One case with its audit trail (who, when, from, to, note)."""
    case = store.case(case_no)
    if case is None:
        raise HTTPException(404, f"no case {case_no}")
    body = case_doc(case, _now_ms())
    body["audit"] = [asdict(a) for a in store.audit(case_no)]
    return body


@router.post("/{case_no}/actions")
def act(runtime: RuntimeDep, key: Dispatcher, case_no: CaseNo, body: ActionIn) -> dict[str, Any]:
    """Apply a workflow action (dispatcher or above); 409 with the reason if not allowed now."""
    try:
        case = runtime.cases.act(
            case_no, body.action, body.actor or key.name, body.note, body.extend_hours
        )
    except CaseNotFound:
        raise HTTPException(404, f"no case {case_no}") from None
    except (IllegalTransition, Conflict) as exc:
        raise HTTPException(409, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    runtime.events.kick()
    return case_doc(case, _now_ms())
