"""The built wheel carries every module and data file that the source tree runs from."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# source folder -> the import name it is installed as
ROOTS = {
    "wire": "lifeline/wire",
    "drivers": "lifeline/drivers",
    "edge": "lifeline/edge",
    "collector": "lifeline/collector",
    "lifeline": "lifeline",
    "config": "lifeline/config",
    "firmware-sim/firmware_sim": "lifeline/firmware_sim",
}
DATA = {
    ".yaml", ".yml", ".conf", ".csv", ".service", ".acl", ".sql", ".html", ".js", ".css", ".json",
}  # fmt: skip


def test_wheel_holds_every_module_and_data_file(tmp_path: Path) -> None:
    """A non-editable install gets every subpackage (it once missed collector.store)."""
    # A copy, because setuptools reuses a stale build/ folder in the work tree.
    src = tmp_path / "src"
    junk = shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__")
    shutil.copytree(REPO, src, ignore=junk)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("lifeline-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"{name}/{path.relative_to(REPO / src).as_posix()}"
        for src, name in ROOTS.items()
        for path in (REPO / src).rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and (path.suffix == ".py" or path.suffix in DATA)
    }
    assert expected, "no source files found"
    assert sorted(expected - shipped) == []
    # one import namespace: nothing but `lifeline` (and the dist-info) at the wheel's top
    top_level = {name.split("/")[0] for name in shipped}
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"lifeline"}
    # The license text travels with the wheel (PEP 639 puts it under .dist-info/licenses/).
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in shipped)
