"""Versioned schema migrations shared by the SQL backends (readings are backend-specific)."""

from dataclasses import dataclass

# {id} is an auto-increment primary key, {blob} a byte string column.
_CORE = """
CREATE TABLE IF NOT EXISTS ingest_keys (
    gateway_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (gateway_id, seq)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id {id},
    topic TEXT NOT NULL,
    payload {blob} NOT NULL,
    reason TEXT NOT NULL,
    received_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS gateways (
    gateway_id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    status TEXT NOT NULL,
    since_ms BIGINT NOT NULL,
    session TEXT NOT NULL,
    software TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    reason TEXT NOT NULL,
    counters TEXT NOT NULL,
    counters_ms BIGINT
);
CREATE TABLE IF NOT EXISTS devices (
    device TEXT PRIMARY KEY,
    gateway_id TEXT NOT NULL,
    profile TEXT NOT NULL,
    family TEXT NOT NULL,
    status TEXT NOT NULL,
    since_ms BIGINT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS devices_gateway ON devices (gateway_id);
CREATE TABLE IF NOT EXISTS status_log (
    id {id},
    entity TEXT NOT NULL,
    ident TEXT NOT NULL,
    status TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS status_log_ident ON status_log (entity, ident, ts_ms);
CREATE TABLE IF NOT EXISTS alarm_events (
    id {id},
    gateway_id TEXT NOT NULL,
    device TEXT NOT NULL,
    point TEXT NOT NULL,
    alarm_type TEXT NOT NULL,
    alarm_id TEXT NOT NULL,
    severity INTEGER NOT NULL,
    state TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    value TEXT NOT NULL,
    limit_value TEXT NOT NULL,
    message TEXT NOT NULL,
    ack_by TEXT,
    ack_note TEXT,
    historical BOOLEAN NOT NULL,
    handled BOOLEAN NOT NULL
);
CREATE INDEX IF NOT EXISTS alarm_events_pending ON alarm_events (id) WHERE NOT handled;
CREATE TABLE IF NOT EXISTS alarms (
    gateway_id TEXT NOT NULL,
    device TEXT NOT NULL,
    point TEXT NOT NULL,
    alarm_type TEXT NOT NULL,
    alarm_id TEXT NOT NULL,
    severity INTEGER NOT NULL,
    state TEXT NOT NULL,
    count INTEGER NOT NULL,
    first_ms BIGINT NOT NULL,
    last_ms BIGINT NOT NULL,
    state_ms BIGINT NOT NULL,
    value TEXT NOT NULL,
    limit_value TEXT NOT NULL,
    message TEXT NOT NULL,
    ack_by TEXT,
    ack_note TEXT,
    PRIMARY KEY (gateway_id, device, point, alarm_type)
);
CREATE TABLE IF NOT EXISTS command_replies (
    gateway_id TEXT NOT NULL,
    command_id TEXT NOT NULL,
    ok BOOLEAN NOT NULL,
    result TEXT NOT NULL,
    error TEXT NOT NULL,
    sent_ms BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (gateway_id, command_id)
);
CREATE TABLE IF NOT EXISTS assets (
    code TEXT PRIMARY KEY,
    subcategory TEXT NOT NULL,
    owner TEXT NOT NULL,
    maintainer TEXT NOT NULL,
    grid TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS device_assets (
    device TEXT PRIMARY KEY,
    asset TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS case_serials (
    prefix TEXT PRIMARY KEY,
    last INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cases (
    case_no TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    subcategory TEXT NOT NULL,
    problem TEXT NOT NULL,
    asset TEXT,
    device TEXT,
    subject TEXT NOT NULL,
    state TEXT NOT NULL,
    urgency TEXT NOT NULL,
    department TEXT NOT NULL,
    grid TEXT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    deadline_ms BIGINT,
    timed_from_ms BIGINT,
    repeats INTEGER NOT NULL,
    escalations INTEGER NOT NULL,
    title TEXT NOT NULL
);
-- One open case per (asset or device, problem): repeats attach to it.
CREATE UNIQUE INDEX IF NOT EXISTS cases_one_open ON cases (subject, problem)
    WHERE state NOT IN ('结案', '作废');
CREATE TABLE IF NOT EXISTS case_audit (
    id {id},
    case_no TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    note TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS case_audit_case ON case_audit (case_no, id);
CREATE TABLE IF NOT EXISTS case_alarms (
    case_no TEXT NOT NULL,
    alarm_event_id BIGINT NOT NULL
);
"""

