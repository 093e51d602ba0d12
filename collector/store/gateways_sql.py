"""Gateway and device rows shared by the SQL backends: births, deaths, counters, buffer epochs,
device status and its log, command replies.
"""

import json
import logging
from collections.abc import Sequence
from typing import Any

from lifeline.collector.grids import place
from lifeline.collector.models import (
    DeviceState,
    GatewayClock,
    GatewayEpoch,
    GatewayState,
    Status,
    StatusChange,
)
from lifeline.collector.store import scope_sql as scoped
from lifeline.collector.store.rows import (
    BIRTH_IDX,
    Change,
    Col,
    Commit,
    Cursor,
    RowMap,
    Rows,
    at_or_after,
)
from lifeline.wire import (
    Birth,
    CommandReply,
    Death,
    Location,
)
from lifeline.wire import Status as StatusMsg

log = logging.getLogger(__name__)

CONFLICT = "conflict"  # the status_log status of a claim a gateway may not make

_GATEWAY = RowMap(
    GatewayState,
    gateway="gateway_id",
    status=Col(Status),
    counters=Col(json.loads),
    clock=RowMap(
        GatewayClock,
        nullable=True,  # no birth yet
        plausible=Col(bool, "clock_plausible"),
        step_ms="clock_step_ms",
        step_at_ms="clock_step_at_ms",
        received_ms="birth_received_ms",
    ),
)
_EPOCH = RowMap(GatewayEpoch)
# A device (d) with the asset it is bound to (b).
_DEVICE = RowMap(
    DeviceState,
    "d",
    gateway="d.gateway_id",
    asset="b.asset",
    status=Col(Status),
    location=RowMap(
        Location,
        "d",
        nullable=True,  # announced without one
        datum=Col(lambda datum: datum or "CGCS2000"),
        address=Col(lambda address: address or ""),
    ),
)
_STATUS_CHANGE = RowMap(StatusChange, gateway="gateway_id", device="ident")


