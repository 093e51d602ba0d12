// Lifeline command-center console: plain browser JavaScript, no build step.
// Leaflet (map), uPlot (trend) and gcoord (datum conversion) are the collector's pinned copies.
// The API key comes from the #key=... fragment or the form and is kept in localStorage.
// Everything it holds is bounded (alarm list, chart window) and every timer is created once,
// so the page can stay open for a whole shift.
"use strict";

const LABELS = {
  zh: {
    title: "城市生命线 监测台", apikey: "API 密钥", connect: "连接", connected: "已连接",
    disconnected: "未连接", stats: "统计", map: "一张图", alarms: "告警台", cases: "案件台",
    status: "网关与设备", trend: "趋势", time: "时间", severity: "级别", where: "部件 / 设备",
    value: "测点 / 值", state: "状态", action: "操作", case_no: "案件号", case_title: "问题",
    department: "处置部门", deadline: "剩余时限", ack: "确认", ack_title: "确认告警",
    note: "备注", extend_hours: "延时小时", cancel: "取消", close: "关闭", detail: "详情", no_key: "请输入 API 密钥",
    replace_key: "链接中带有另一个 API 密钥。用它替换本机保存的密钥吗？",
    trend_hint: "点击告警、地图标记或设备查看最近一小时曲线。", no_data: "最近一小时无数据",
    sound_on: "声音：开", sound_off: "声音：关",
    lg_red: "一级", lg_orange: "二级", lg_yellow: "三级", lg_blue: "四级", lg_ok: "正常",
    lg_offline: "离线", lg_case: "在办案件",
    all_sev: "全部级别", all_family: "全部类型", all_grid: "全部网格", all_dept: "全部部门",
    st_opened: "今日立案", st_closed: "今日结案", st_ontime: "按期结案率", st_overdue: "超期案件",
    st_online: "设备在线率", st_per_hour: "近12小时告警/小时", st_overdue_top: "超期部门",
    st_ontime_dept: "按期结案率(部门)", none: "无", overdue: "已超期", no_limit: "未计时",
    role: "角色", alarms_of: "告警", case_of: "案件", latest: "最新值", address: "地址",
    owner: "权属单位", grid: "网格", snapshot: "告警快照", audit: "处理记录",
    who: "操作人", from_to: "状态变化", raised: "发生", limit: "阈值", gateway: "网关",
    online_devices: "台在线", urgency: "紧急程度", created: "立案时间", deadline_at: "处置时限",
    received_by: "受理人", disposal_note: "处置意见", check_result: "核查结果",
    pending: "待批申请", phases: "阶段时限", stage: "阶段", start: "开始",
    due: "时限", end: "结束", phase_state: "情况", on_time: "按期", running: "进行中",
    units: { 工作时: "工作时", 工作日: "工作日", 自然时: "自然时" },
    sev: { 1: "一级", 2: "二级", 3: "三级", 4: "四级" },
    alarm_state: { active_unacked: "报警未确认", active_acked: "报警已确认",
                   cleared_unacked: "已恢复未确认", normal: "正常" },
    online: { online: "在线", offline: "离线", unknown: "未知" },
    roles: { viewer: "只读", dispatcher: "派遣员", operator: "运维", admin: "系统管理员",
             inspector: "监督员", intake: "受理员", shift_lead: "值班长", department: "专业部门",
             leader: "领导" },
    families: { gas: "燃气", manhole: "井盖", streetlight: "路灯", tilt: "倾斜" },
    case_state: { 受理: "受理", 立案: "立案", 派遣: "派遣", 处置: "处置", 反馈: "反馈", 核查: "核查",
                  结案: "结案", 挂账: "挂账", 作废: "作废" },
    actions: { receive: "受理", confirm: "核实", accept: "立案", void: "作废", dispatch: "派遣", start: "开始处置", feedback: "反馈",
               verify: "核查", check: "核查通过", close: "结案", return: "回退", reject: "核查不通过", park: "挂账",
               unpark: "取消挂账", extend: "延时", escalate: "督办", report: "上报", attach: "关联告警",
               upgrade: "升级", rework: "返工", auto_close: "自动恢复结案", apply: "申请",
               apply_extend: "申请延时", apply_park: "申请挂账", apply_return: "申请回退",
               void_误报: "作废:误报", void_重复: "作废:重复", void_非管理范围: "作废:非管理范围",
               void_设备故障: "作废:设备故障", reply: "督办回复",
               approve: "批准申请", deny: "驳回申请" },
    problems: { 400: "请求有误", 401: "API 密钥无效或已吊销", 403: "当前角色无权执行此操作",
                404: "对象不存在", 409: "当前状态下不允许此操作", 422: "参数不符合要求",
                503: "暂时无法送达网关", 0: "无法连接采集服务" },
  },
  en: {
    title: "Lifeline console", apikey: "API key", connect: "Connect", connected: "live",
    disconnected: "offline", stats: "Statistics", map: "City map", alarms: "Alarm desk",
    cases: "Case desk", status: "Gateways and devices", trend: "Trend", time: "Time",
    severity: "Level", where: "Asset / device", value: "Point / value", state: "State",
    action: "Action", case_no: "Case", case_title: "Problem", department: "Department",
    deadline: "Time left", ack: "Ack", ack_title: "Acknowledge alarm", note: "Note",
    extend_hours: "Extension (h)",
    cancel: "Cancel", close: "Close", detail: "Detail", no_key: "Enter an API key",
    replace_key: "The link carries a different API key. Replace the key stored here with it?",
    trend_hint: "Click an alarm, a map marker or a device to see its last hour.",
    no_data: "no data in the last hour", sound_on: "Sound: on", sound_off: "Sound: off",
    lg_red: "critical", lg_orange: "high", lg_yellow: "medium", lg_blue: "low", lg_ok: "normal",
    lg_offline: "offline", lg_case: "open case",
    all_sev: "All severities", all_family: "All families", all_grid: "All grids",
    all_dept: "All departments",
    st_opened: "Registered today", st_closed: "Closed today", st_ontime: "Closed on time",
    st_overdue: "Overdue cases", st_online: "Devices online", st_per_hour: "Alarms/hour, 12 h",
    st_overdue_top: "Overdue by department", st_ontime_dept: "Closed on time by department",
    none: "none",
    overdue: "overdue", no_limit: "not timed", role: "Role", alarms_of: "Alarms",
    case_of: "Case", latest: "Latest values", address: "Address", owner: "Owner", grid: "Grid",
    snapshot: "Alarm snapshot", audit: "Audit trail", who: "Who", from_to: "Change",
    raised: "Raised", limit: "Limit", gateway: "Gateway", online_devices: "online",
    urgency: "Urgency", created: "Opened", deadline_at: "Deadline",
    received_by: "Received by", disposal_note: "Disposal note", check_result: "Check result",
    pending: "Pending application", phases: "Phases", stage: "Stage",
    start: "Start", due: "Due", end: "End", phase_state: "Status", on_time: "on time",
    running: "running", units: { 工作时: "working hours", 工作日: "working days", 自然时: "calendar hours" },
    sev: { 1: "critical", 2: "high", 3: "medium", 4: "low" },
    alarm_state: { active_unacked: "active, unacked", active_acked: "active, acked",
                   cleared_unacked: "cleared, unacked", normal: "normal" },
    online: { online: "online", offline: "offline", unknown: "unknown" },
    roles: { viewer: "viewer", dispatcher: "dispatcher", operator: "operator", admin: "admin",
             inspector: "inspector", intake: "intake", shift_lead: "shift lead",
             department: "department", leader: "leader" },
    families: { gas: "gas", manhole: "manhole", streetlight: "streetlight", tilt: "tilt" },
    case_state: { 受理: "reported", 立案: "registered", 派遣: "dispatched", 处置: "handling",
                  反馈: "feedback", 核查: "verifying", 结案: "closed", 挂账: "parked", 作废: "voided" },
    actions: { receive: "Receive", confirm: "Confirm", accept: "Register", void: "Void", dispatch: "Dispatch", start: "Start",
               feedback: "Feedback", verify: "Verify", check: "Check passed", close: "Close case", return: "Return",
               reject: "Reject", park: "Park", unpark: "Unpark", extend: "Extend",
               escalate: "Escalate", report: "reported", attach: "alarm attached",
               upgrade: "upgraded", rework: "rework", auto_close: "closed, recovered",
               void_误报: "Void: false alarm", void_重复: "Void: duplicate",
               void_非管理范围: "Void: not ours", void_设备故障: "Void: device fault",
               reply: "Reply to supervision",
               apply: "applied", apply_extend: "Apply: extend", apply_park: "Apply: park",
               apply_return: "Apply: return", approve: "Approve", deny: "Deny" },
    problems: { 400: "Bad request", 401: "The API key is invalid or revoked",
                403: "Your role may not do this", 404: "Not found",
                409: "Not allowed in the current state", 422: "The arguments do not fit",
                503: "The gateway cannot be reached now", 0: "Cannot reach the collector" },
  },
};