# Version 3: the command-center API. The pump copies alarm events, status changes and case
# audits (flagged `evented` once copied) into one `events` log whose id is the SSE/webhook id.
_API = """
CREATE TABLE IF NOT EXISTS api_keys (
    id {id},
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    revoked_ms BIGINT
);
CREATE TABLE IF NOT EXISTS events (
    id {id},
    type TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    subject TEXT NOT NULL,
    data TEXT NOT NULL
);
-- One row whose update serializes event pumps, so event ids commit in id order.
CREATE TABLE IF NOT EXISTS event_pump (
    id INTEGER PRIMARY KEY,
    passes BIGINT NOT NULL
);
INSERT INTO event_pump (id, passes) VALUES (1, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS alarm_index (
    id {id},
    alarm_id TEXT NOT NULL UNIQUE,
    gateway_id TEXT NOT NULL,
    device TEXT NOT NULL,
    point TEXT NOT NULL,
    alarm_type TEXT NOT NULL,
    severity INTEGER NOT NULL,
    state TEXT NOT NULL,
    raised_ms BIGINT NOT NULL,
    state_ms BIGINT NOT NULL,
    value TEXT NOT NULL,
    limit_value TEXT NOT NULL,
    message TEXT NOT NULL,
    ack_by TEXT,
    ack_note TEXT
);
CREATE INDEX IF NOT EXISTS alarm_index_device ON alarm_index (device, id);
CREATE TABLE IF NOT EXISTS webhooks (
    id {id},
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    description TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    cursor BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id {id},
    webhook_id BIGINT NOT NULL,
    event_id BIGINT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_ms BIGINT NOT NULL,
    response_code INTEGER,
    error TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_ms)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_hook ON webhook_deliveries (webhook_id, id);
ALTER TABLE alarm_events ADD COLUMN evented BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX IF NOT EXISTS alarm_events_unevented ON alarm_events (id) WHERE NOT evented;
ALTER TABLE status_log ADD COLUMN evented BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX IF NOT EXISTS status_log_unevented ON status_log (id) WHERE NOT evented;
ALTER TABLE case_audit ADD COLUMN evented BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX IF NOT EXISTS case_audit_unevented ON case_audit (id) WHERE NOT evented
"""

# Version 4: batches keyed (gateway, epoch, seq), so a gateway whose buffer was replaced (and
# numbers from 1 again) is not taken for a stream of duplicates; the payload digest tells a
# redelivery from a different batch under a key already seen. Keys from before carry epoch ''.
_EPOCHS = """
CREATE TABLE IF NOT EXISTS batch_keys (
    gateway_id TEXT NOT NULL,
    epoch TEXT NOT NULL,
    seq BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    digest {blob},
    PRIMARY KEY (gateway_id, epoch, seq)
);
INSERT INTO batch_keys (gateway_id, epoch, seq, received_ms, digest)
    SELECT gateway_id, '', seq, received_ms, NULL FROM ingest_keys;
DROP TABLE ingest_keys;
CREATE TABLE IF NOT EXISTS gateway_epochs (
    gateway_id TEXT NOT NULL,
    epoch TEXT NOT NULL,
    first_ms BIGINT NOT NULL,
    PRIMARY KEY (gateway_id, epoch)
)
"""

# Version 5: state follows the gateway's order of events, not the largest timestamp seen.
# A position is (rank of the buffer epoch = when this collector first saw it, seq of the batch,
# index in the batch); a birth's alarm picture and device states sit after every event of its
# high-water batch. Times are stored as sent; `received_ms` beside one says it was implausible
# (before the software was built, or too far ahead of the collector) and when it arrived.
_ORDER = """
ALTER TABLE alarm_events ADD COLUMN pos_rank BIGINT;
ALTER TABLE alarm_events ADD COLUMN pos_seq BIGINT;
ALTER TABLE alarm_events ADD COLUMN pos_idx BIGINT;
ALTER TABLE alarm_events ADD COLUMN received_ms BIGINT;
ALTER TABLE alarm_events ADD COLUMN origin TEXT NOT NULL DEFAULT 'gateway';
ALTER TABLE alarms ADD COLUMN pos_rank BIGINT;
ALTER TABLE alarms ADD COLUMN pos_seq BIGINT;
ALTER TABLE alarms ADD COLUMN pos_idx BIGINT;
ALTER TABLE alarm_index ADD COLUMN pos_rank BIGINT;
ALTER TABLE alarm_index ADD COLUMN pos_seq BIGINT;
ALTER TABLE alarm_index ADD COLUMN pos_idx BIGINT;
ALTER TABLE alarm_index ADD COLUMN received_ms BIGINT;
ALTER TABLE devices ADD COLUMN pos_rank BIGINT;
ALTER TABLE devices ADD COLUMN pos_seq BIGINT;
ALTER TABLE devices ADD COLUMN pos_idx BIGINT;
ALTER TABLE status_log ADD COLUMN received_ms BIGINT;
ALTER TABLE gateways ADD COLUMN birth_rank BIGINT;
ALTER TABLE gateways ADD COLUMN birth_seq BIGINT;
ALTER TABLE gateways ADD COLUMN birth_sent_ms BIGINT;
ALTER TABLE gateways ADD COLUMN birth_received_ms BIGINT;
ALTER TABLE gateways ADD COLUMN clock_plausible BOOLEAN;
ALTER TABLE gateways ADD COLUMN clock_step_ms BIGINT;
ALTER TABLE gateways ADD COLUMN clock_step_at_ms BIGINT;
ALTER TABLE readings ADD COLUMN received_ms BIGINT
"""

