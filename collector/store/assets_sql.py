"""Asset registry rows shared by the SQL backends: city components (部件) and the devices bound
to them, by the registry or by a gateway's birth.
"""

import json
import logging
from collections.abc import Sequence
from typing import Any

from lifeline.collector.assets import Asset, AssetError
from lifeline.collector.grids import place
from lifeline.collector.store import scope_sql as scoped
from lifeline.collector.store.rows import Commit, Cursor, Rows
from lifeline.wire import (
    Birth,
)

log = logging.getLogger(__name__)


class AssetRows(Rows):
    """Assets and device bindings (`device_assets`; gateway '' = waiting for its gateway)."""

    def _bind(self, cur: Cursor, gateway: str, device: str, asset: str) -> None:
        self._run(
            cur,
            "INSERT INTO device_assets (gateway_id, device, asset) VALUES (:gw, :dev, :asset)"
            " ON CONFLICT (gateway_id, device) DO UPDATE SET asset = :asset",
            {"gw": gateway, "dev": device, "asset": asset},
        )

    def _bind_announced(self, cur: Cursor, msg: Birth, ctx: "Commit") -> list[str]:
        """Apply a birth's device -> asset claims; return why each refused claim was refused.

        A gateway speaks only for its own devices: a claim on an asset already bound to a
        device of another gateway is refused (an operator rebinds through the API or the
        registry), logged, and reported as a `gateway.conflict` event. An asset the registry
        lacks never replaces a binding: the registry is the authority on city components.
        A device the registry named without its gateway is claimed here by the first gateway
        that announces it, while no other gateway has a device of that id.
        """
        refused: list[str] = []
        gw = msg.gateway
        for d in msg.devices:
            self._claim_pending(cur, gw, d.device, ctx)
            if d.asset is None:
                continue
            p = {"gw": gw, "dev": d.device, "asset": d.asset}
            if not self._run(cur, "SELECT 1 FROM assets WHERE code = :asset", p):
                log.warning(
                    "gateway %s announces device %s on asset %s, which is not in the asset"
                    " registry",
                    gw,
                    d.device,
                    d.asset,
                )
                self._run(
                    cur,
                    "INSERT INTO device_assets (gateway_id, device, asset)"
                    " VALUES (:gw, :dev, :asset) ON CONFLICT (gateway_id, device) DO NOTHING",
                    p,
                )
                continue
            owners = self._run(
                cur,
                "SELECT gateway_id, device FROM device_assets WHERE asset = :asset"
                " AND gateway_id <> :gw AND gateway_id <> '' ORDER BY gateway_id, device",
                p,
            )
            if owners:
                holder = f"{owners[0][0]}/{owners[0][1]}"
                why = (
                    f"birth of {gw} claims asset {d.asset} for device {d.device}, but the asset"
                    f" is bound to {holder}: claim refused"
                )
                refused.append(why)
                self._gateway_conflict(cur, gw, why, ctx)
                continue
            self._bind(cur, gw, d.device, d.asset)
        return refused

    def _claim_pending(self, cur: Cursor, gateway: str, device: str, ctx: "Commit") -> None:
        """Bind a device to the asset the registry named it under without a gateway, if the
        id is this gateway's alone."""
        p = {"gw": gateway, "dev": device}
        pending = self._run(
            cur, "SELECT asset FROM device_assets WHERE gateway_id = '' AND device = :dev", p
        )
        if not pending:
            return
        others = self._run(
            cur,
            "SELECT gateway_id FROM devices WHERE device = :dev AND gateway_id <> :gw"
            " ORDER BY gateway_id",
            p,
        )
        if others:
            why = (
                f"the registry binds device {device} to asset {pending[0][0]} without naming its"
                f" gateway, and gateways {', '.join([gateway] + [o[0] for o in others])} all"
                f" have a device {device}: bind it as gateway/device"
            )
            self._gateway_conflict(cur, gateway, why, ctx)
            return
        if not self._run(
            cur, "SELECT 1 FROM device_assets WHERE gateway_id = :gw AND device = :dev", p
        ):
            self._bind(cur, gateway, device, pending[0][0])
        self._run(cur, "DELETE FROM device_assets WHERE gateway_id = '' AND device = :dev", p)

    def bind_device(self, gateway: str | None, device: str, asset: str) -> None:
        """Bind a gateway's device to an asset (replacing any earlier binding); without a
        gateway, the binding waits for the first gateway that announces the device."""
        with self._tx() as cur:
            self._bind(cur, gateway or "", device, asset)

    def _resolve(self, cur: Cursor, ref: str, code: str) -> tuple[str, str]:
        """(gateway, device) for a registry entry `gateway/device` or `device` (see Asset)."""
        gateway, _, device = ref.rpartition("/")
        if gateway:
            return gateway, device
        found = self._run(
            cur,
            "SELECT gateway_id FROM devices WHERE device = :dev UNION"
            " SELECT gateway_id FROM device_assets WHERE device = :dev AND gateway_id <> ''",
            {"dev": device},
        )
        gateways = sorted(r[0] for r in found)
        if len(gateways) > 1:
            raise AssetError(
                f"asset {code}: device {device} is on gateways {', '.join(gateways)};"
                f" name it as {gateways[0]}/{device}"
            )
        return (gateways[0] if gateways else ""), device

    def upsert_assets(self, assets: Sequence[Asset]) -> int:
        """Insert or replace assets and bind their listed devices; return how many.

        Raises AssetError (nothing stored) if a device is named without its gateway while
        several gateways have a device of that id.
        """
        with self._tx() as cur:
            for a in assets:
                doc = a.model_dump_json()
                grid = place(self.grids, a.lon, a.lat, a.grid, datum=a.datum)
                self._run(
                    cur,
                    "INSERT INTO assets (code, subcategory, owner, maintainer, grid, doc)"
                    " VALUES (:code, :sub, :owner, :maint, :grid, :doc)"
                    " ON CONFLICT (code) DO UPDATE SET subcategory = :sub, owner = :owner,"
                    " maintainer = :maint, grid = :grid, doc = :doc",
                    {
                        "code": a.code,
                        "sub": a.subcategory,
                        "owner": a.owner,
                        "maint": a.maintainer,
                        "grid": grid,
                        "doc": doc,
                    },
                )
                for ref in a.devices:
                    self._bind(cur, *self._resolve(cur, ref, a.code), a.code)
        return len(assets)

    def assets(self) -> list[Asset]:
        """All assets ordered by code."""
        rows = self._query("SELECT doc FROM assets ORDER BY code")
        return [Asset.model_validate_json(r[0]) for r in rows]

    def located_assets(
        self,
        grid: str | None = None,
        code: str | None = None,
        scope: Sequence[str] | None = None,
    ) -> list[tuple[Asset, str]]:
        """All assets ordered by code, each with the code of the 单元网格 it is placed in (""
        if none; see grids.place); only those placed in `grid` and/or with the 部件标识码
        `code` if given, and with `scope` (department values), only those in scope
        (scope_sql)."""
        params: dict[str, Any] = {"grid": grid, "code": code}
        mine = ""
        if scope is not None:
            mine = f" AND {scoped.asset_is('assets.code', scope, params)}"
        rows = self._query(
            "SELECT doc, grid FROM assets WHERE (CAST(:grid AS TEXT) IS NULL OR grid = :grid)"  # noqa: S608
            f" AND (CAST(:code AS TEXT) IS NULL OR code = :code){mine} ORDER BY code",
            params,
        )
        return [(Asset.model_validate_json(r[0]), r[1]) for r in rows]

    def _place_assets(self, cur: Cursor) -> int:
        """Place every asset in `self.grids` again, in code order (collectors starting together
        update the same rows in the same order); return how many changed grid."""
        changed = 0
        for code, doc, before in self._run(cur, "SELECT code, doc, grid FROM assets ORDER BY code"):
            # Only the fields placement reads: a district has tens of thousands of 部件.
            record = json.loads(doc)
            lon, lat, declared = record.get("lon"), record.get("lat"), record.get("grid", "")
            # No datum in the record: Asset's default, as Asset.model_validate_json reads it.
            datum = record.get("datum") or "CGCS2000"
            grid = place(self.grids, lon, lat, declared, datum=datum)
            if grid != before:
                changed += 1
                self._run(
                    cur,
                    "UPDATE assets SET grid = :grid WHERE code = :code",
                    {"grid": grid, "code": code},
                )
        return changed

    def asset_of_device(self, gateway: str, device: str) -> Asset | None:
        """The asset a gateway's device is bound to, if any."""
        rows = self._query(
            "SELECT a.doc FROM device_assets b JOIN assets a ON a.code = b.asset"
            " WHERE b.gateway_id = :gw AND b.device = :dev",
            {"gw": gateway, "dev": device},
        )
        return Asset.model_validate_json(rows[0][0]) if rows else None