const MAX_ALARMS = 300;     // rows kept in memory; active ones are never dropped first
const SHOWN_ALARMS = 150;   // rows drawn
const TREND_WINDOW_MS = 3600 * 1000;
const TREND_POINTS = 2000;
const NEW_ALARM_MS = 15000; // how long a new 一级/二级 alarm row stays highlighted
const SEV_COLOUR = { 1: "red", 2: "orange", 3: "yellow", 4: "blue" };

const state = {
  key: "", lang: localStorage.getItem("lifeline.lang") || "zh",
  muted: localStorage.getItem("lifeline.muted") === "1",
  me: null, departments: [], grids: [], alarms: new Map(), fresh: new Map(), cases: [], devices: [], gateways: [],
  assets: new Map(), profiles: new Map(), config: { tiles_url: null, tiles_datum: "CGCS2000" },
  source: null, trend: null, chart: null, openCase: null, ackAlarm: null,
  map: null, layers: null, markers: new Map(), stats: null, framed: false,
};
const $ = (sel) => document.querySelector(sel);
const t = (name) => LABELS[state.lang][name];
const label = (group, key) => (LABELS[state.lang][group] || {})[key] ?? key;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function fmtTime(ms, withDate = false) {
  if (ms === null || ms === undefined) return "";
  const opts = { hour12: false, hour: "2-digit", minute: "2-digit", second: "2-digit" };
  if (withDate) Object.assign(opts, { month: "2-digit", day: "2-digit" });
  return new Date(ms).toLocaleString(state.lang === "zh" ? "zh-CN" : "en-GB", opts);
}

// An axis tick: hours and minutes, and seconds too when the ticks are less than a minute apart.
function fmtClock(ms, splits) {
  const step = splits.length > 1 ? splits[1] - splits[0] : 60;
  const opts = { hour12: false, hour: "2-digit", minute: "2-digit" };
  if (step < 60) opts.second = "2-digit";
  return new Date(ms).toLocaleTimeString(state.lang === "zh" ? "zh-CN" : "en-GB", opts);
}

function fmtLeft(ms) {
  const neg = ms < 0;
  let s = Math.floor(Math.abs(ms) / 1000);
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  const hms = `${String(h).padStart(2, "0")}:${String(m).padStart(2, "0")}:${String(s).padStart(2, "0")}`;
  const text = d > 0 ? `${d}d ${hms}` : hms;
  return neg ? `${t("overdue")} ${text}` : text;
}

function fmtValue(value, unit) {
  if (value === null || value === undefined) return "—";
  const v = typeof value === "number" ? Number(value.toFixed(2)) : value;
  return unit ? `${v} ${unit}` : String(v);
}

function showError(text) {
  const box = $("#error");
  box.hidden = !text;
  box.textContent = text || "";
}

// An API problem in words: the status's meaning in the operator's language, then the detail.
class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
  toString() {
    const words = label("problems", this.status);
    return this.detail ? `${words}：${this.detail}` : words;
  }
}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: `Bearer ${state.key}` }, options.headers || {});
  let resp;
  try {
    resp = await fetch(path, Object.assign({}, options, { headers }));
  } catch (_) {
    throw new ApiError(0, "");
  }
  if (!resp.ok) {
    let detail = "";
    try { detail = (await resp.json()).detail || ""; } catch (_) { /* not JSON */ }
    if (Array.isArray(detail)) detail = detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
    throw new ApiError(resp.status, String(detail));
  }
  return resp.status === 204 ? null : resp.json();
}

function words(err) {
  return err instanceof ApiError ? err.toString() : String(err.message || err);
}

// --- what a device and an asset are ---------------------------------------------------------

const devKey = (gateway, device) => `${gateway}/${device}`;

function deviceOf(gateway, device) {
  return state.devices.find((d) => d.gateway === gateway && d.device === device);
}

function unitOf(gateway, device, point) {
  const d = deviceOf(gateway, device);
  const profile = d && state.profiles.get(d.profile);
  const pt = profile && profile.points.find((p) => p.name === point);
  return (pt && pt.unit) || "";
}

function assetOfAlarm(a) {
  if (a.asset && state.assets.has(a.asset)) return state.assets.get(a.asset);
  const d = deviceOf(a.gateway, a.device);
  return d && d.asset ? state.assets.get(d.asset) : undefined;
}

function departmentOf(asset) {
  return asset ? (asset.maintainer || asset.owner || "") : "";
}