# Version 6: a device belongs to its gateway. Devices and device -> asset bindings are keyed
# (gateway, device): two cabinets may both have `mh-01`. A binding with gateway '' is a
# registry entry naming a device no gateway has announced yet; the first gateway to announce
# that device, while no other gateway has one of that id, claims it. Cases and device status
# changes carry the gateway; a case without an asset is about `gateway/device`.
_SCOPE = """
CREATE TABLE devices_scoped (
    gateway_id TEXT NOT NULL,
    device TEXT NOT NULL,
    profile TEXT NOT NULL,
    family TEXT NOT NULL,
    status TEXT NOT NULL,
    since_ms BIGINT NOT NULL,
    reason TEXT NOT NULL,
    pos_rank BIGINT,
    pos_seq BIGINT,
    pos_idx BIGINT,
    PRIMARY KEY (gateway_id, device)
);
INSERT INTO devices_scoped SELECT gateway_id, device, profile, family, status, since_ms, reason,
    pos_rank, pos_seq, pos_idx FROM devices;
CREATE TABLE device_assets_scoped (
    gateway_id TEXT NOT NULL,
    device TEXT NOT NULL,
    asset TEXT NOT NULL,
    PRIMARY KEY (gateway_id, device)
);
INSERT INTO device_assets_scoped SELECT
    COALESCE((SELECT d.gateway_id FROM devices d WHERE d.device = b.device), ''), b.device, b.asset
    FROM device_assets b;
ALTER TABLE cases ADD COLUMN gateway_id TEXT;
UPDATE cases SET gateway_id = (SELECT d.gateway_id FROM devices d WHERE d.device = cases.device)
    WHERE device IS NOT NULL;
UPDATE cases SET subject = gateway_id || '/' || device
    WHERE asset IS NULL AND device IS NOT NULL AND gateway_id IS NOT NULL;
ALTER TABLE status_log ADD COLUMN gateway_id TEXT;
UPDATE status_log SET gateway_id = (
    SELECT d.gateway_id FROM devices d WHERE d.device = status_log.ident
) WHERE entity = 'device';
DROP TABLE devices;
ALTER TABLE devices_scoped RENAME TO devices;
CREATE INDEX IF NOT EXISTS devices_device ON devices (device);
DROP TABLE device_assets;
ALTER TABLE device_assets_scoped RENAME TO device_assets;
CREATE INDEX IF NOT EXISTS device_assets_asset ON device_assets (asset);
CREATE INDEX IF NOT EXISTS alarm_index_gateway_device ON alarm_index (gateway_id, device, id)
"""

# Version 7: the birth a death ends. A death carries the bd_seq (Sparkplug) of the connection
# it ends; a broker publishes its clients' wills when it shuts down and keeps them retained,
# so a gateway that reconnected has a new birth while its last connection's death lingers.
_BD_SEQ = """
ALTER TABLE gateways ADD COLUMN bd_seq BIGINT
"""

