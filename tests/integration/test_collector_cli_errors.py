"""`lifeline collector` commands on a database they cannot use: one line on stderr, exit 1,
never a traceback (each of these printed sqlite3.OperationalError's traceback before)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "args",
    [
        ["migrate"],
        ["keys", "list"],
        ["keys", "revoke", "3"],
        ["keys", "create", "--role", "viewer", "--name", "x"],
    ],
    ids=lambda a: " ".join(a),
)
def test_a_database_that_cannot_be_opened_is_one_line_not_a_traceback(
    args: list[str], tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path}/no-such-dir/x.db"
    r = subprocess.run(
        [sys.executable, "-m", "lifeline", "collector", *args, "--db", db],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr.splitlines() == [
        f"error: cannot open SQLite database {tmp_path}/no-such-dir/x.db:"
        " unable to open database file"
    ]


def test_an_unsupported_database_url_is_one_line(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "lifeline", "collector", "migrate", "--db", "mysql://db/x"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr.splitlines() == [
        "error: unsupported database URL 'mysql://db/x' (use sqlite:///FILE or postgresql://...)"
    ]