// The point a chart shows for a device: its worst active alarm's point, else the first point
// of its profile with a threshold rule (gas_concentration, not full_scale), else one with a unit.
function mainPoint(gateway, device) {
  const active = [...state.alarms.values()]
    .filter((a) => a.gateway === gateway && a.device === device && a.point !== "_device"
      && a.state.startsWith("active"))
    .sort((a, b) => a.severity - b.severity);
  if (active.length) return active[0].point;
  const d = deviceOf(gateway, device);
  const profile = d && state.profiles.get(d.profile);
  if (!profile) return null;
  const limited = profile.points.find((p) => p.rules.some((r) => r.limit !== null));
  const united = profile.points.find((p) => p.unit);
  return (limited || united || profile.points[0] || {}).name || null;
}

// --- alarm desk ---------------------------------------------------------------------------

const isActive = (a) => a.state === "active_unacked" || a.state === "active_acked";

function alarmOrder(a, b) {
  return (isActive(b) - isActive(a)) || (a.severity - b.severity) || (b.state_ms - a.state_ms);
}

function alarmPasses(a) {
  const sev = $("#f-severity").value, fam = $("#f-family").value;
  const grid = $("#f-grid").value, dept = $("#f-dept").value;
  if (sev && String(a.severity) !== sev) return false;
  const d = deviceOf(a.gateway, a.device);
  if (fam && (!d || d.family !== fam)) return false;
  const asset = assetOfAlarm(a);
  if (grid && (!asset || asset.grid !== grid)) return false;
  if (dept && departmentOf(asset) !== dept && (!asset || asset.owner !== dept)) return false;
  return true;
}

function canAck() {
  return !!(state.me && state.me.acknowledge);
}

function renderAlarms() {
  const body = $("#alarms tbody");
  body.replaceChildren();
  const all = [...state.alarms.values()].sort(alarmOrder);
  const rows = all.filter(alarmPasses).slice(0, SHOWN_ALARMS);
  $("#alarm-count").textContent = `${all.filter(isActive).length} / ${all.length}`;
  const now = Date.now();
  for (const a of rows) {
    const fresh = (state.fresh.get(a.alarm_id) || 0) > now;
    const tr = el("tr", null, `clickable sev-${a.severity} state-${a.state}${fresh ? " fresh" : ""}`);
    tr.dataset.alarmId = a.alarm_id;
    tr.dataset.device = a.device;
    tr.dataset.state = a.state;
    tr.dataset.severity = a.severity;
    const asset = assetOfAlarm(a);
    const sev = el("td", null);
    sev.append(el("span", label("sev", a.severity), `badge c-${SEV_COLOUR[a.severity]}`));
    const where = el("td", null, "where");
    where.append(el("div", asset ? asset.name || asset.code : a.device, "name"));
    const place = asset ? asset.address : (deviceOf(a.gateway, a.device)?.location?.address || "");
    where.append(el("div", `${a.gateway}/${a.device}${place ? " · " + place : ""}`, "sub"));
    where.title = `${asset ? asset.name + " " : ""}${a.gateway}/${a.device} ${place}`;
    const val = el("td", null, "val");
    val.append(el("div", a.point, "sub"),
      el("div", fmtValue(a.value, unitOf(a.gateway, a.device, a.point))));
    val.title = a.message || "";
    const act = el("td");
    if (canAck() && (a.state === "active_unacked" || a.state === "cleared_unacked")) {
      const button = el("button", t("ack"), "ack");
      button.type = "button";
      button.addEventListener("click", (ev) => { ev.stopPropagation(); askAck(a); });
      act.append(button);
    }
    tr.append(sev, el("td", fmtTime(a.state_ms)), where, val,
      el("td", label("alarm_state", a.state)), act);
    tr.addEventListener("click", () => showTrend(a.gateway, a.device, a.point));
    body.append(tr);
  }
}

function upsertAlarm(a) {
  // The collector announces an alarm's states in its gateway's order of events, so the last
  // to arrive is the current one, whatever its time stamp (a gateway clock may be wrong).
  // An event carries the time of its state as ts_ms; a listed alarm as state_ms.
  const known = state.alarms.get(a.alarm_id) || {};
  state.alarms.delete(a.alarm_id);  // re-inserted last: the Map's order is arrival order
  const stateMs = a.state_ms ?? a.ts_ms;
  // An event does not say when the alarm was raised; its first state does.
  const raisedMs = a.raised_ms ?? known.raised_ms ?? stateMs;
  state.alarms.set(a.alarm_id, { ...known, ...a, state_ms: stateMs, raised_ms: raisedMs });
  if (state.alarms.size > MAX_ALARMS) {
    // Drop the oldest finished alarm (normal), else the oldest of any state.
    const victim = [...state.alarms.values()].find((x) => x.state === "normal")
      || state.alarms.values().next().value;
    state.alarms.delete(victim.alarm_id);
    state.fresh.delete(victim.alarm_id);
  }
}

// A short two-tone beep through Web Audio (no sound file to serve); one context for the shift.
let audio = null;
function beep() {
  if (state.muted) return;
  try {
    audio = audio || new AudioContext();
    const now = audio.currentTime;
    for (const [i, freq] of [[0, 880], [1, 660]]) {
      const osc = audio.createOscillator(), gain = audio.createGain();
      osc.frequency.value = freq;
      gain.gain.value = 0.15;
      osc.connect(gain).connect(audio.destination);
      osc.start(now + i * 0.25);
      osc.stop(now + i * 0.25 + 0.2);
    }
  } catch (_) { /* no audio device: the highlight still shows */ }
}

function onAlarmEvent(type, data) {
  const isNew = type === "alarm.raised" && !state.alarms.has(data.alarm_id);
  upsertAlarm(data);
  if (isNew) scheduleStats();
  if (isNew && data.severity <= 2) {
    state.fresh.set(data.alarm_id, Date.now() + NEW_ALARM_MS);
    beep();
  }
  renderAlarms();
  paintMarkers();
  if (state.trend && state.trend.gateway === data.gateway && state.trend.device === data.device) {
    scheduleTrend();
  }
}

function askAck(a) {
  state.ackAlarm = a;
  const asset = assetOfAlarm(a);
  $("#ack-what").textContent = `${label("sev", a.severity)} · ${asset ? asset.name + " · " : ""}`
    + `${a.gateway}/${a.device} · ${a.point} · ${a.message || ""}`;
  $("#ack-note").value = "";
  $("#ack-error").hidden = true;
  $("#ack-dialog").showModal();
  $("#ack-note").focus();
}

async function sendAck() {
  const a = state.ackAlarm;
  if (!a) return;
  try {
    await api(`/api/v1/alarms/${encodeURIComponent(a.alarm_id)}/ack`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ note: $("#ack-note").value.trim() }),
    });
    $("#ack-dialog").close();
    state.ackAlarm = null;
    showError("");
  } catch (err) {
    const box = $("#ack-error");
    box.textContent = words(err);
    box.hidden = false;
  }
}

