// Lifeline live console: plain browser JavaScript, no build step.
// The API key comes from the #key=... fragment or the form and is kept in localStorage.
"use strict";

const LABELS = {
  zh: {
    title: "城市生命线 监测台", apikey: "API 密钥", connect: "连接", connected: "已连接",
    disconnected: "未连接", alarms: "实时告警", cases: "在办案件", status: "网关与设备",
    trend: "趋势", time: "时间", severity: "级别", device: "设备", point: "测点", state: "状态",
    value: "值", message: "说明", case_no: "案件号", subcategory: "小类", case_title: "问题",
    department: "处置部门", deadline: "时限", gateway: "网关", family: "类型",
    status_col: "在线状态", since: "起始", ack: "确认", no_key: "请输入 API 密钥",
    replace_key: "链接中带有另一个 API 密钥。用它替换本机保存的密钥吗？",
    spark_hint: "点击告警或设备查看最近一小时曲线。", no_data: "无数据",
    sev: { 1: "一级", 2: "二级", 3: "三级", 4: "四级" },
    alarm_state: { active_unacked: "报警未确认", active_acked: "报警已确认",
                   cleared_unacked: "已恢复未确认", normal: "正常" },
    online: { online: "在线", offline: "离线", unknown: "未知" },
  },
  en: {
    title: "Lifeline console", apikey: "API key", connect: "Connect", connected: "live",
    disconnected: "offline", alarms: "Live alarms", cases: "Open cases",
    status: "Gateways and devices", trend: "Trend", time: "Time", severity: "Severity",
    device: "Device", point: "Point", state: "State", value: "Value", message: "Message",
    case_no: "Case", subcategory: "Type", case_title: "Problem", department: "Department",
    deadline: "Deadline", gateway: "Gateway", family: "Family", status_col: "Status",
    since: "Since", ack: "Ack", no_key: "Enter an API key",
    replace_key: "The link carries a different API key. Replace the key stored here with it?",
    spark_hint: "Click an alarm or a device to see its last hour.", no_data: "no data",
    sev: { 1: "critical", 2: "high", 3: "medium", 4: "low" },
    alarm_state: { active_unacked: "active, unacked", active_acked: "active, acked",
                   cleared_unacked: "cleared, unacked", normal: "normal" },
    online: { online: "online", offline: "offline", unknown: "unknown" },
  },
};

const state = {
  key: "", lang: localStorage.getItem("lifeline.lang") || "zh",
  alarms: new Map(), cases: [], devices: [], gateways: [], source: null, spark: null,
};
const $ = (sel) => document.querySelector(sel);
const t = (name) => LABELS[state.lang][name];

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function fmtTime(ms) {
  if (ms === null || ms === undefined) return "";
  return new Date(ms).toLocaleString(state.lang === "zh" ? "zh-CN" : "en-GB", { hour12: false });
}

function showError(text) {
  const box = $("#error");
  box.hidden = !text;
  box.textContent = text || "";
}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: `Bearer ${state.key}` }, options.headers || {});
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  if (!resp.ok) {
    let detail = resp.statusText;
    try { detail = (await resp.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new Error(`${resp.status}: ${detail}`);
  }
  return resp.status === 204 ? null : resp.json();
}

// --- alarms ---------------------------------------------------------------------------------

function renderAlarms() {
  const body = $("#alarms tbody");
  body.replaceChildren();
  const rows = [...state.alarms.values()].sort((a, b) => b.state_ms - a.state_ms).slice(0, 200);
  for (const a of rows) {
    const tr = el("tr", null, `clickable sev-${a.severity} state-${a.state}`);
    tr.dataset.alarmId = a.alarm_id;
    tr.dataset.device = a.device;
    tr.dataset.state = a.state;
    tr.append(el("td", fmtTime(a.state_ms)), el("td", t("sev")[a.severity] || a.severity),
      el("td", `${a.gateway}/${a.device}`), el("td", a.point),
      el("td", t("alarm_state")[a.state] || a.state),
      el("td", a.value), el("td", a.message));
    const cell = el("td");
    if (a.state === "active_unacked" || a.state === "cleared_unacked") {
      const button = el("button", t("ack"));
      button.addEventListener("click", (ev) => { ev.stopPropagation(); ack(a.alarm_id); });
      cell.append(button);
    }
    tr.append(cell);
    tr.addEventListener("click", () => sparkline(a.gateway, a.device, a.point));
    body.append(tr);
  }
}

function upsertAlarm(a) {
  // The collector announces an alarm's states in its gateway's order of events, so the last
  // to arrive is the current one, whatever its time stamp (a gateway clock may be wrong).
  // An event carries the time of its state as ts_ms; a listed alarm as state_ms.
  const known = state.alarms.get(a.alarm_id) || {};
  state.alarms.set(a.alarm_id, { ...known, ...a, state_ms: a.state_ms ?? a.ts_ms });
}

async function ack(alarmId) {
  try {
    await api(`/api/v1/alarms/${encodeURIComponent(alarmId)}/ack`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
    });
    showError("");
  } catch (err) { showError(err.message); }
}

