"""The 部件 (city component) registry: validated asset records imported from CSV or YAML."""

import csv
import io
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lifeline.collector.grids import GridMap, check_grid_code, place
from lifeline.wire.codes import ASSET_CODE_RULE, is_asset_code
from lifeline.wire.messages import DATUMS  # the ones placement converts (grids.to_grid_datum)
from lifeline.wire.topics import IDENT_RE

_ID = IDENT_RE.pattern.removeprefix("^").removesuffix("$")  # a gateway or device id
DEVICE_REF_RE = re.compile(rf"^(?:{_ID}/)?{_ID}$")


class AssetError(ValueError):
    """An asset file or record that cannot be imported; the message names the row and field."""


class Asset(BaseModel):
    """One 部件: 16-digit 部件标识码 = 6 area + 2 大类 + 2 小类 + 6 serial."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(description="16-digit 部件标识码")
    subcategory: str = Field(default="", description="4-digit 大类+小类 code, e.g. 0111 燃气井盖")
    name: str = ""
    owner: str = Field(min_length=1, description="权属单位 (owning department)")
    maintainer: str = Field(
        default="", description="养护单位 (maintaining department); owner if empty"
    )
    grid: str = Field(
        default="", description="单元网格 code: 14 digits (6 area + 3 街道 + 3 社区 + 2 grid) or 15"
    )
    address: str = ""
    lon: float | None = None
    lat: float | None = None
    datum: str = "CGCS2000"
    devices: tuple[str, ...] = Field(
        default=(),
        description="devices watching it, each `gateway/device`, or `device` alone while one"
        " gateway has that id (two cabinets may both have an `mh-01`)",
    )

    @field_validator("code")
    @classmethod
    def _code(cls, v: str) -> str:
        if not is_asset_code(v):
            raise ValueError(f"部件标识码 {v!r} must be {ASSET_CODE_RULE}")
        return v

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: str) -> str:
        return check_grid_code(v) if v else v

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for ref in v:
            if not DEVICE_REF_RE.fullmatch(ref):
                raise ValueError(
                    f"device {ref!r} must be `gateway/device` or `device` (ids of 1-64 of"
                    " A-Z a-z 0-9 _ . -, starting alphanumeric)"
                )
        return v

    @field_validator("datum")
    @classmethod
    def _datum(cls, v: str) -> str:
        if v not in DATUMS:
            raise ValueError(f"datum {v!r} is not one of {', '.join(DATUMS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "Asset":
        derived = self.code[6:10]
        if self.subcategory and self.subcategory != derived:
            raise ValueError(
                f"subcategory {self.subcategory!r} does not match digits 7-10 of"
                f" 部件标识码 {self.code} ({derived})"
            )
        if (self.lon is None) != (self.lat is None):
            raise ValueError("give both lon and lat, or neither")
        if (
            self.lon is not None
            and self.lat is not None
            and not (-180 <= self.lon <= 180 and -90 <= self.lat <= 90)
        ):
            raise ValueError(f"coordinates ({self.lon}, {self.lat}) are out of range")
        return self

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        # Derive 小类 from the code and fall back to the owner as maintainer.
        if isinstance(data, dict):
            data = dict(data)
            code = data.get("code")
            if not data.get("subcategory") and isinstance(code, str) and is_asset_code(code):
                data["subcategory"] = code[6:10]
            if not data.get("maintainer") and data.get("owner"):
                data["maintainer"] = data["owner"]
        return data

    @property
    def area(self) -> str:
        """6-digit administrative area code."""
        return self.code[:6]


def misplaced(assets: Iterable[Asset], grids: GridMap | None) -> list[str]:
    """One sentence for each asset whose point stands in another 单元网格 than the grid it
    names, or that names a grid the registry does not hold and has no point to place it by
    (with `grids`, the registry; none without one). Such an asset is stored and placed where
    its point is (grids.place), else under the code it names: a warning, not a refusal, because
    a grid code typed into a ledger goes stale when grids are redrawn while the surveyed point
    does not, and one stale code must not stop an import of thousands."""
    found = []
    for a in assets:
        placed = place(grids, a.lon, a.lat, a.grid, datum=a.datum)
        if a.grid and placed != a.grid:
            found.append(
                f"asset {a.code} names grid {a.grid}, but its point ({a.lon}, {a.lat}) stands"
                f" in grid {placed}: placed in {placed}"
            )
        elif a.grid and grids is not None and grids.get(a.grid) is None:
            found.append(
                f"asset {a.code} names grid {a.grid}, which is not in the grid file, and its"
                " point places it in none: no grid department (属地) can take its cases"
            )
    return found


# A 40 MB CSV took 1.8 GB and 19 s to import; a district has a few ten thousand 部件.
MAX_ASSET_FILE_BYTES = 8 * 1024 * 1024
MAX_ASSETS = 50_000


def _build(rows: Iterable[tuple[str, dict[str, Any]]]) -> list[Asset]:
    assets: list[Asset] = []
    seen: dict[str, str] = {}
    for where, row in rows:
        if len(assets) >= MAX_ASSETS:
            raise AssetError(f"{where}: more than {MAX_ASSETS} assets in one import: split it")
        try:
            asset = Asset.model_validate(row)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}"
                for e in exc.errors()
            )
            raise AssetError(f"{where}: {problems}") from None
        if asset.code in seen:
            first = seen[asset.code]
            raise AssetError(f"{where}: 部件标识码 {asset.code} already defined at {first}")
        seen[asset.code] = where
        assets.append(asset)
    return assets


def parse_csv(text: str, source: str = "<csv>") -> list[Asset]:
    """Parse assets from CSV with a header row; `devices` is a ';'-separated list. Raises
    AssetError naming `source` and the line that is wrong."""
    reader = csv.DictReader(io.StringIO(text))
    rows = []
    for n, raw in enumerate(reader, start=2):
        row: dict[str, Any] = {k.strip(): (v or "").strip() for k, v in raw.items() if k}
        for key in ("lon", "lat"):
            if row.get(key) == "":
                row[key] = None
        if "devices" in row:
            row["devices"] = tuple(d.strip() for d in row["devices"].split(";") if d.strip())
        rows.append((f"{source} line {n}", row))
    return _build(rows)


def parse_yaml(text: str, source: str = "<yaml>") -> list[Asset]:
    """Parse assets from YAML: a list, or a mapping with an `assets:` list. Raises AssetError
    naming `source` and the entry that is wrong."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AssetError(f"{source}: not valid YAML: {exc}") from None
    if isinstance(doc, dict):
        doc = doc.get("assets")
    if not isinstance(doc, list):
        raise AssetError(f"{source}: expected a list of assets (or a mapping with 'assets:')")
    rows = []
    for i, item in enumerate(doc):
        if not isinstance(item, dict):
            raise AssetError(f"{source} asset #{i + 1}: expected a mapping")
        rows.append((f"{source} asset #{i + 1}", dict(item)))
    return _build(rows)


def load(path: Path) -> list[Asset]:
    """Load assets from a .csv, .yaml or .yml file (UTF-8) of at most MAX_ASSET_FILE_BYTES.
    Raises AssetError naming the file if it cannot be read, is too large, is of another type,
    or an entry is wrong."""
    try:
        size = path.stat().st_size
        if size > MAX_ASSET_FILE_BYTES:
            raise AssetError(
                f"{path}: {size} bytes; an asset file is at most {MAX_ASSET_FILE_BYTES} "
                f"(some {MAX_ASSETS} assets): split it and import the parts one after another"
            )
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise AssetError(f"{path}: cannot read it: {exc}") from None
    if path.suffix.lower() == ".csv":
        return parse_csv(text, str(path))
    if path.suffix.lower() in (".yaml", ".yml"):
        return parse_yaml(text, str(path))
    raise AssetError(f"{path}: unknown asset file type (use .csv, .yaml or .yml)")
