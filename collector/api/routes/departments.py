"""The department registry: codes with names. Cases are dispatched to registered departments
only, and a 专业部门 key is scoped to department codes of this registry."""

import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response
from pydantic import BaseModel, Field, field_validator

from lifeline.collector.api.auth import Admin, ScopedReader
from lifeline.collector.api.deps import RuntimeDep, StoreDep
from lifeline.collector.api.schemas import DepartmentOut
from lifeline.collector.departments import CODE_PATTERN, MAX_NAME, check_name
from lifeline.collector.models import Department
from lifeline.collector.store import InUse, NameTaken, Store

router = APIRouter(prefix="/api/v1/departments", tags=["departments"])

Code = Annotated[str, Path(pattern=CODE_PATTERN, description="department code")]


class DepartmentIn(BaseModel):
    """A department's name (unique in the registry)."""

    name: str = Field(min_length=1, max_length=MAX_NAME)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v)


def registry(store: Store) -> dict[str, str]:
    """The registry as code -> name."""
    return {d.code: d.name for d in store.departments()}


def resolve(names: dict[str, str], value: str) -> str:
    """The registered name of a department given by code or by name.

    Raises ValueError (a 422) naming the registry if it is neither.
    """
    if value in names:
        return names[value]
    if value in names.values():
        return value
    known = ", ".join(f"{c} {n}" for c, n in sorted(names.items())) or "none yet"
    raise ValueError(
        f"department {value!r} is not in the department registry (registered: {known});"
        " an admin registers one with PUT /api/v1/departments/{code}"
    )


def department_doc(d: Department) -> dict[str, str]:
    """The JSON form of a registry entry."""
    return {"code": d.code, "name": d.name}


@router.get("", response_model=list[DepartmentOut])
def list_departments(store: StoreDep, reader: ScopedReader) -> list[dict[str, Any]]:
    """Every registered department as {code, name}, by code (reference data: the same for
    every key)."""
    return [department_doc(d) for d in store.departments()]


@router.put("/{code}", response_model=DepartmentOut)
def put_department(
    store: StoreDep, admin: Admin, code: Code, body: DepartmentIn, response: Response
) -> dict[str, Any]:
    """Register a department (201) or rename it (200); 409 if the name is another code's (now
    or before: names are never reused) or any code, or the code is any department's name."""
    try:
        created = store.put_department(code, body.name, int(time.time() * 1000))
    except NameTaken as exc:
        raise HTTPException(409, str(exc)) from None
    response.status_code = 201 if created else 200
    return {"code": code, "name": body.name}


@router.delete("/{code}", status_code=204)
def remove_department(runtime: RuntimeDep, admin: Admin, code: Code) -> Response:
    """Remove a department (admin): 404 if there is none; 409 while the routing table names it
    (cases would go to a department the registry no longer holds), an open case has it as
    主办 or 协办, an open work order names it or an active key is scoped to it (the answer says
    which)."""
    store = runtime.store
    engine = runtime.cases
    names = engine.directory()
    held = names.name(code)
    routed = [k for k, v in engine.routing.named_departments() if held and names.name(v) == held]
    if routed:
        raise HTTPException(
            409,
            f"department {code} ({held}) is named by the routing table ({', '.join(routed)});"
            " name another department there and restart the collector first",
        )
    try:
        found = store.remove_department(code, int(time.time() * 1000))
    except InUse as exc:
        raise HTTPException(409, str(exc)) from None
    if found is None:
        raise HTTPException(404, f"no department {code}")
    return Response(status_code=204)