# Version 8: alarms that mean what they say (issue 14). Where every alarm occurrence ended
# (`alarm_links`: one case or work order per activation of an alarm id, with a snapshot of the
# alarm); cases with
# their place, their time limit apart from their deadline, severity, 协办, rework/return counts,
# closure type and the case they recur; devices with their own install location; device
# maintenance work orders with their audit. Rows of older versions are carried over: a 受理
# case's duration moves from deadline_ms to allowed_ms, a parked case's signed offset to
# remaining_ms, cases get their asset's place, and the alarms already attached to cases are
# linked by id.
_MEANING = """
ALTER TABLE cases ADD COLUMN allowed_ms BIGINT;
ALTER TABLE cases ADD COLUMN severity INTEGER;
ALTER TABLE cases ADD COLUMN assist TEXT NOT NULL DEFAULT '[]';
ALTER TABLE cases ADD COLUMN reworks INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cases ADD COLUMN returns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cases ADD COLUMN closure TEXT;
ALTER TABLE cases ADD COLUMN recurrence_of TEXT;
ALTER TABLE cases ADD COLUMN remaining_ms BIGINT;
ALTER TABLE cases ADD COLUMN lon DOUBLE PRECISION;
ALTER TABLE cases ADD COLUMN lat DOUBLE PRECISION;
ALTER TABLE cases ADD COLUMN datum TEXT NOT NULL DEFAULT '';
ALTER TABLE cases ADD COLUMN address TEXT NOT NULL DEFAULT '';
ALTER TABLE cases ADD COLUMN location_source TEXT NOT NULL DEFAULT 'none';
UPDATE cases SET allowed_ms = deadline_ms, deadline_ms = NULL WHERE state = '受理';
UPDATE cases SET remaining_ms = deadline_ms, deadline_ms = updated_ms + deadline_ms
    WHERE state = '挂账' AND deadline_ms IS NOT NULL;
UPDATE cases SET allowed_ms = deadline_ms - timed_from_ms
    WHERE allowed_ms IS NULL AND deadline_ms IS NOT NULL AND timed_from_ms IS NOT NULL;
UPDATE cases SET closure = CASE WHEN EXISTS (SELECT 1 FROM case_audit a
    WHERE a.case_no = cases.case_no AND a.action = 'close' AND a.note = 'auto-close')
    THEN '自动恢复' ELSE '处置完成' END WHERE state = '结案';
UPDATE cases SET severity = (SELECT min(e.severity) FROM case_alarms ca
    JOIN alarm_events e ON e.id = ca.alarm_event_id WHERE ca.case_no = cases.case_no);
UPDATE cases SET lon = (SELECT {lon} FROM assets a WHERE a.code = cases.asset),
    lat = (SELECT {lat} FROM assets a WHERE a.code = cases.asset),
    datum = COALESCE((SELECT {datum} FROM assets a WHERE a.code = cases.asset), ''),
    address = COALESCE((SELECT {address} FROM assets a WHERE a.code = cases.asset), ''),
    location_source = 'asset'
    WHERE EXISTS (SELECT 1 FROM assets a WHERE a.code = cases.asset);
CREATE INDEX IF NOT EXISTS cases_closed ON cases (subject, problem, updated_ms)
    WHERE state = '结案';
ALTER TABLE devices ADD COLUMN lon DOUBLE PRECISION;
ALTER TABLE devices ADD COLUMN lat DOUBLE PRECISION;
ALTER TABLE devices ADD COLUMN datum TEXT;
ALTER TABLE devices ADD COLUMN address TEXT;
CREATE TABLE IF NOT EXISTS alarm_links (
    alarm_id TEXT NOT NULL,
    activation INTEGER NOT NULL,
    gateway_id TEXT NOT NULL,
    device TEXT NOT NULL,
    point TEXT NOT NULL,
    alarm_type TEXT NOT NULL,
    severity INTEGER NOT NULL,
    value TEXT NOT NULL,
    limit_value TEXT NOT NULL,
    unit TEXT NOT NULL,
    raised_ms BIGINT NOT NULL,
    message TEXT NOT NULL,
    outcome TEXT NOT NULL,
    ref TEXT,
    reason TEXT NOT NULL,
    decided_ms BIGINT NOT NULL,
    cleared_ms BIGINT,
    PRIMARY KEY (alarm_id, activation)
);
CREATE INDEX IF NOT EXISTS alarm_links_ref ON alarm_links (ref);
INSERT INTO alarm_links (alarm_id, activation, gateway_id, device, point, alarm_type, severity,
    value, limit_value, unit, raised_ms, message, outcome, ref, reason, decided_ms, cleared_ms)
    SELECT e.alarm_id, 0, min(e.gateway_id), min(e.device), min(e.point), min(e.alarm_type),
    min(e.severity), min(e.value), min(e.limit_value), '', min(e.ts_ms), min(e.message), 'case',
    min(ca.case_no), '', min(e.ts_ms), NULL
    FROM case_alarms ca JOIN alarm_events e ON e.id = ca.alarm_event_id
    WHERE e.state IN ('active_unacked', 'active_acked') GROUP BY e.alarm_id;
UPDATE alarm_links SET cleared_ms = (SELECT min(x.ts_ms) FROM alarm_events x
    WHERE x.alarm_id = alarm_links.alarm_id AND x.state IN ('cleared_unacked', 'normal'));
CREATE TABLE IF NOT EXISTS work_orders (
    order_no TEXT PRIMARY KEY,
    problem TEXT NOT NULL,
    title TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    device TEXT NOT NULL,
    subject TEXT NOT NULL,
    asset TEXT,
    state TEXT NOT NULL,
    severity INTEGER NOT NULL,
    urgency TEXT NOT NULL,
    department TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    deadline_ms BIGINT NOT NULL,
    allowed_ms BIGINT NOT NULL,
    repeats INTEGER NOT NULL,
    closure TEXT,
    recurrence_of TEXT,
    lon DOUBLE PRECISION,
    lat DOUBLE PRECISION,
    datum TEXT NOT NULL,
    address TEXT NOT NULL,
    location_source TEXT NOT NULL
);
-- One open work order per (device, problem): repeats attach to it.
CREATE UNIQUE INDEX IF NOT EXISTS work_orders_one_open ON work_orders (subject, problem)
    WHERE state <> '已完成';
CREATE INDEX IF NOT EXISTS work_orders_created ON work_orders (created_ms, order_no);
CREATE TABLE IF NOT EXISTS work_order_audit (
    id {id},
    order_no TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    note TEXT NOT NULL,
    evented BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX IF NOT EXISTS work_order_audit_order ON work_order_audit (order_no, id);
CREATE INDEX IF NOT EXISTS work_order_audit_unevented ON work_order_audit (id) WHERE NOT evented
"""

# Version 9: duties and an honest audit (issue 19). A department registry (codes with names);
# keys scoped to department codes (a 专业部门 key); audit rows with the authenticated key's id and
# role apart from a client-supplied "on behalf of" name. Older audit rows keep role '' (unknown).
_DUTIES = """
CREATE TABLE IF NOT EXISTS departments (
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS departments_name ON departments (name);
ALTER TABLE api_keys ADD COLUMN departments TEXT NOT NULL DEFAULT '[]';
ALTER TABLE case_audit ADD COLUMN key_id BIGINT;
ALTER TABLE case_audit ADD COLUMN key_role TEXT NOT NULL DEFAULT '';
ALTER TABLE case_audit ADD COLUMN on_behalf_of TEXT NOT NULL DEFAULT '';
ALTER TABLE work_order_audit ADD COLUMN key_id BIGINT;
ALTER TABLE work_order_audit ADD COLUMN key_role TEXT NOT NULL DEFAULT '';
ALTER TABLE work_order_audit ADD COLUMN on_behalf_of TEXT NOT NULL DEFAULT ''
"""