class GatewayRows(Rows):
    """Gateways, their buffer epochs and devices, the status log, and command replies."""

    def _note_epochs(
        self, cur: Cursor, epochs: list[tuple[str, str]], now_ms: int
    ) -> tuple[dict[tuple[str, str], int], int]:
        """Record (gateway, epoch) pairs; log each new epoch of a known gateway.

        Returns each pair's rank (when this collector first saw the epoch: a buffer that
        replaced another is seen later) and how many known gateways started a new epoch.
        """
        ranks: dict[tuple[str, str], int] = {}
        new = 0
        for gw, epoch in epochs:
            self._run(
                cur,
                "INSERT INTO gateway_epochs (gateway_id, epoch, first_ms) VALUES (:gw, :ep, :now)"
                " ON CONFLICT (gateway_id, epoch) DO NOTHING",
                {"gw": gw, "ep": epoch, "now": now_ms},
            )
            inserted = cur.rowcount == 1
            ranks[(gw, epoch)] = self._run(
                cur,
                "SELECT first_ms FROM gateway_epochs WHERE gateway_id = :gw AND epoch = :ep",
                {"gw": gw, "ep": epoch},
            )[0][0]
            if not inserted:
                continue
            known = self._run(
                cur,
                "SELECT count(*) FROM gateway_epochs WHERE gateway_id = :gw",
                {"gw": gw},
            )
            if known[0][0] > 1:
                new += 1
                reason = f"new buffer epoch {epoch}: its batches number from 1 again"
                log.warning("gateway %s started a %s", gw, reason)
                self._run(
                    cur,
                    "INSERT INTO status_log (entity, ident, status, ts_ms, reason)"
                    " VALUES ('gateway', :gw, 'epoch', :now, :why)",
                    {"gw": gw, "now": now_ms, "why": reason},
                )
        return ranks, new

    def _birth(
        self,
        cur: Cursor,
        site: str,
        msg: Birth,
        rank: int,
        ctx: "Commit",
    ) -> bool:
        """Apply a birth's gateway and devices; False if it was skipped.

        Skipped if it is this very birth again (a retained copy), the birth of a connection
        (session, bd_seq) that already died, or older, in the gateway's order, than the birth
        applied last.
        """
        rows = self._run(
            cur,
            "SELECT status, session, bd_seq, birth_rank, birth_seq, birth_sent_ms FROM gateways"
            " WHERE gateway_id = :gw",
            {"gw": msg.gateway},
        )
        pos = (rank, msg.high_water, BIRTH_IDX)
        if rows:
            status, session, bd_seq, b_rank, b_seq, b_sent = rows[0]
            if (session, bd_seq) == (msg.session, msg.bd_seq) and (
                status == Status.OFFLINE.value or b_sent == msg.sent_ms
            ):
                return False  # this very birth again, or the birth of a connection that died
            if b_rank is not None and (rank, msg.high_water) < (b_rank, b_seq):
                log.info("gateway %s: a birth older than the one applied is ignored", msg.gateway)
                return False
        p = {
            "gw": msg.gateway,
            "site": site,
            "ts": msg.sent_ms,
            "sess": msg.session,
            "bd": msg.bd_seq,
            "sw": msg.software,
            "ch": msg.config_hash,
            "r": rank,
            "s": msg.high_water,
            "recv": ctx.now_ms,
            "cp": msg.clock.plausible,
            "cs": msg.clock.step_ms,
            "ca": msg.clock.step_at_ms,
        }
        self._run(
            cur,
            "INSERT INTO gateways (gateway_id, site, status, since_ms, session, bd_seq, software,"
            " config_hash, reason, counters, counters_ms, birth_rank, birth_seq, birth_sent_ms,"
            " birth_received_ms, clock_plausible, clock_step_ms, clock_step_at_ms)"
            " VALUES (:gw, :site, 'online', :ts, :sess, :bd, :sw, :ch, 'birth', '{}', NULL, :r,"
            " :s, :ts, :recv, :cp, :cs, :ca)"
            " ON CONFLICT (gateway_id) DO UPDATE SET site = :site, status = 'online',"
            " since_ms = :ts, session = :sess, bd_seq = :bd, software = :sw, config_hash = :ch,"
            " reason = 'birth',"
            " birth_rank = :r, birth_seq = :s, birth_sent_ms = :ts, birth_received_ms = :recv,"
            " clock_plausible = :cp, clock_step_ms = :cs, clock_step_at_ms = :ca",
            p,
        )
        if not msg.clock.plausible:
            log.warning("gateway %s reports an implausible wall clock", msg.gateway)
        self._log_status(cur, "gateway", msg.gateway, Status.ONLINE, msg.sent_ms, "birth", ctx)
        for d in msg.devices:
            loc = d.location
            # A device that moved (a new location in this birth) is placed again.
            grid = place(self.grids, loc.lon, loc.lat, datum=loc.datum) if loc else ""
            self._run(
                cur,
                "INSERT INTO devices (gateway_id, device, profile, family, status, since_ms,"
                " reason, lon, lat, datum, address, grid)"
                " VALUES (:gw, :dev, :prof, :fam, 'unknown', 0, '', :lon, :lat, :datum, :addr,"
                " :grid)"
                " ON CONFLICT (gateway_id, device) DO UPDATE SET profile = :prof, family = :fam,"
                " lon = :lon, lat = :lat, datum = :datum, address = :addr, grid = :grid",
                {
                    "grid": grid or None,
                    "dev": d.device,
                    "gw": msg.gateway,
                    "prof": d.profile,
                    "fam": d.family,
                    "lon": loc.lon if loc else None,
                    "lat": loc.lat if loc else None,
                    "datum": loc.datum if loc else None,
                    "addr": loc.address if loc else None,
                },
            )
            status = Status.ONLINE if d.online else Status.OFFLINE
            change = Change(status, msg.sent_ms, "birth", pos)
            self._device_status(cur, msg.gateway, d.device, change, ctx)
        return True

    def _death(self, cur: Cursor, site: str, msg: Death, ctx: "Commit") -> None:
        rows = self._run(
            cur,
            "SELECT status, session, bd_seq FROM gateways WHERE gateway_id = :gw",
            {"gw": msg.gateway},
        )
        if rows and (
            (rows[0][1], rows[0][2]) != (msg.session, msg.bd_seq)
            or rows[0][0] == Status.OFFLINE.value
        ):
            # The death of another connection (an older session, or a will the broker kept
            # from before the gateway reconnected), or one already applied.
            return
        # A last will is built at connect time, so its sent time is not the time of death;
        # a ctx running ahead is no time of death either.
        ts = ctx.now_ms if ctx.received(msg.sent_ms) else max(msg.sent_ms, ctx.now_ms)
        self._run(
            cur,
            "INSERT INTO gateways (gateway_id, site, status, since_ms, session, bd_seq, software,"
            " config_hash, reason, counters, counters_ms)"
            " VALUES (:gw, :site, 'offline', :ts, :sess, :bd, '', '', :why, '{}', NULL)"
            " ON CONFLICT (gateway_id) DO UPDATE SET status = 'offline', since_ms = :ts,"
            " reason = :why",
            {
                "gw": msg.gateway,
                "site": site,
                "ts": ts,
                "sess": msg.session,
                "bd": msg.bd_seq,
                "why": msg.reason,
            },
        )
        self._log_status(cur, "gateway", msg.gateway, Status.OFFLINE, ts, msg.reason, ctx)
        devices = self._run(
            cur,
            "SELECT device FROM devices WHERE gateway_id = :gw AND status <> 'unknown'",
            {"gw": msg.gateway},
        )
        for (device,) in devices:
            # Not an event of the gateway's stream: the position stays, so that the stream's
            # next event (whatever its order) applies.
            self._run(
                cur,
                "UPDATE devices SET status = 'unknown', since_ms = :ts, reason = 'gateway offline'"
                " WHERE gateway_id = :gw AND device = :dev",
                {"ts": ts, "dev": device, "gw": msg.gateway},
            )
            self._log_status(
                cur, "device", device, Status.UNKNOWN, ts, "gateway offline", ctx, msg.gateway
            )

    def _status(self, cur: Cursor, site: str, msg: StatusMsg) -> None:
        # Counters follow arrival: a gateway's ctx may step back, its messages do not.
        p = {"gw": msg.gateway, "site": site, "c": json.dumps(msg.counters), "ts": msg.sent_ms}
        self._run(
            cur,
            "INSERT INTO gateways (gateway_id, site, status, since_ms, session, software,"
            " config_hash, reason, counters, counters_ms)"
            " VALUES (:gw, :site, 'unknown', 0, '', '', '', '', :c, :ts)"
            " ON CONFLICT (gateway_id) DO UPDATE SET counters = :c, counters_ms = :ts",
            p,
        )

    def _device_status(
        self, cur: Cursor, gateway: str, device: str, change: "Change", ctx: "Commit"
    ) -> None:
        """Apply a device status change if it is not older (in the gateway's order) than the
        stored one; log it if the status changed."""
        p = {
            "dev": device,
            "gw": gateway,
            "st": change.status.value,
            "ts": change.ts_ms,
            "why": change.reason,
            "r": change.pos[0],
            "s": change.pos[1],
            "i": change.pos[2],
        }
        rows = self._run(
            cur,
            "SELECT status, pos_rank, pos_seq, pos_idx FROM devices"
            " WHERE gateway_id = :gw AND device = :dev",
            p,
        )
        if not rows:
            self._run(
                cur,
                "INSERT INTO devices (gateway_id, device, profile, family, status, since_ms,"
                " reason, pos_rank, pos_seq, pos_idx)"
                " VALUES (:gw, :dev, '', '', :st, :ts, :why, :r, :s, :i)",
                p,
            )
        elif not at_or_after(change.pos, rows[0][1:4]):
            return  # an older transition arrived late: the stored status is newer
        elif rows[0][0] == change.status.value:
            self._run(
                cur,
                "UPDATE devices SET pos_rank = :r, pos_seq = :s, pos_idx = :i"
                " WHERE gateway_id = :gw AND device = :dev",
                p,
            )
            return
        else:
            self._run(
                cur,
                "UPDATE devices SET status = :st, since_ms = :ts, reason = :why, pos_rank = :r,"
                " pos_seq = :s, pos_idx = :i WHERE gateway_id = :gw AND device = :dev",
                p,
            )
        self._log_status(
            cur, "device", device, change.status, change.ts_ms, change.reason, ctx, gateway
        )

    def _log_status(
        self,
        cur: Cursor,
        entity: str,
        ident: str,
        status: str,
        ts_ms: int,
        reason: str,
        ctx: "Commit",
        gateway: str | None = None,
    ) -> None:
        """Log a status change; a device's names its gateway (`gateway`)."""
        self._run(
            cur,
            "INSERT INTO status_log (entity, ident, status, ts_ms, reason, received_ms, gateway_id)"
            " VALUES (:e, :i, :s, :ts, :why, :recv, :gw)",
            {
                "e": entity,
                "i": ident,
                "s": str(status),
                "ts": ts_ms,
                "why": reason,
                "recv": ctx.received(ts_ms),
                "gw": gateway,
            },
        )

    def _gateway_conflict(self, cur: Cursor, gateway: str, why: str, ctx: "Commit") -> None:
        """Report a claim a gateway may not make: a log line and a `gateway.conflict` event."""
        log.warning("gateway %s: %s", gateway, why)
        ctx.gateway_conflicts += 1
        self._log_status(cur, "gateway", gateway, CONFLICT, ctx.now_ms, why, ctx)

    def _command_reply(self, cur: Cursor, msg: CommandReply, now_ms: int) -> None:
        self._run(
            cur,
            "INSERT INTO command_replies (gateway_id, command_id, ok, result, error, sent_ms,"
            " received_ms) VALUES (:gw, :id, :ok, :res, :err, :sent, :now)"
            " ON CONFLICT (gateway_id, command_id) DO NOTHING",
            {
                "gw": msg.gateway,
                "id": msg.command_id,
                "ok": msg.ok,
                "res": json.dumps(msg.result),
                "err": msg.error,
                "sent": msg.sent_ms,
                "now": now_ms,
            },
        )

    def gateways(self, scope: Sequence[str] | None = None) -> list[GatewayState]:
        """All known gateways (with `scope`, those of a device in scope: scope_sql)."""
        params: dict[str, Any] = {}
        mine = ""
        if scope is not None:
            mine = f" WHERE {scoped.gateway_is('gateways.gateway_id', scope, params)}"
        rows = self._query(
            f"SELECT {_GATEWAY.select} FROM gateways{mine} ORDER BY gateway_id",  # noqa: S608
            params,
        )
        return [_GATEWAY(r) for r in rows]

    def gateway_epochs(self, gateway: str) -> list[GatewayEpoch]:
        """The buffer epochs a gateway has used, newest first."""
        rows = self._query(
            f"SELECT {_EPOCH.select} FROM gateway_epochs WHERE gateway_id = :gw"  # noqa: S608
            " ORDER BY first_ms DESC, epoch",
            {"gw": gateway},
        )
        return [_EPOCH(r) for r in rows]

    def devices(
        self,
        gateway: str | None = None,
        device: str | None = None,
        grid: str | None = None,
        scope: Sequence[str] | None = None,
    ) -> list[DeviceState]:
        """All known devices, optionally of one gateway, with one device id and/or placed in
        one 单元网格 (its code); with `scope` (department values), only those in scope
        (scope_sql)."""
        params: dict[str, Any] = {"gw": gateway, "dev": device, "grid": grid}
        mine = ""
        if scope is not None:
            mine = f" AND {scoped.device_is('d.gateway_id', 'd.device', scope, params)}"
        rows = self._query(
            f"SELECT {_DEVICE.select} FROM devices d LEFT JOIN device_assets b"  # noqa: S608
            " ON b.gateway_id = d.gateway_id AND b.device = d.device"
            " WHERE (CAST(:gw AS TEXT) IS NULL OR d.gateway_id = :gw)"
            " AND (CAST(:dev AS TEXT) IS NULL OR d.device = :dev)"
            f" AND (CAST(:grid AS TEXT) IS NULL OR d.grid = :grid){mine}"
            " ORDER BY d.device, d.gateway_id",
            params,
        )
        return [_DEVICE(r) for r in rows]

    def _place_devices(self, cur: Cursor) -> int:
        """Place every device with an install location in `self.grids` again; return how many
        changed grid."""
        changed = 0
        # In key order: collectors starting together update the same rows in the same order.
        rows = self._run(
            cur,
            "SELECT gateway_id, device, lon, lat, datum, grid FROM devices"
            " ORDER BY gateway_id, device",
        )
        for gw, device, lon, lat, datum, before in rows:
            # No datum: stored before devices had one, read as Location's default (_DEVICE).
            grid = place(self.grids, lon, lat, datum=datum or "CGCS2000") or None
            if grid != before:
                changed += 1
                self._run(
                    cur,
                    "UPDATE devices SET grid = :grid WHERE gateway_id = :gw AND device = :dev",
                    {"grid": grid, "gw": gw, "dev": device},
                )
        return changed

    def device_history(
        self, since_ms: int, until_ms: int, scope: Sequence[str] | None = None
    ) -> list[StatusChange]:
        """Every device's status changes in [since, until), each device's last change before
        `since` first (the status it had then), oldest first; with `scope`, of the devices in
        scope only."""
        params: dict[str, Any] = {"since": since_ms, "until": until_ms}
        mine = ""
        if scope is not None:
            mine = f" AND {scoped.device_in('gateway_id', 'ident', scope, params)}"
        rows = self._query(
            f"SELECT {_STATUS_CHANGE.select} FROM status_log"  # noqa: S608 - placeholders only
            " WHERE entity = 'device' AND gateway_id IS NOT NULL AND ts_ms < :until"
            " AND (ts_ms >= :since OR id IN (SELECT max(id) FROM status_log"
            f" WHERE entity = 'device' AND ts_ms < :since GROUP BY gateway_id, ident)){mine}"
            " ORDER BY ts_ms, id",
            params,
        )
        return [_STATUS_CHANGE(r) for r in rows]

    def command_reply(self, gateway: str, command_id: str) -> dict[str, Any] | None:
        """A gateway's reply to a command, if it arrived."""
        rows = self._query(
            "SELECT ok, result, error, sent_ms, received_ms FROM command_replies"
            " WHERE gateway_id = :gw AND command_id = :id",
            {"gw": gateway, "id": command_id},
        )
        if not rows:
            return None
        r = rows[0]
        return {
            "ok": bool(r[0]),
            "result": json.loads(r[1]),
            "error": r[2],
            "sent_ms": r[3],
            "received_ms": r[4],
        }

    def _pump_status(self, cur: Cursor, now_ms: int, limit: int) -> int:
        rows = self._run(
            cur,
            "SELECT id, entity, ident, status, ts_ms, reason, gateway_id, received_ms"
            " FROM status_log WHERE NOT evented ORDER BY id LIMIT :n",
            {"n": limit},
        )
        for r in rows:
            data: dict[str, Any] = {r[1]: r[2], "status": r[3], "ts_ms": r[4], "reason": r[5]}
            subject = r[2]
            if r[6] is not None:  # a device: named with its gateway
                data["gateway"] = r[6]
                subject = f"{r[6]}/{r[2]}"
            if r[7] is not None:
                data["received_ms"] = r[7]
            self._log_event(cur, f"{r[1]}.{r[3]}", r[4], now_ms, subject, data)
            self._run(cur, "UPDATE status_log SET evented = TRUE WHERE id = :id", {"id": r[0]})
        return len(rows)
