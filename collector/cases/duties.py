"""Separation of duties in the 数字城管 workflow: which role may take which case action, and
which cases a 专业部门 key sees (GB/T 30428.1 assigns 立案/结案 to the 值班长, 派遣 to the 派遣员,
处置 to the 专业部门 and 核查 to the 监督员); and who works a 设备运维工单 (its maintainer).

Pure code over plain values: the HTTP layer asks `may_act` and `in_scope` and turns a refusal
into a 403 (or a 404 for a case outside a department's scope, so its existence does not leak).
The matrix is written out in docs/integration.md and walked by tests/integration/test_duties.py.
"""

from collections.abc import Iterable, Mapping, Sequence

from lifeline.collector.cases.workflow import HOTLINE, INSPECTOR, Action, Case
from lifeline.collector.cases.workorders import WorkOrderAction
from lifeline.collector.models import ApiKey, Role

R = Role

# Who may post each action. `admin` is the technical superuser and may post everything (its
# actions are audited under its own key like anyone's). `viewer` and 领导 post nothing.
CASE_ACTIONS: Mapping[Action, frozenset[Role]] = {
    Action.RECEIVE: frozenset({R.INTAKE}),  # 受理 of a report (a sensor's: the system)
    Action.ACCEPT: frozenset({R.SHIFT_LEAD}),  # 立案 (and classifying a 未分类 case)
    Action.CONFIRM: frozenset({R.INSPECTOR}),  # 核实 of a 公众 report, before its 受理
    Action.VOID: frozenset({R.SHIFT_LEAD}),  # 作废
    Action.DISPATCH: frozenset({R.DISPATCHER}),  # 派遣 and 改派
    Action.START: frozenset({R.DEPARTMENT}),  # 处置
    Action.FEEDBACK: frozenset({R.DEPARTMENT}),  # 反馈
    Action.APPLY: frozenset({R.DEPARTMENT}),  # 申请 延时, 挂账 or 回退
    Action.APPROVE: frozenset({R.DISPATCHER}),  # 批准: the application takes effect
    Action.DENY: frozenset({R.DISPATCHER}),  # 驳回
    Action.RETURN: frozenset({R.DISPATCHER}),  # 回退 (a department applies for it)
    Action.VERIFY: frozenset({R.INTAKE}),  # 受理员 sends a 监督员 to 核查
    Action.CHECK: frozenset({R.INSPECTOR}),  # 核查通过, needed before 结案 (处置完成)
    Action.REJECT: frozenset({R.INSPECTOR}),  # 核查不通过: back to 处置
    Action.CLOSE: frozenset({R.SHIFT_LEAD}),  # 结案 after 核查
    # 挂账 and 延时 take effect only by APPROVE of a department's APPLY (nobody posts them);
    # 解除挂账 is the 派遣员's when the reason for 挂账 is gone.
    Action.UNPARK: frozenset({R.DISPATCHER}),
    Action.ESCALATE: frozenset({R.SHIFT_LEAD}),  # 督办
    Action.REPLY: frozenset({R.DEPARTMENT}),  # 督办回复
}

# Who may 上报 a case (POST /api/v1/cases), with the 案件来源 it gets (not the `reporter` role,
# a citizen app, which posts Open311 requests only: OPEN311_REPORTERS): a 监督员 reports what
# they found in the field, a 受理员 enters a 12345 hotline call. `admin` may post either.
CASE_REPORTERS: Mapping[Role, str] = {R.INSPECTOR: INSPECTOR, R.INTAKE: HOTLINE}

# Actions a 专业部门 key may take only on a case whose 主办 is one of its departments.
SCOPED = frozenset({Action.START, Action.FEEDBACK, Action.APPLY, Action.REPLY})

# What the maintainer of a 设备运维工单 posts: 接单 and 完工 are the maintaining department's own
# work, as 处置 and 反馈 are on a case. A 专业部门 key posts them on the work orders its
# departments maintain; dispatcher and up (the technical ladder) on every work order. Nobody
# posts auto_close (自动恢复): the system records it.
MAINTAINER_ACTIONS = frozenset({WorkOrderAction.ACCEPT, WorkOrderAction.COMPLETE})