# Version 10: the phase table (issue 19): one row per stage a case went through, each with its
# own clock. Open cases carry over as one running phase in the stage of their state, timed by
# the deadline they had (natural hours, as before).
_PHASES = """
CREATE TABLE IF NOT EXISTS case_phases (
    case_no TEXT NOT NULL,
    seq INTEGER NOT NULL,
    stage TEXT NOT NULL,
    department TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    due_ms BIGINT,
    unit TEXT NOT NULL,
    end_ms BIGINT,
    parked_ms BIGINT NOT NULL DEFAULT 0,
    parked_since_ms BIGINT,
    left_ms BIGINT,
    extended DOUBLE PRECISION NOT NULL DEFAULT 0,
    escalated_due_ms BIGINT,
    PRIMARY KEY (case_no, seq)
);
CREATE INDEX IF NOT EXISTS case_phases_running ON case_phases (due_ms)
    WHERE end_ms IS NULL AND parked_since_ms IS NULL;
CREATE INDEX IF NOT EXISTS case_phases_stage_start ON case_phases (stage, start_ms);
INSERT INTO case_phases (case_no, seq, stage, department, start_ms, due_ms, unit, parked_since_ms,
    left_ms, escalated_due_ms)
    SELECT case_no, 1,
    CASE state WHEN '受理' THEN '立案' WHEN '立案' THEN '派遣' WHEN '反馈' THEN '核查'
        WHEN '核查' THEN '核查' ELSE '处置' END,
    department, COALESCE(timed_from_ms, updated_ms), deadline_ms, '自然时',
    CASE WHEN state = '挂账' THEN updated_ms END,
    CASE WHEN state = '挂账' THEN remaining_ms END,
    CASE WHEN escalations > 0 THEN deadline_ms END
    FROM cases WHERE state NOT IN ('结案', '作废')
"""

# Version 11: dead letters keep a bounded prefix of what was refused, with its size and
# SHA-256: one gateway sending refused payloads grew a database by 317 MB in 4 s. Old rows are
# cut too.
_DEAD_LETTERS = """
ALTER TABLE dead_letters ADD COLUMN size BIGINT;
ALTER TABLE dead_letters ADD COLUMN sha256 TEXT;
UPDATE dead_letters SET size = length(payload), payload = substr(payload, 1, 4096)
    WHERE size IS NULL;
CREATE INDEX IF NOT EXISTS dead_letters_received ON dead_letters (received_ms)
"""

# Version 12: applications awaiting the 派遣员 (issue 19): a department applies for 延时 (with
# its hours), 挂账 or 回退; the 派遣员 approves (it takes effect) or denies it.
_APPLICATIONS = """
ALTER TABLE cases ADD COLUMN pending TEXT;
ALTER TABLE cases ADD COLUMN pending_hours DOUBLE PRECISION NOT NULL DEFAULT 0
"""

# Version 13: indexes for 综合评价 (issue 19): the statistics of a window read cases by
# creation time, audit rows by time and phases by end time.
_STATS = """
CREATE INDEX IF NOT EXISTS cases_created_ms ON cases (created_ms);
CREATE INDEX IF NOT EXISTS case_audit_ts ON case_audit (ts_ms);
CREATE INDEX IF NOT EXISTS case_phases_end ON case_phases (end_ms)
"""

# Version 18: every device placed in its 单元网格 by its install location (NULL: no location, or
# outside every grid), and the grid filters of the asset and device lists. assets.grid now holds
# the grid the asset is placed in (its record, in `doc`, keeps the grid it declares); the
# collector re-places both on start, when it loads the grid registry.
_GRID_PLACES = """
ALTER TABLE devices ADD COLUMN grid TEXT;
CREATE INDEX IF NOT EXISTS devices_grid ON devices (grid);
CREATE INDEX IF NOT EXISTS assets_grid ON assets (grid)
"""

# Version 21: department names are never reused (review of issue 19, item 4). Cases keep the
# name of the department they were closed under, so a name a department gave up (by a rename or
# its removal) stays its own: another department taking it would inherit those cases' history
# and scope. Each name a code ever had is kept here; the department's keys still see them.
_DEPARTMENT_NAMES = """
CREATE TABLE IF NOT EXISTS department_names (
    name TEXT PRIMARY KEY,
    code TEXT NOT NULL,
    retired_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS department_names_code ON department_names (code)
"""