function fillFilters() {
  const families = [...new Set(state.devices.map((d) => d.family))].sort();
  const grids = [...new Set([...state.assets.values()].map((a) => a.grid).filter(Boolean))].sort();
  const depts = [...new Set([...state.assets.values()].flatMap((a) => [a.owner, a.maintainer])
    .filter(Boolean))].sort();
  const fill = (sel, all, values, name) => {
    const box = $(sel), keep = box.value;
    box.replaceChildren(el("option", t(all)));
    box.firstChild.value = "";
    for (const v of values) {
      const o = el("option", name ? name(v) : v);
      o.value = String(v);
      box.append(o);
    }
    box.value = [...box.options].some((o) => o.value === keep) ? keep : "";
  };
  fill("#f-severity", "all_sev", [1, 2, 3, 4], (v) => label("sev", v));
  fill("#f-family", "all_family", families, (v) => label("families", v));
  fill("#f-grid", "all_grid", grids);
  fill("#f-dept", "all_dept", depts);
  const list = $("#departments");
  const names = state.departments.length ? state.departments : depts;
  list.replaceChildren(...names.map((d) => { const o = el("option"); o.value = d; return o; }));
}

// --- case desk ----------------------------------------------------------------------------

function caseOrder(a, b) {
  const left = (c) => (c.timed_from_ms && c.deadline_ms ? c.deadline_ms : Infinity);
  return left(a) - left(b) || b.created_ms - a.created_ms;
}

function renderCases() {
  const body = $("#cases tbody");
  body.replaceChildren();
  const rows = [...state.cases].sort(caseOrder);
  $("#case-count").textContent = String(rows.length);
  for (const c of rows) {
    const tr = el("tr", null, `clickable light-${c.colour}`);
    tr.dataset.caseNo = c.case_no;
    tr.dataset.colour = c.colour;
    const light = el("td");
    light.append(el("i", null, `dot c-${c.colour === "green" ? "green" : c.colour}`));
    const what = el("td", null, "where");
    what.append(el("div", c.title || c.problem, "name"), el("div", c.subcategory_name || c.kind, "sub"));
    what.title = c.title || c.problem;
    const left = el("td", "", `left colour-${c.colour}`);
    left.dataset.deadline = c.timed_from_ms && c.deadline_ms ? String(c.deadline_ms) : "";
    const act = el("td");
    const open = el("button", t("detail"), "detail");
    open.type = "button";
    open.addEventListener("click", (ev) => { ev.stopPropagation(); openCase(c.case_no); });
    act.append(open);
    const dept = el("td", c.department, "dept");
    dept.title = c.department;
    tr.append(light, el("td", c.case_no, "mono"), what, dept,
      el("td", label("case_state", c.state)), left, act);
    tr.addEventListener("click", () => openCase(c.case_no));
    body.append(tr);
  }
  tickCountdowns();
}

function tickCountdowns() {
  const now = Date.now();
  for (const cell of document.querySelectorAll("#cases td.left")) {
    cell.textContent = cell.dataset.deadline ? fmtLeft(Number(cell.dataset.deadline) - now)
      : t("no_limit");
  }
}

function table(headers, rows) {
  const tbl = el("table", null, "mini");
  const head = el("tr");
  for (const h of headers) head.append(el("th", h));
  tbl.append(el("thead"), el("tbody"));
  tbl.tHead.append(head);
  for (const r of rows) {
    const tr = el("tr");
    for (const cell of r) tr.append(el("td", cell));
    tbl.tBodies[0].append(tr);
  }
  return tbl;
}

async function openCase(caseNo) {
  state.openCase = caseNo;
  $("#case-error").hidden = true;
  $("#case-note").value = "";
  if (!$("#case-dialog").open) $("#case-dialog").showModal();
  await renderCaseDetail();
}

async function renderCaseDetail() {
  const caseNo = state.openCase;
  if (!caseNo) return;
  let c;
  try {
    c = await api(`/api/v1/cases/${encodeURIComponent(caseNo)}`);
  } catch (err) {
    $("#case-error").textContent = words(err);
    $("#case-error").hidden = false;
    return;
  }
  if (state.openCase !== caseNo) return;
  $("#case-title").textContent = `${c.case_no} · ${c.title || c.problem}`;
  const dialog = $("#case-dialog");
  dialog.dataset.caseNo = c.case_no;
  dialog.dataset.state = c.state;
  const body = $("#case-body");
  body.replaceChildren();
  const facts = el("dl", null, "facts");
  const deadline = c.timed_from_ms && c.deadline_ms
    ? `${fmtTime(c.deadline_ms, true)} (${fmtLeft(c.deadline_ms - Date.now())})` : t("no_limit");
  for (const [k, v] of [
    ["state", label("case_state", c.state)], ["department", c.department + (c.assist.length ? ` (+${c.assist.join(", ")})` : "")],
    ["deadline_at", deadline], ["created", fmtTime(c.created_ms, true)], ["urgency", c.urgency],
    ["address", c.location?.address || ""], ["grid", c.grid || ""],
  ]) {
    facts.append(el("dt", t(k)), el("dd", v));
  }
  // The case record (GB/T 30428.1): shown once it has been made.
  const checked = c.check_result ? `${c.check_result}${c.check_note ? `: ${c.check_note}` : ""}` : "";
  for (const [k, v] of [["received_by", c.received_by], ["disposal_note", c.disposal_note], ["check_result", checked]]) {
    if (v) facts.append(el("dt", t(k)), el("dd", v));
  }
  if (c.pending) {
    const hours = c.pending === "extend" ? ` ${c.pending_hours} h` : "";
    facts.append(el("dt", t("pending")), el("dd", `${label("actions", `apply_${c.pending}`)}${hours}`));
  }
  body.append(facts);
  body.append(el("h4", t("snapshot")), table(
    [t("raised"), t("where"), t("value"), t("limit"), t("severity")],
    c.alarms.map((k) => [fmtTime(k.raised_ms, true), `${k.gateway}/${k.device}`, `${k.point} ${fmtValue(k.value, k.unit)}`,
      fmtValue(k.limit, k.unit), label("sev", k.severity)]),
  ));
  body.append(el("h4", t("phases")), table(
    [t("stage"), t("department"), t("start"), t("due"), t("end"), t("phase_state")],
    (c.phases || []).map((p) => [label("case_state", p.stage), p.department,
      fmtTime(p.start_ms, true), p.due_ms ? `${fmtTime(p.due_ms, true)} (${label("units", p.unit)})` : t("no_limit"),
      p.end_ms ? fmtTime(p.end_ms, true) : "—",
      p.overdue ? t("overdue") : p.parked ? label("case_state", "挂账") : p.end_ms ? t("on_time") : t("running")]),
  ));
  const phaseTable = body.lastChild;
  phaseTable.classList.add("phases");
  [...phaseTable.tBodies[0].rows].forEach((row, i) => {
    if (c.phases[i].overdue) row.classList.add("overdue");
  });
  body.append(el("h4", t("audit")), table(
    [t("time"), t("who"), t("from_to"), t("note")],
    (c.audit || []).map((e) => [fmtTime(e.ts_ms, true), e.actor,
      `${label("case_state", e.from_state || "")} → ${label("case_state", e.to_state || "")} (${label("actions", e.action)})`, e.note || ""]),
  ));
  const buttons = $("#case-buttons");
  buttons.replaceChildren();
  // What the workflow allows now and the key's role may post (its department scope is the
  // API's to check: a refusal shows in words).
  const mine = new Set(state.me ? state.me.case_actions : []);
  const allowed = c.actions.filter((a) => mine.has(a));
  $("#case-actions").hidden = allowed.length === 0;
  $("#case-dept").value = "";
  $("#case-dept").placeholder = c.department || "";
  for (const action of allowed) {
    // An application names what it asks for, a void its reason code; a verdict needs one
    // pending.
    const requests = action === "apply" ? ["extend", "park", "return"]
      : action === "void" ? ["误报", "重复", "非管理范围", "设备故障"] : [null];
    if ((action === "approve" || action === "deny") && !c.pending) continue;
    if (action === "reply" && !c.escalations) continue;
    for (const request of requests) {
      const name = request ? `${action}_${request}` : action;
      const b = el("button", label("actions", name), `act act-${action}`);
      b.type = "button";
      b.dataset.action = name;
      b.addEventListener("click", () => caseAction(c.case_no, action, request));
      buttons.append(b);
    }
  }
}