ROLE_NAMES: Mapping[Role, str] = {
    R.VIEWER: "只读",
    R.DISPATCHER: "派遣员",
    R.OPERATOR: "运维",
    R.ADMIN: "系统管理员",
    R.INSPECTOR: "监督员",
    R.INTAKE: "受理员",
    R.SHIFT_LEAD: "值班长",
    R.DEPARTMENT: "专业部门",
    R.LEADER: "领导",
    R.REPORTER: "公众上报应用",
}

# Who may post a citizen's report through Open311 (a 公众 case): the citizen app's own key, and
# admin for trials. A 受理员 enters a hotline call as a 12345 case, not as a 公众 one.
OPEN311_REPORTERS = frozenset({R.REPORTER, R.ADMIN})

# Who sees a 公众 reporter's contact (name, phone, email, account): the duties that talk to the
# citizen or act on the report — 受理员 (受理, 回访), 监督员 (核实 and 核查 on site), 值班长,
# 派遣员 — and admin. Not a wall screen (viewer), 领导, 运维 or a 专业部门: personal information
# goes no further than the duty needs (个人信息保护法 §6, minimum necessary).
CONTACT_ROLES = frozenset({R.INTAKE, R.INSPECTOR, R.SHIFT_LEAD, R.DISPATCHER, R.ADMIN})


def roles_for(action: Action) -> frozenset[Role]:
    """Every role that may post `action` (admin included); empty for the system's own."""
    allowed = CASE_ACTIONS.get(action)
    return allowed | {R.ADMIN} if allowed is not None else frozenset()


def may_act(role: Role, action: Action) -> bool:
    """True if a key of `role` may post `action` (before any department scope)."""
    return role in roles_for(action)


def _refuse(what: str, roles: Iterable[Role], key: ApiKey) -> str:
    who = ", ".join(f"{r.value} ({ROLE_NAMES[r]})" for r in sorted(roles))
    role = f"{key.role.value} ({ROLE_NAMES[key.role]})"
    return f"{what} needs one of: {who}; key {key.name!r} is {role}"


def refusal(key: ApiKey, action: Action) -> str:
    """The one-line reason a key may not post `action`."""
    return _refuse(action.value, roles_for(action), key)


def may_report(role: Role) -> bool:
    """True if a key of `role` may 上报 a case (a 监督员, a 受理员 for 12345, or admin)."""
    return role in CASE_REPORTERS or role is R.ADMIN


def report_refusal(key: ApiKey) -> str:
    """The one-line reason a key may not 上报 a case."""
    return _refuse("report (上报)", {*CASE_REPORTERS, R.ADMIN}, key)


def sees_contact(role: Role) -> bool:
    """True if a key of `role` is shown a 公众 reporter's contact fields (CONTACT_ROLES)."""
    return role in CONTACT_ROLES


def may_work(role: Role, action: WorkOrderAction) -> bool:
    """True if a key of `role` may post `action` on a work order (a 专业部门 key: before the
    scope, which limits it to the work orders its departments maintain)."""
    return action in MAINTAINER_ACTIONS and (role is R.DEPARTMENT or role.allows(R.DISPATCHER))


def work_refusal(key: ApiKey, action: WorkOrderAction) -> str:
    """The one-line reason a key may not post `action` on a work order."""
    return (
        f"{action.value} on a work order needs dispatcher, operator or admin, or a department"
        f" key on the work orders its departments maintain; key {key.name!r} is"
        f" {key.role.value} ({ROLE_NAMES[key.role]})"
    )


def scope_names(key: ApiKey, names: Mapping[str, Sequence[str]]) -> frozenset[str] | None:
    """The department names a key is limited to — every name its codes have had (`names`:
    code -> names, as KeyStore.department_names gives them) — or None for a key that sees every
    case. Cases carry department names, never codes, and no name equals a code, so a code is
    not in the scope: a department named like another's code cannot pass for it."""
    if key.role is not R.DEPARTMENT:
        return None
    return frozenset(n for c in key.departments for n in names.get(c, ()))


def in_scope(case: Case, scope: Iterable[str] | None, *, as_lead: bool = False) -> bool:
    """True if a key limited to `scope` (None: unlimited) sees `case`: it is 主办 or, unless
    `as_lead`, 协办."""
    if scope is None:
        return True
    mine = set(scope)
    return case.department in mine or (not as_lead and any(a in mine for a in case.assist))