# Version 22: statistics over a year answer in under 2 s (issue 19 §4): each case records when
# it was 立案, first 派遣, 结案, closed as 自动恢复 and 作废 (each happens at most once: a second
# 派遣 needs a 回退, which makes no dispatch 准确 any more), and whether a 处置 stage of it ended
# late, so the case figures of a window are one read of the cases instead of a join of the
# audit trail with them; the stage figures read a covering index of the phase table, and the
# actions taken in a 处置 stage the audit trail by action and time. Existing cases are filled
# in from their audit trail and phase table.
_STATS_RECORD = """
ALTER TABLE cases ADD COLUMN registered_ms BIGINT;
ALTER TABLE cases ADD COLUMN dispatched_ms BIGINT;
ALTER TABLE cases ADD COLUMN closed_ms BIGINT;
ALTER TABLE cases ADD COLUMN auto_closed_ms BIGINT;
ALTER TABLE cases ADD COLUMN voided_ms BIGINT;
ALTER TABLE cases ADD COLUMN late_disposal BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE cases SET
    registered_ms = (SELECT min(a.ts_ms) FROM case_audit a
        WHERE a.case_no = cases.case_no AND a.action = 'accept'),
    dispatched_ms = (SELECT min(a.ts_ms) FROM case_audit a
        WHERE a.case_no = cases.case_no AND a.action = 'dispatch'),
    closed_ms = (SELECT min(a.ts_ms) FROM case_audit a
        WHERE a.case_no = cases.case_no AND a.action = 'close'),
    auto_closed_ms = (SELECT min(a.ts_ms) FROM case_audit a
        WHERE a.case_no = cases.case_no AND a.action = 'auto_close'),
    voided_ms = (SELECT min(a.ts_ms) FROM case_audit a
        WHERE a.case_no = cases.case_no AND a.action = 'void'),
    late_disposal = EXISTS (SELECT 1 FROM case_phases q WHERE q.case_no = cases.case_no
        AND q.stage = '处置' AND q.due_ms IS NOT NULL AND q.end_ms > q.due_ms);
CREATE INDEX IF NOT EXISTS cases_registered_ms ON cases (registered_ms)
    WHERE registered_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS cases_dispatched_ms ON cases (dispatched_ms)
    WHERE dispatched_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS cases_closed_ms ON cases (closed_ms) WHERE closed_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS cases_auto_closed_ms ON cases (auto_closed_ms)
    WHERE auto_closed_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS cases_voided_ms ON cases (voided_ms) WHERE voided_ms IS NOT NULL;
DROP INDEX IF EXISTS case_phases_end;
CREATE INDEX IF NOT EXISTS case_phases_end_figures
    ON case_phases (end_ms, department, stage, start_ms, due_ms, parked_ms);
CREATE INDEX IF NOT EXISTS case_audit_action_ts ON case_audit (action, ts_ms, case_no)
"""

# Version 19: what a 专业部门 key sees, by key (store/scope_sql.py): a device's cases, alarms and
# work orders, and an asset's cases, each found by an index instead of a scan of all history.
_SCOPE_LOOKUPS = """
CREATE INDEX IF NOT EXISTS cases_device ON cases (gateway_id, device);
CREATE INDEX IF NOT EXISTS cases_asset ON cases (asset);
CREATE INDEX IF NOT EXISTS alarm_links_device ON alarm_links (gateway_id, device);
CREATE INDEX IF NOT EXISTS work_orders_device ON work_orders (gateway_id, device)
"""

# Version 20: a reporting client's own id for a report (城管通's Idempotency-Key, the 12345
# 工单号), so a retry over a bad mobile link answers the case the first try made. The row is
# written in the transaction that stores the case; the primary key makes a racing second try
# fail and look again.
_REPORT_CLAIMS = """
CREATE TABLE IF NOT EXISTS case_reports (
    scope TEXT NOT NULL,
    report_id TEXT NOT NULL,
    case_no TEXT NOT NULL REFERENCES cases (case_no),
    fingerprint TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (scope, report_id)
)
"""

# Version 16: citizen reports through Open311 (案件来源 公众): the photo's URL, the reporter's
# contact fields (JSON, never published), the 监督员 who found the report true (核实), and the
# token the reporting app may poll.
_PUBLIC_REPORTS = """
ALTER TABLE cases ADD COLUMN media_url TEXT NOT NULL DEFAULT '';
ALTER TABLE cases ADD COLUMN contact TEXT NOT NULL DEFAULT '';
ALTER TABLE cases ADD COLUMN confirmed_by TEXT;
ALTER TABLE cases ADD COLUMN token TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS cases_token ON cases (token)
"""

# Version 15: the statistics count alarm occurrences decided in a window (报警数, 报警转案率).
_ALARM_STATS = """
CREATE INDEX IF NOT EXISTS alarm_links_decided ON alarm_links (decided_ms)
"""

# Version 14: where each case came from (案件来源) and why one was voided (作废原因). Cases of
# older versions all came from the sensors.
_SOURCES = """
ALTER TABLE cases ADD COLUMN source TEXT NOT NULL DEFAULT '物联网感知';
ALTER TABLE cases ADD COLUMN void_reason TEXT
"""