async function caseAction(caseNo, action, request = null) {
  const body = { action, note: $("#case-note").value.trim() };
  if (request && action === "void") body.reason = request;
  else if (request) body.request = request;
  // The hours asked for: the API refuses more than the stage's own limit, in words.
  if (request === "extend") body.extend_hours = Number($("#case-hours").value);
  if (action === "dispatch") {
    const dept = $("#case-dept").value.trim();
    if (dept) body.department = dept;
  }
  try {
    await api(`/api/v1/cases/${encodeURIComponent(caseNo)}/actions`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    $("#case-error").hidden = true;
    $("#case-note").value = "";
    await renderCaseDetail();
    scheduleRefresh();
  } catch (err) {
    $("#case-error").textContent = words(err);
    $("#case-error").hidden = false;
  }
}

// --- statistics wall ------------------------------------------------------------------------

// Today's figures come from 综合评价 (GET /api/v1/stats, the same counts the monthly report
// uses); overdue cases are the open ones past their deadline now; alarms per hour are counted
// over the last 12 hours of alarms.
async function refreshStats() {
  if (!state.key) return;
  try {
    const now = Date.now();
    const midnight = new Date(); midnight.setHours(0, 0, 0, 0);
    const [today, open, online, alarms] = await Promise.all([
      api(`/api/v1/stats?from=${midnight.getTime()}&to=${now + 1}&group_by=department`),
      api("/api/v1/cases?open_only=true&limit=500"),
      api("/api/v1/stats/online-rate?window_h=24"),
      api(`/api/v1/alarms?limit=500&since=${now - 12 * 3600 * 1000}`),
    ]);
    const pct = (rate) => (rate === null || rate === undefined ? null : Math.round(rate * 100));
    const overdue = open.items.filter((c) => c.colour === "red");
    const byDept = new Map();
    for (const c of overdue) byDept.set(c.department, (byDept.get(c.department) || 0) + 1);
    const perHour = new Array(12).fill(0);
    for (const a of alarms.items) {
      const slot = 11 - Math.floor((now - a.raised_ms) / 3600000);
      if (slot >= 0 && slot < 12) perHour[slot] += 1;
    }
    state.stats = {
      opened: today.total.registered,
      closed: today.total.closed,
      ontime: pct(today.total.on_time_closure_rate),
      // the departments with the lowest 按期结案率 today first: where the center looks
      ontimeByDept: today.groups
        .filter((g) => g.on_time_closure_rate !== null && g.key)
        .map((g) => [g.key, pct(g.on_time_closure_rate)])
        .sort((a, b) => a[1] - b[1])
        .slice(0, 3),
      overdue: overdue.length,
      top: [...byDept.entries()].sort((a, b) => b[1] - a[1]).slice(0, 3),
      online: pct(online.online_now_rate),
      onlineOf: `${online.online}/${online.devices}`,
      perHour,
    };
    renderStats();
  } catch (err) { showError(words(err)); }
}

function renderStats() {
  const box = $("#stats");
  box.replaceChildren();
  const s = state.stats;
  if (!s) return;
  const tile = (name, value, sub, cls) => {
    const div = el("div", null, `tile ${cls || ""}`);
    div.dataset.stat = name;
    div.append(el("div", t(name), "k"), el("div", value, "v"));
    if (sub) div.append(el("div", sub, "sub"));
    box.append(div);
  };
  tile("st_opened", s.opened);
  tile("st_closed", s.closed);
  tile("st_ontime", s.ontime === null ? "—" : `${s.ontime}%`);
  tile("st_ontime_dept",
    s.ontimeByDept.length ? s.ontimeByDept.map(([d, n]) => `${d} ${n}%`).join(" · ") : t("none"),
    null, "wide");
  tile("st_overdue", s.overdue, null, s.overdue ? "warn" : "");
  tile("st_overdue_top", s.top.length ? s.top.map(([d, n]) => `${d} ${n}`).join(" · ") : t("none"), null, "wide");
  tile("st_online", s.online === null ? "—" : `${s.online}%`, `${s.onlineOf} ${t("online_devices")}`);
  const bars = el("div", null, "tile bars");
  bars.dataset.stat = "st_per_hour";
  bars.append(el("div", t("st_per_hour"), "k"));
  const row = el("div", null, "barrow");
  const top = Math.max(1, ...s.perHour);
  for (const n of s.perHour) {
    const bar = el("i");
    bar.style.height = `${Math.round((n / top) * 100)}%`;
    bar.title = String(n);
    row.append(bar);
  }
  bars.append(row);
  box.append(bars);
}

// --- map (一张图) -----------------------------------------------------------------------------

const CRS_NAME = { CGCS2000: "WGS84", WGS84: "WGS84", "GCJ-02": "GCJ02", "BD-09": "BD09" };

// Degrees in `datum` -> [lat, lng] in the datum the base layer is drawn in (CGCS2000 and WGS84
// differ by centimetres, so they count as one).
function toMap(lon, lat, datum) {
  const from = CRS_NAME[datum] || "WGS84";
  const to = CRS_NAME[state.config.tiles_datum] || "WGS84";
  if (from === to) return [lat, lon];
  const [x, y] = gcoord.transform([lon, lat], gcoord[from], gcoord[to]);
  return [y, x];
}

function initMap() {
  const map = L.map("map", { zoomControl: true, attributionControl: !!state.config.tiles_url,
    preferCanvas: false });
  if (state.config.tiles_url) {
    L.tileLayer(state.config.tiles_url, { maxZoom: state.config.tiles_max_zoom || 19,
      subdomains: "0123" }).addTo(map);
  }
  state.map = map;
  state.layers = { grids: L.layerGroup().addTo(map), markers: L.layerGroup().addTo(map) };
  map.setView([30.2771, 120.1402], 15);
}

// Map places: every asset with coordinates, and every device with its own install location
// that watches no located asset (a gas detector in a utility tunnel).
function places() {
  const out = [];
  for (const a of state.assets.values()) {
    if (a.lon === null || a.lat === null) continue;
    const devs = state.devices.filter((d) => d.asset === a.code);
    out.push({ id: `asset:${a.code}`, kind: "asset", asset: a, devices: devs,
      at: toMap(a.lon, a.lat, a.datum), name: a.name || a.code, address: a.address });
  }
  for (const d of state.devices) {
    const a = d.asset && state.assets.get(d.asset);
    if ((a && a.lon !== null) || !d.location) continue;
    out.push({ id: `device:${devKey(d.gateway, d.device)}`, kind: "device", asset: null, devices: [d],
      at: toMap(d.location.lon, d.location.lat, d.location.datum), name: d.device,
      address: d.location.address });
  }
  return out;
}

// The 单元网格 registry's polygons (CGCS2000 degrees), or where the collector has none, the
// asset layer's own geometry: each grid drawn as the box around its assets.
function drawGrids(list) {
  state.layers.grids.clearLayers();
  if (state.grids.length) {
    for (const f of state.grids) {
      const polys = f.geometry.type === "Polygon" ? [f.geometry.coordinates] : f.geometry.coordinates;
      const rings = polys.map((poly) => poly.map((ring) => ring.map(([lon, lat]) => toMap(lon, lat, "CGCS2000"))));
      const p = f.properties;
      L.polygon(rings, { className: "grid-cell", weight: 1, fill: true, fillOpacity: 0.04 })
        .bindTooltip(`${p.code} ${p.street} ${p.community}`).addTo(state.layers.grids);
    }
    return;
  }
  const byGrid = new Map();
  for (const p of list) {
    const g = p.asset && p.asset.grid;
    if (!g) continue;
    if (!byGrid.has(g)) byGrid.set(g, []);
    byGrid.get(g).push(p.at);
  }
  for (const [grid, pts] of byGrid) {
    const bounds = L.latLngBounds(pts).pad(0.15);
    L.rectangle(bounds, { className: "grid-cell", weight: 1, fill: true, fillOpacity: 0.04 })
      .bindTooltip(grid, { permanent: false }).addTo(state.layers.grids);
  }
}

function worstAlarm(devs) {
  let worst = null;
  for (const a of state.alarms.values()) {
    if (!isActive(a) || !devs.some((d) => d.gateway === a.gateway && d.device === a.device)) continue;
    if (!worst || a.severity < worst.severity) worst = a;
  }
  return worst;
}

function caseOf(p) {
  return state.cases.find((c) => (p.asset && c.asset === p.asset.code)
    || p.devices.some((d) => c.device === d.device && (!c.gateway || c.gateway === d.gateway)));
}

function paintMarkers() {
  if (!state.map) return;
  for (const [id, m] of state.markers) {
    const p = m.place;
    const worst = worstAlarm(p.devices);
    // Grey: nothing reports from here (its devices offline or unknown, or none bound yet).
    const offline = p.devices.every((d) => d.status !== "online");
    const colour = worst ? SEV_COLOUR[worst.severity] : offline ? "grey" : "green";
    const kase = caseOf(p);
    const path = m.marker.getElement();
    if (!path) continue;
    path.setAttribute("class", `leaflet-interactive mk c-${colour}${kase ? ` case-${kase.colour}` : ""}`);
    path.dataset.colour = colour;
    path.dataset.case = kase ? kase.case_no : "";
    m.marker.setRadius(worst && worst.severity <= 2 ? 11 : 8);
    m.ring.setStyle({ opacity: kase ? 1 : 0 });
    const ringPath = m.ring.getElement();
    if (ringPath) ringPath.setAttribute("class", `ring light-${kase ? kase.colour : "none"}`);
    if (id === state.popupOf) fillPopup(m);
  }
}

function drawMarkers() {
  if (!state.map) return;
  const list = places();
  drawGrids(list);
  state.layers.markers.clearLayers();
  state.markers.clear();
  for (const p of list) {
    const ring = L.circleMarker(p.at, { radius: 15, weight: 3, fill: false, interactive: false });
    const marker = L.circleMarker(p.at, { radius: 8, weight: 2, fillOpacity: 0.9 });
    ring.addTo(state.layers.markers);
    marker.addTo(state.layers.markers);
    const entry = { place: p, marker, ring };
    // Scrolls inside rather than growing past the map's edge, where it would be cut off.
    marker.bindPopup(() => el("div", "…"), { maxWidth: 340, minWidth: 240, maxHeight: 260 });
    marker.on("popupopen", () => { state.popupOf = p.id; fillPopup(entry); });
    marker.on("popupclose", () => { if (state.popupOf === p.id) state.popupOf = null; });
    marker.on("click", () => {
      const d = p.devices[0];
      if (d) showTrend(d.gateway, d.device, mainPoint(d.gateway, d.device));
    });
    marker.getElement().dataset.place = p.id;
    marker.getElement().dataset.name = p.name;
    marker.getElement().dataset.devices = p.devices.map((d) => devKey(d.gateway, d.device)).join(" ");
    state.markers.set(p.id, entry);
  }
  if (!state.framed && list.length) {
    state.map.fitBounds(L.latLngBounds(list.map((p) => p.at)).pad(0.1));
    state.framed = true;
  }
  paintMarkers();
}

async function fillPopup(entry) {
  const p = entry.place;
  const box = el("div", null, "popup");
  box.dataset.place = p.id;
  box.append(el("strong", p.name), el("div", `${t("address")}：${p.address || "—"}`, "sub"));
  if (p.asset) box.append(el("div", `${t("owner")}：${p.asset.owner}`, "sub"));
  const latest = el("div", null, "latest");
  box.append(el("h4", t("latest")), latest);
  const alarms = [...state.alarms.values()].filter((a) => isActive(a)
    && p.devices.some((d) => d.gateway === a.gateway && d.device === a.device));
  box.append(el("h4", t("alarms_of")));
  if (!alarms.length) box.append(el("div", t("none"), "sub"));
  for (const a of alarms.sort(alarmOrder)) {
    box.append(el("div", `${label("sev", a.severity)} · ${a.device}.${a.point} `
      + `${fmtValue(a.value, unitOf(a.gateway, a.device, a.point))} · ${a.message || ""}`, `al c-${SEV_COLOUR[a.severity]}`));
  }
  const kase = caseOf(p);
  box.append(el("h4", t("case_of")));
  if (kase) {
    const link = el("button", `${kase.case_no} · ${label("case_state", kase.state)}`
      + (kase.deadline_ms && kase.timed_from_ms ? ` · ${fmtLeft(kase.deadline_ms - Date.now())}` : ""),
      `caselink light-${kase.colour}`);
    link.type = "button";
    link.addEventListener("click", () => openCase(kase.case_no));
    box.append(link);
  } else {
    box.append(el("div", t("none"), "sub"));
  }
  entry.marker.setPopupContent(box);
  for (const d of p.devices) {
    try {
      const rows = await api(`/api/v1/latest?${new URLSearchParams({ gateway: d.gateway, device: d.device })}`);
      const line = el("div", null, "dev");
      line.append(el("span", `${d.device} · ${label("online", d.status)}`, `status-${d.status}`));
      for (const r of rows.filter((r) => r.point !== "_device").slice(0, 6)) {
        line.append(el("div", `${r.point} = ${fmtValue(r.value, unitOf(d.gateway, d.device, r.point))}`, "sub"));
      }
      latest.append(line);
    } catch (err) { latest.append(el("div", words(err), "error")); }
  }
  // Lay the grown popup out again: it scrolls past maxHeight and pans into the map's view.
  if (entry.marker.isPopupOpen()) entry.marker.getPopup().update();
}

// --- trend (uPlot) ----------------------------------------------------------------------------

let trendTimer = null;
function scheduleTrend() {
  clearTimeout(trendTimer);
  trendTimer = setTimeout(() => state.trend && drawTrend(), 500);
}

function showTrend(gateway, device, point) {
  if (!point) return;
  state.trend = { gateway, device, point };
  drawTrend();
}

async function drawTrend() {
  const asked = state.trend;
  const { gateway, device, point } = asked;
  const unit = unitOf(gateway, device, point);
  const asset = assetOfAlarm({ gateway, device });
  $("#trend-title").textContent = `${asset ? asset.name + " · " : ""}${gateway}/${device} · ${point}${unit ? ` (${unit})` : ""}`;
  const now = Date.now();
  const q = new URLSearchParams({ gateway, device, point, since: String(now - TREND_WINDOW_MS),
    limit: String(TREND_POINTS), order: "desc" });
  let rows;
  try {
    rows = (await api(`/api/v1/readings?${q}`)).filter((r) => typeof r.value === "number").reverse();
  } catch (err) { showError(words(err)); return; }
  if (state.trend !== asked) return;  // another device was clicked meanwhile
  const box = $("#trend");
  if (state.chart) { state.chart.destroy(); state.chart = null; }
  box.replaceChildren();
  box.dataset.point = point;
  box.dataset.points = String(rows.length);
  $("#trend-hint").textContent = rows.length ? "" : t("no_data");
  if (!rows.length) return;
  // Limits: the profile's defaults, replaced by what an alarm of this point says is in force.
  const d = deviceOf(gateway, device);
  const profile = d && state.profiles.get(d.profile);
  const pt = profile && profile.points.find((p) => p.name === point);
  const limits = new Map();
  for (const r of (pt ? pt.rules : [])) {
    if (r.limit !== null && ["hi", "hihi", "lo", "lolo"].includes(r.alarm_type)) limits.set(r.alarm_type, { limit: r.limit, severity: r.severity });
  }
  const events = [];
  for (const a of state.alarms.values()) {
    if (a.gateway !== gateway || a.device !== device || a.point !== point) continue;
    if (typeof a.limit === "number" && limits.has(a.alarm_type)) limits.get(a.alarm_type).limit = a.limit;
    if (a.raised_ms >= now - TREND_WINDOW_MS) events.push(a);
  }
  const xs = rows.map((r) => r.ts_ms / 1000);
  const data = [xs, rows.map((r) => r.value)];
  const series = [{}, { label: `${point}${unit ? ` (${unit})` : ""}`, stroke: "#1565c0", width: 1.5 }];
  for (const [type, l] of limits) {
    data.push(xs.map(() => l.limit));
    series.push({ label: `${type} ${l.limit}${unit ? " " + unit : ""}`, stroke: colourHex(SEV_COLOUR[l.severity]),
      dash: [6, 4], width: 1, points: { show: false } });
  }
  box.dataset.limits = [...limits.values()].map((l) => l.limit).join(",");
  box.dataset.events = String(events.length);
  const marks = {
    hooks: {
      draw: [(u) => {
        const ctx = u.ctx;
        ctx.save();
        for (const a of events) {
          const x = u.valToPos(a.raised_ms / 1000, "x", true);
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
          ctx.strokeStyle = colourHex(SEV_COLOUR[a.severity]);
          ctx.lineWidth = 2;
          ctx.beginPath();
          ctx.moveTo(x, u.bbox.top);
          ctx.lineTo(x, u.bbox.top + u.bbox.height);
          ctx.stroke();
        }
        ctx.restore();
      }],
    },
  };
  const width = Math.max(300, box.clientWidth - 4);
  state.chart = new uPlot({
    width, height: 190, series, plugins: [marks],
    scales: { x: { time: true } },
    // Clock times in the page's language (uPlot's own ticks say "3:47pm").
    axes: [{ space: 80, values: (u, splits) => splits.map((v) => fmtClock(v * 1000, splits)) },
      { label: unit, size: 60 }],
    legend: { live: false },
  }, data, box);
}

function colourHex(name) {
  return { red: "#d0021b", orange: "#f5a623", yellow: "#d4b106", blue: "#4a90e2" }[name] || "#888";
}

// --- devices, cases, gateways: reloaded on their events -----------------------------------------

function renderStatus() {
  const list = $("#gateways");
  list.replaceChildren();
  for (const g of state.gateways) {
    const li = el("li");
    const devs = state.devices.filter((d) => d.gateway === g.gateway);
    li.append(el("strong", g.gateway), " ",
      el("span", label("online", g.status), `status-${g.status}`),
      ` · ${devs.filter((d) => d.status === "online").length}/${devs.length} ${t("online_devices")}`);
    const chips = el("div", null, "chips");
    for (const d of devs) {
      const chip = el("button", d.device, `chip status-${d.status}`);
      chip.type = "button";
      chip.dataset.device = d.device;
      chip.title = `${label("families", d.family)} · ${label("online", d.status)}`;
      chip.addEventListener("click", () => showTrend(d.gateway, d.device, mainPoint(d.gateway, d.device)));
      chips.append(chip);
    }
    li.append(chips);
    list.append(li);
  }
}

let refreshTimer = null, statsTimer = null;
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, 300);
  scheduleStats();
}

