"""City cases: list, detail with audit trail and deadline colour, operator actions."""

import time
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from collector.api.deps import RuntimeDep, StoreDep
from collector.cases.engine import CaseNotFound
from collector.cases.workflow import Action, Case, IllegalTransition, colour
from collector.store import Conflict

router = APIRouter(prefix="/api/v1/cases", tags=["cases"])


class ActionIn(BaseModel):
    """An operator action on a case."""

    action: Action
    actor: str = Field(min_length=1, description="who acts (recorded in the audit trail)")
    note: str = ""
    extend_hours: float = Field(default=0, ge=0, description="for 延时 (extend)")


def _out(case: Case) -> dict[str, Any]:
    body = asdict(case)
    body["state"] = case.state.value
    body["colour"] = colour(case, int(time.time() * 1000)).value
    return body


@router.get("")
def list_cases(store: StoreDep, open_only: bool = False) -> list[dict[str, Any]]:
    """Cases, newest first, with their deadline colour."""
    return [_out(c) for c in store.cases(open_only=open_only)]


@router.get("/{case_no}")
def get_case(store: StoreDep, case_no: str) -> dict[str, Any]:
    """One case with its audit trail."""
    case = store.case(case_no)
    if case is None:
        raise HTTPException(404, f"no case {case_no}")
    body = _out(case)
    body["audit"] = [asdict(a) for a in store.audit(case_no)]
    return body


@router.post("/{case_no}/actions")
def act(runtime: RuntimeDep, case_no: str, body: ActionIn) -> dict[str, Any]:
    """Apply a workflow action; 409 with the reason if the workflow does not allow it."""
    try:
        case = runtime.cases.act(case_no, body.action, body.actor, body.note, body.extend_hours)
    except CaseNotFound:
        raise HTTPException(404, f"no case {case_no}") from None
    except (IllegalTransition, Conflict) as exc:
        raise HTTPException(409, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return _out(case)