// --- cases, gateways, devices ------------------------------------------------------------------

function renderCases() {
  const body = $("#cases tbody");
  body.replaceChildren();
  for (const c of state.cases) {
    const tr = el("tr");
    tr.dataset.caseNo = c.case_no;
    const deadline = c.timed_from_ms ? fmtTime(c.deadline_ms) : "—";
    tr.append(el("td", c.case_no), el("td", c.subcategory), el("td", c.title), el("td", c.state),
      el("td", c.department), el("td", deadline, `colour-${c.colour}`));
    body.append(tr);
  }
}

function renderStatus() {
  const list = $("#gateways");
  list.replaceChildren();
  for (const g of state.gateways) {
    const li = el("li");
    li.append(el("strong", g.gateway), " ",
      el("span", t("online")[g.status] || g.status, `status-${g.status}`),
      ` · ${t("since")} ${fmtTime(g.since_ms)}`);
    list.append(li);
  }
  const body = $("#devices tbody");
  body.replaceChildren();
  for (const d of state.devices) {
    const tr = el("tr", null, "clickable");
    tr.dataset.device = d.device;
    tr.append(el("td", d.device), el("td", d.gateway), el("td", d.family),
      el("td", t("online")[d.status] || d.status, `status-${d.status}`), el("td", fmtTime(d.since_ms)));
    tr.addEventListener("click", () => sparklineForDevice(d.gateway, d.device));
    body.append(tr);
  }
}

let refreshTimer = null;
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, 300);
}

async function refresh() {
  try {
    const [cases, gateways, devices] = await Promise.all([
      api("/api/v1/cases?open_only=true&limit=100"), api("/api/v1/gateways"), api("/api/v1/devices"),
    ]);
    state.cases = cases.items;
    state.gateways = gateways;
    state.devices = devices;
    renderCases();
    renderStatus();
  } catch (err) { showError(err.message); }
}

// --- sparkline ---------------------------------------------------------------------------------

// A device id is unique only within its gateway: every request names both.
async function sparklineForDevice(gateway, device) {
  const q = new URLSearchParams({ gateway, device });
  const latest = await api(`/api/v1/latest?${q}`);
  const numeric = latest.find((r) => typeof r.value === "number");
  if (numeric) sparkline(gateway, device, numeric.point);
}

async function sparkline(gateway, device, point) {
  state.spark = { gateway, device, point };
  const since = Date.now() - 3600 * 1000;
  const q = new URLSearchParams({ gateway, device, point, since: String(since), limit: "2000" });
  const svg = $("#spark");
  svg.replaceChildren();
  $("#spark-title").textContent = `${gateway}/${device}.${point}`;
  try {
    const rows = (await api(`/api/v1/readings?${q}`)).filter((r) => typeof r.value === "number");
    if (rows.length < 2) { $("#spark-range").textContent = t("no_data"); return; }
    const xs = rows.map((r) => r.ts_ms), ys = rows.map((r) => r.value);
    const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
    const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
    const sx = (x) => ((x - x0) / Math.max(x1 - x0, 1)) * 600;
    const sy = (y) => 115 - ((y - y0) / Math.max(y1 - y0, 1e-9)) * 110;
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", rows.map((r) => `${sx(r.ts_ms).toFixed(1)},${sy(r.value).toFixed(1)}`).join(" "));
    svg.append(line);
    $("#spark-range").textContent = `min ${y0.toFixed(2)} · max ${y1.toFixed(2)} · ${rows.length} pts`;
  } catch (err) { showError(err.message); }
}

// --- live stream -------------------------------------------------------------------------------

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
  const onAlarm = (ev) => {
    upsertAlarm(JSON.parse(ev.data).data);
    renderAlarms();
    if (state.spark) sparkline(state.spark.gateway, state.spark.device, state.spark.point);
  };
  for (const type of ["alarm.raised", "alarm.acknowledged", "alarm.cleared", "alarm.normal"]) {
    source.addEventListener(type, onAlarm);
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
  openStream();  // first, so nothing raised while the list loads is missed
  try {
    const page = await api("/api/v1/alarms?limit=100");
    for (const a of page.items) upsertAlarm(a);
    renderAlarms();
  } catch (err) { showError(err.message); }
  refresh();
}

// --- language and key ------------------------------------------------------------------------

function applyLanguage() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  $("#lang").textContent = state.lang === "zh" ? "English" : "中文";
  document.title = t("title");
  renderAlarms();
  renderStatus();
}

function init() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const offered = fragment.get("key");
  if (offered) {
    history.replaceState(null, "", location.pathname);  // keep the key out of the address bar
    const stored = localStorage.getItem("lifeline.key");
    // A link can carry anybody's key: never swap the one in use without the operator's word.
    if (!stored || stored === offered || window.confirm(t("replace_key"))) {
      localStorage.setItem("lifeline.key", offered);
    }
  }
  state.key = localStorage.getItem("lifeline.key") || "";
  $("#key").value = state.key;
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
  applyLanguage();
  start();
}

init();