// The statistics follow cases and alarms, at most once every few seconds during a burst.
function scheduleStats() {
  if (statsTimer === null) statsTimer = setTimeout(() => { statsTimer = null; refreshStats(); }, 3000);
}

async function refresh() {
  try {
    const [cases, gateways, devices, assets, departments] = await Promise.all([
      api("/api/v1/cases?open_only=true&limit=200"), api("/api/v1/gateways"),
      api("/api/v1/devices"), api("/api/v1/assets"), api("/api/v1/departments"),
    ]);
    state.departments = departments.map((d) => d.name);
    state.cases = cases.items;
    state.gateways = gateways;
    const known = new Set(state.devices.map((d) => devKey(d.gateway, d.device)));
    const changedSet = devices.length !== state.devices.length
      || devices.some((d) => !known.has(devKey(d.gateway, d.device)))
      || assets.length !== state.assets.size;
    state.devices = devices;
    state.assets = new Map(assets.map((a) => [a.code, a]));
    fillFilters();
    renderCases();
    renderStatus();
    renderAlarms();
    if (changedSet || state.markers.size === 0) drawMarkers(); else paintMarkers();
    if (state.openCase && $("#case-dialog").open) renderCaseDetail();
  } catch (err) { showError(words(err)); }
}

// --- live stream ------------------------------------------------------------------------------