# Version 17: the case record of GB/T 30428 (issue 19): who received a report (受理) and when;
# the 立案条件 met at 立案 and the 结案条件 at 结案; the department's 处置意见 at 反馈; and the
# 监督员's 核查结果 (通过, 不通过 or 误报) with its note, photo, who and when. Sensor cases were
# received by the system as they opened; other cases past 受理 by whoever did their 立案; an
# open report not yet received is in the 受理 stage.
_CASE_RECORD = """
ALTER TABLE cases ADD COLUMN received_by TEXT;
ALTER TABLE cases ADD COLUMN received_ms BIGINT;
ALTER TABLE cases ADD COLUMN register_condition TEXT NOT NULL DEFAULT '';
ALTER TABLE cases ADD COLUMN close_condition TEXT NOT NULL DEFAULT '';
ALTER TABLE cases ADD COLUMN disposal_note TEXT NOT NULL DEFAULT '';
ALTER TABLE cases ADD COLUMN check_result TEXT;
ALTER TABLE cases ADD COLUMN check_note TEXT NOT NULL DEFAULT '';
ALTER TABLE cases ADD COLUMN check_media_url TEXT NOT NULL DEFAULT '';
ALTER TABLE cases ADD COLUMN checked_by TEXT;
ALTER TABLE cases ADD COLUMN checked_ms BIGINT;
UPDATE cases SET received_by = 'system', received_ms = created_ms WHERE source = '物联网感知';
UPDATE cases SET
    received_by = (SELECT a.actor FROM case_audit a WHERE a.case_no = cases.case_no
                   AND a.action = 'accept' ORDER BY a.ts_ms, a.id LIMIT 1),
    received_ms = (SELECT a.ts_ms FROM case_audit a WHERE a.case_no = cases.case_no
                   AND a.action = 'accept' ORDER BY a.ts_ms, a.id LIMIT 1)
    WHERE received_by IS NULL;
UPDATE case_phases SET stage = '受理' WHERE end_ms IS NULL AND stage = '立案'
    AND case_no IN (SELECT case_no FROM cases WHERE state = '受理' AND received_by IS NULL)
"""

# Version 23: a row version on cases and work orders, so that every read-modify-write
# (an operator's action, the 督办 run, an alarm's 返工 or 升级) saves only over the row it
# read: two writers of one case in the same state no longer overwrite each other
# (review 2 item 1). Each save adds one; a save that finds another version is a Conflict.
_ROW_VERSIONS = """
ALTER TABLE cases ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE work_orders ADD COLUMN version BIGINT NOT NULL DEFAULT 0
"""