function setConn(on) {
  const badge = $("#conn");
  badge.className = `conn ${on ? "on" : "off"}`;
  badge.dataset.i18n = on ? "connected" : "disconnected";
  badge.textContent = t(badge.dataset.i18n);
}

function openStream() {
  if (state.source) state.source.close();
  // EventSource cannot send headers, so the key goes in the query (the stream endpoint only).
  // It resumes by itself with Last-Event-ID after a network drop.
  const source = new EventSource(`/api/v1/events/stream?api_key=${encodeURIComponent(state.key)}`);
  state.source = source;
  source.onopen = () => setConn(true);
  source.onerror = () => setConn(false);
  for (const type of ["alarm.raised", "alarm.acknowledged", "alarm.cleared", "alarm.normal"]) {
    source.addEventListener(type, (ev) => onAlarmEvent(type, JSON.parse(ev.data).data));
  }
  for (const type of ["case.opened", "case.transition", "case.upgraded", "case.reworked",
    "gateway.online", "gateway.offline", "gateway.unknown", "device.online", "device.offline",
    "device.unknown"]) {
    source.addEventListener(type, scheduleRefresh);
  }
}

async function start() {
  if (!state.key) { showError(t("no_key")); return; }
  showError("");
  try {
    state.me = await api("/api/v1/me");
  } catch (err) { showError(words(err)); return; }
  $("#who").textContent = `${state.me.name} · ${label("roles", state.me.role)}`;
  try {
    const [profiles, grids] = await Promise.all([api("/api/v1/profiles"), api("/api/v1/grids")]);
    state.profiles = new Map(profiles.map((p) => [p.name, p]));
    state.grids = grids.features;
    state.markers.clear();  // drawn again with the grids below
  } catch (err) { showError(words(err)); }
  openStream();  // before the lists load, so nothing raised meanwhile is missed
  try {
    const page = await api("/api/v1/alarms?limit=200");
    for (const a of page.items.reverse()) upsertAlarm(a);
  } catch (err) { showError(words(err)); }
  await refresh();
  refreshStats();
  // Until the operator picks one, the trend shows the most severe active alarm's point.
  const top = [...state.alarms.values()].filter((a) => isActive(a) && a.point !== "_device")
    .sort(alarmOrder)[0];
  if (!state.trend && top) showTrend(top.gateway, top.device, top.point);
}

// --- language, sound, key and the page's timers --------------------------------------------

function applyLanguage() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  $("#lang").textContent = state.lang === "zh" ? "English" : "中文";
  $("#mute").textContent = t(state.muted ? "sound_off" : "sound_on");
  document.title = t("title");
  if (state.me) $("#who").textContent = `${state.me.name} · ${label("roles", state.me.role)}`;
  fillFilters();
  renderAlarms();
  renderCases();
  renderStatus();
  renderStats();
  if (state.openCase && $("#case-dialog").open) renderCaseDetail();
  if (state.popupOf && state.markers.has(state.popupOf)) fillPopup(state.markers.get(state.popupOf));
}

function tick() {
  $("#clock").textContent = fmtTime(Date.now(), true);
  tickCountdowns();
  // A highlight ends by itself: re-draw when one has run out.
  const now = Date.now();
  let expired = false;
  for (const [id, until] of state.fresh) if (until <= now) { state.fresh.delete(id); expired = true; }
  if (expired) renderAlarms();
}

// A #key=... link: its key is stored, but replaces another stored one only if the operator
// says so (a link can carry anybody's key). True if the key in use changed.
function takeKeyFromLink() {
  const offered = new URLSearchParams(location.hash.slice(1)).get("key");
  if (!offered) return false;
  history.replaceState(null, "", location.pathname);  // keep the key out of the address bar
  const stored = localStorage.getItem("lifeline.key");
  if (stored === offered) return false;
  if (stored && !window.confirm(t("replace_key"))) return false;
  localStorage.setItem("lifeline.key", offered);
  return true;
}

async function init() {
  takeKeyFromLink();
  state.key = localStorage.getItem("lifeline.key") || "";
  $("#key").value = state.key;
  // The same link opened in a tab already showing the console changes only the fragment.
  window.addEventListener("hashchange", () => {
    if (!takeKeyFromLink()) return;
    state.key = localStorage.getItem("lifeline.key");
    $("#key").value = state.key;
    start();
  });
  $("#keyform").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.key = $("#key").value.trim();
    localStorage.setItem("lifeline.key", state.key);
    start();
  });
  $("#lang").addEventListener("click", () => {
    state.lang = state.lang === "zh" ? "en" : "zh";
    localStorage.setItem("lifeline.lang", state.lang);
    applyLanguage();
  });
  $("#mute").addEventListener("click", () => {
    state.muted = !state.muted;
    localStorage.setItem("lifeline.muted", state.muted ? "1" : "0");
    $("#mute").textContent = t(state.muted ? "sound_off" : "sound_on");
  });
  for (const id of ["#f-severity", "#f-family", "#f-grid", "#f-dept"]) {
    $(id).addEventListener("change", renderAlarms);
  }
  $("#ack-form").addEventListener("submit", (ev) => { ev.preventDefault(); sendAck(); });
  $("#ack-cancel").addEventListener("click", () => $("#ack-dialog").close());
  $("#case-close").addEventListener("click", () => $("#case-dialog").close());
  $("#case-dialog").addEventListener("close", () => {
    state.openCase = null;
    $("#case-body").replaceChildren();
    $("#case-buttons").replaceChildren();
  });
  try {
    state.config = await (await fetch("/console/config.json")).json();
  } catch (_) { /* the default: the city's own geometry */ }
  initMap();
  applyLanguage();
  // The page's only timers, each made once: the clock and countdowns, the statistics, and
  // the trend's newest window (a quiet point still moves on).
  tick();
  setInterval(tick, 1000);
  setInterval(refreshStats, 60000);
  setInterval(() => state.trend && drawTrend(), 30000);
  start();
}

init();