_DIALECTS = {
    "sqlite": {
        "id": "INTEGER PRIMARY KEY",
        "blob": "BLOB",
        "lon": "json_extract(a.doc, '$.lon')",
        "lat": "json_extract(a.doc, '$.lat')",
        "datum": "json_extract(a.doc, '$.datum')",
        "address": "json_extract(a.doc, '$.address')",
    },
    "postgres": {
        "id": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "blob": "BYTEA",
        "lon": "CAST(CAST(a.doc AS json) ->> 'lon' AS DOUBLE PRECISION)",
        "lat": "CAST(CAST(a.doc AS json) ->> 'lat' AS DOUBLE PRECISION)",
        "datum": "CAST(a.doc AS json) ->> 'datum'",
        "address": "CAST(a.doc AS json) ->> 'address'",
    },
}


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: a name and the statements that create it."""

    version: int
    name: str
    statements: tuple[str, ...]


def core_statements(dialect: str) -> tuple[str, ...]:
    """The core tables for `dialect` (sqlite or postgres), one statement per item."""
    return _split(_CORE, dialect)


def epoch_statements(dialect: str) -> tuple[str, ...]:
    """Migration 4 (batch keys with the buffer epoch, gateway epochs) for `dialect`."""
    return _split(_EPOCHS, dialect)


def api_statements(dialect: str) -> tuple[str, ...]:
    """Migration 3 (API keys, event log, alarm index, webhooks) for `dialect`."""
    return _split(_API, dialect)


def order_statements(dialect: str) -> tuple[str, ...]:
    """Migration 5 (event positions, implausible times, the birth's clock) for `dialect`."""
    return _split(_ORDER, dialect)


def scope_statements(dialect: str) -> tuple[str, ...]:
    """Migration 6 (devices, bindings, cases scoped by gateway) for `dialect`."""
    return _split(_SCOPE, dialect)


def bd_seq_statements(dialect: str) -> tuple[str, ...]:
    """Migration 7 (the bd_seq of a gateway's current birth) for `dialect`."""
    return _split(_BD_SEQ, dialect)


def meaning_statements(dialect: str) -> tuple[str, ...]:
    """Migration 8 (alarm links, case places and lifecycle fields, device locations, work
    orders) for `dialect`."""
    return _split(_MEANING, dialect)


def duties_statements(dialect: str) -> tuple[str, ...]:
    """Migration 9 (department registry, department-scoped keys, audit with the key) for
    `dialect`."""
    return _split(_DUTIES, dialect)


def phase_statements(dialect: str) -> tuple[str, ...]:
    """Migration 10 (the phase table) for `dialect`."""
    return _split(_PHASES, dialect)


def dead_letter_statements(dialect: str) -> tuple[str, ...]:
    """Migration 11 (dead letters: a bounded prefix with size and SHA-256) for `dialect`."""
    return _split(_DEAD_LETTERS, dialect)


def application_statements(dialect: str) -> tuple[str, ...]:
    """Migration 12 (applications for 延时, 挂账 and 回退) for `dialect`."""
    return _split(_APPLICATIONS, dialect)


def stats_statements(dialect: str) -> tuple[str, ...]:
    """Migration 13 (indexes for the statistics of a window) for `dialect`."""
    return _split(_STATS, dialect)


def source_statements(dialect: str) -> tuple[str, ...]:
    """Migration 14 (case source and void reason) for `dialect`."""
    return _split(_SOURCES, dialect)


def alarm_stats_statements(dialect: str) -> tuple[str, ...]:
    """Migration 15 (alarm occurrences by the time they were decided) for `dialect`."""
    return _split(_ALARM_STATS, dialect)


def public_report_statements(dialect: str) -> tuple[str, ...]:
    """Migration 16 (citizen reports: photo, contact, 核实, Open311 token) for `dialect`."""
    return _split(_PUBLIC_REPORTS, dialect)


def case_record_statements(dialect: str) -> tuple[str, ...]:
    """Migration 17 (受理 and the case record: conditions, 处置意见, 核查结果) for `dialect`."""
    return _split(_CASE_RECORD, dialect)


def grid_place_statements(dialect: str) -> tuple[str, ...]:
    """Migration 18 (devices placed in grids, grid indexes) for `dialect`."""
    return _split(_GRID_PLACES, dialect)


def scope_lookup_statements(dialect: str) -> tuple[str, ...]:
    """Migration 19 (indexes for what a 专业部门 key sees) for `dialect`."""
    return _split(_SCOPE_LOOKUPS, dialect)


def report_claim_statements(dialect: str) -> tuple[str, ...]:
    """Migration 20 (a reporting client's ids for its reports: idempotency) for `dialect`."""
    return _split(_REPORT_CLAIMS, dialect)


def migrations(dialect: str, readings: Migration) -> tuple[Migration, ...]:
    """Every version of the collector's schema, in order, for `dialect` (sqlite or postgres).

    `readings` is the backend's own migration 2: the readings table is laid out per backend
    (plain SQLite table, PostgreSQL partitions or a TimescaleDB hypertable). A new version is
    added here once, for both backends.
    """
    return (
        Migration(1, "core tables", core_statements(dialect)),
        readings,
        Migration(3, "command-center API", api_statements(dialect)),
        Migration(4, "batch keys with buffer epochs", epoch_statements(dialect)),
        Migration(5, "event order and clocks", order_statements(dialect)),
        Migration(6, "devices scoped by gateway", scope_statements(dialect)),
        Migration(7, "the connection a birth belongs to", bd_seq_statements(dialect)),
        Migration(8, "alarms that mean what they say", meaning_statements(dialect)),
        Migration(9, "duties and an honest audit", duties_statements(dialect)),
        Migration(10, "the phase table", phase_statements(dialect)),
        Migration(11, "dead letters bounded", dead_letter_statements(dialect)),
        Migration(12, "applications to the 派遣员", application_statements(dialect)),
        Migration(13, "statistics indexes", stats_statements(dialect)),
        Migration(14, "case sources and void reasons", source_statements(dialect)),
        Migration(15, "alarm statistics index", alarm_stats_statements(dialect)),
        Migration(16, "citizen reports", public_report_statements(dialect)),
        Migration(17, "受理 and the case record", case_record_statements(dialect)),
        Migration(18, "devices and assets placed in grids", grid_place_statements(dialect)),
        Migration(19, "what a department key sees, by index", scope_lookup_statements(dialect)),
        Migration(20, "a reporting client's ids for its reports", report_claim_statements(dialect)),
        Migration(21, "department names never reused", department_name_statements(dialect)),
        Migration(22, "statistics of a year by the case record", stats_record_statements(dialect)),
        Migration(23, "row versions of cases and work orders", row_version_statements(dialect)),
    )


def department_name_statements(dialect: str) -> tuple[str, ...]:
    """Migration 21 (the names each department code ever had) for `dialect`."""
    return _split(_DEPARTMENT_NAMES, dialect)


def stats_record_statements(dialect: str) -> tuple[str, ...]:
    """Migration 22 (when each case was 立案, 派遣, 结案 and 作废, and covering indexes for the
    statistics) for `dialect`."""
    return _split(_STATS_RECORD, dialect)


def row_version_statements(dialect: str) -> tuple[str, ...]:
    """Migration 23 (a row version on cases and work orders, checked by every save) for
    `dialect`."""
    return _split(_ROW_VERSIONS, dialect)


def _split(template: str, dialect: str) -> tuple[str, ...]:
    """`template` for `dialect` ({id}, {blob} filled in), one statement per item."""
    sql = template.format(**_DIALECTS[dialect])
    return tuple(s.strip() for s in sql.split(";") if s.strip())
