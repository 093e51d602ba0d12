"""`lifeline collector ...`: run the collector, migrate its database, import assets, keep API keys
and the department registry."""

import contextlib
import ipaddress
import logging
import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from lifeline.collector.store import Store

app = typer.Typer(
    help="The collector: MQTT ingest -> database -> alarms and city cases -> HTTP API.",
    no_args_is_help=True,
)
assets_app = typer.Typer(help="Manage the 部件 (asset) registry.", no_args_is_help=True)
app.add_typer(assets_app, name="assets")
keys_app = typer.Typer(
    help=(
        "Manage API keys for the HTTP API. Roles: the technical ladder viewer < dispatcher <"
        " operator < admin, and the duty roles inspector (监督员), intake (受理员), shift_lead"
        " (值班长), department (专业部门, with --department) and leader (领导); reporter"
        " (公众上报应用) for a citizen app, which only posts Open311 reports;"
        " docs/integration.md has the permission matrix."
    ),
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")
departments_app = typer.Typer(
    help=(
        "Manage the department registry (专业部门 and the other departments cases are"
        " dispatched to): codes with names. Department keys are scoped to these codes."
    ),
    no_args_is_help=True,
)
app.add_typer(departments_app, name="departments")

DEFAULTS: dict[str, Any] = {
    "mqtt": "mqtt://127.0.0.1:1883",
    "mqtt_protocol": "5",
    "db": "sqlite:///lifeline-collector.db",
    "http": "127.0.0.1:8080",
    "root": "lifeline",
    "share_group": None,
    "partitions": None,
    "client_id": "lifeline-collector",
    "assets": None,
    "routing": None,
    "district": None,
    "mqtt_username": None,
    "mqtt_password": None,
    "mqtt_ca": None,
    "mqtt_cert": None,
    "mqtt_key": None,
    "max_clock_skew_s": 300.0,
    "http_max_connections": None,  # the file limit less collector.api.server.HEADROOM_FDS
    "http_request_timeout_s": 10.0,
    "webhook_allow": [],
    "dead_letter_retention_days": 30.0,  # config file only
    "tiles_url": None,
    "tiles_datum": "CGCS2000",
    "public_url": None,  # config file only
}

DbOpt = Annotated[
    str | None,
    typer.Option(
        help="Database URL: sqlite:///FILE or postgresql://USER@HOST:PORT/DB"
        " (default sqlite:///lifeline-collector.db)."
    ),
]


MAX_CONFIG_BYTES = 1024 * 1024  # a few dozen options: anything bigger is a mistake


def _load_yaml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    import yaml

    if path.is_file() and path.stat().st_size > MAX_CONFIG_BYTES:
        raise typer.BadParameter(
            f"{path} is {path.stat().st_size} bytes; a collector config is at most "
            f"{MAX_CONFIG_BYTES} bytes",
            param_hint="--config",
        )
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise typer.BadParameter(
            f"{path}: not a readable YAML file: {exc}", param_hint="--config"
        ) from None
    if not isinstance(doc, dict):
        raise typer.BadParameter(f"{path} must hold a mapping", param_hint="--config")
    wrong = sorted(str(k) for k, v in doc.items() if isinstance(v, list | dict))
    if wrong:
        raise typer.BadParameter(f"{path}: {wrong} must be single values", param_hint="--config")
    unknown = set(doc) - set(DEFAULTS)
    if unknown:
        raise typer.BadParameter(
            f"{path}: unknown keys {sorted(unknown)} (known: {', '.join(sorted(DEFAULTS))})",
            param_hint="--config",
        )
    return doc


def _split_http(http: str) -> tuple[str, int]:
    from lifeline.wire.codes import is_ascii_number

    host, _, port = http.rpartition(":")
    if not host or not is_ascii_number(port):
        raise typer.BadParameter(f"{http!r} is not HOST:PORT", param_hint="--http")
    return host, int(port)


JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print what was done as one JSON object, for scripts.")
]


def _print_json(obj: dict[str, Any]) -> None:
    import json

    typer.echo(json.dumps(obj, ensure_ascii=False))


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _sqlite_path(url: str) -> Path | None:
    """The file of a sqlite:/// URL (as open_store reads it), None for :memory: or PostgreSQL."""
    if not url.startswith("sqlite://"):
        return None
    path = url.removeprefix("sqlite://").removeprefix("/") or ":memory:"
    return None if path == ":memory:" else Path(path)


def _check_folder(url: str) -> None:
    """Refuse an in-memory SQLite database (sqlite://, sqlite:///, sqlite:///:memory:: gone
    when the command ends, so what a command did there is lost while it reports success; a
    throwaway database is never what an operator means) and one whose folder does not exist
    (sqlite3 says only 'unable to open'). One `error:` line, exit 1."""
    if url.startswith("sqlite://") and _sqlite_path(url) is None:
        _fail(
            f"--db {url} is an in-memory database, gone when this command ends: name a file,"
            " e.g. sqlite:///lifeline-collector.db"
        )
    path = _sqlite_path(url)
    if path is not None and not path.absolute().parent.is_dir():
        _fail(f"no folder {path.absolute().parent} for the database {url}; create it or fix --db")


def _shown(url: str) -> str:
    """A database URL fit for a message: a password in it is masked."""
    return re.sub(r"(//[^/:@]*:)[^/@]*@", r"\1***@", url)


@contextlib.contextmanager
def _opening(url: str) -> Iterator[None]:
    """Any failure to reach or open the database at `url` as one line naming it."""
    try:
        yield
    except Exception as exc:  # sqlite3, psycopg, the store: whichever library refused
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        _fail(f"cannot open the database {_shown(url)}: {reason}")


def _has_schema(url: str) -> bool:
    """True if the database at `url` holds the collector's schema (any migration applied).

    Read-only: a SQLite file is opened with mode=ro, so looking never creates or changes one.
    """
    path = _sqlite_path(url)
    if path is not None:
        import sqlite3

        if not path.is_file():
            return False
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
            ).fetchone()
        finally:
            conn.close()
        return found is not None
    if url.startswith(("postgresql://", "postgres://")):
        import psycopg

        with psycopg.connect(url, connect_timeout=10) as pg:
            row = pg.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        return bool(row and row[0])
    return True  # an unsupported URL: open_store names it


def _open(db: str | None) -> "Store":
    """The collector database of a command other than `migrate` and `run`, schema up to date.

    A database without the collector's schema is refused, naming the file or URL looked at:
    a typo in --db (or a missing --db in another folder) would otherwise create a new, empty
    database, and a key made there is one the real collector rejects.
    """
    from lifeline.collector.store import open_store

    url = db or DEFAULTS["db"]
    _check_folder(url)
    path = _sqlite_path(url)
    where = f"{path.absolute()} ({url})" if path is not None else _shown(url)
    with _opening(url):
        found = _has_schema(url)
    if not found:
        given = "" if db else " (the default; pass --db URL for another one)"
        _fail(
            f"no collector database at {where}{given}: check the path, or create it with "
            f"`lifeline collector migrate --db {_shown(url)}`"
        )
    with _opening(url):
        store = open_store(url)
        store.migrate()  # an older schema is upgraded, as `collector run` would on start
    return store


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port for the API; one error line if it cannot be had."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port} (--http): {exc.strerror or exc}")


def _setup_logging(verbose: bool) -> None:
    from lifeline.collector.lograte import RepeatLimiter

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RepeatLimiter())


@app.command()
def run(
    mqtt: Annotated[
        str | None,
        typer.Option(
            help="Broker URL (default mqtt://127.0.0.1:1883), or several comma-separated:"
            " nodes of one broker cluster, tried in turn."
        ),
    ] = None,
    mqtt_protocol: Annotated[
        str | None,
        typer.Option(
            help="MQTT version to speak: 5 (default) or 3.1.1, for brokers that refuse 5"
            " (NATS, RabbitMQ 3.x)."
        ),
    ] = None,
    db: DbOpt = None,
    http: Annotated[str | None, typer.Option(help="Where the API listens, HOST:PORT.")] = None,
    root: Annotated[str | None, typer.Option(help="MQTT topic root (default lifeline).")] = None,
    share_group: Annotated[
        str | None, typer.Option(help="MQTT shared-subscription group, to split load.")
    ] = None,
    partitions: Annotated[
        str | None,
        typer.Option(
            help="Split the sites among collectors without $share: NAME=SITE,SITE;NAME=SITE"
            " (the same on every collector; leases in PostgreSQL; see docs/brokers.md)."
        ),
    ] = None,
    client_id: Annotated[
        str | None,
        typer.Option(
            help="Fixed MQTT client id (keeps the persistent session); with --partitions, the"
            " same on every collector of the group (sessions are <client-id>-<partition>)."
        ),
    ] = None,
    assets: Annotated[Path | None, typer.Option(help="Asset file (.csv/.yaml) to import.")] = None,
    routing: Annotated[
        Path | None, typer.Option(help="Case routing table (default: the shipped one).")
    ] = None,
    district: Annotated[
        str | None,
        typer.Option(
            help="This collector's district, a 6-digit area code (GB/T 2260), for case numbers"
            " whose asset or grid gives none; overrides the routing table's `district`."
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML file with any of the options above.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    bootstrap_key_file: Annotated[
        Path | None,
        typer.Option(
            help="If the database has no admin API key, create one and write it to this file"
            " (mode 0600). For demos and first start-up."
        ),
    ] = None,
    mqtt_username: Annotated[
        str | None, typer.Option(help="Broker user name (brokers with a password_file).")
    ] = None,
    mqtt_password: Annotated[
        str | None,
        typer.Option(
            envvar="LIFELINE_MQTT_PASSWORD",
            show_default=False,
            help="Broker password; pass it in $LIFELINE_MQTT_PASSWORD, not on the command line.",
        ),
    ] = None,
    mqtt_ca: Annotated[
        Path | None, typer.Option(help="CA file to trust for TLS (mqtts://HOST:8883).")
    ] = None,
    mqtt_cert: Annotated[
        Path | None, typer.Option(help="TLS client certificate, if the broker asks for one.")
    ] = None,
    mqtt_key: Annotated[
        Path | None, typer.Option(help="Key of the TLS client certificate.")
    ] = None,
    max_clock_skew_s: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Seconds a gateway's time may run ahead of the collector's and still be"
            " plausible; later (or pre-build) times are stored as sent and flagged (default 300).",
        ),
    ] = None,
    http_max_connections: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Open HTTP connections at most; more are answered 503 at once (default: the"
            " open-file limit less 256 kept for the broker, the database and webhooks).",
        ),
    ] = None,
    webhook_allow: Annotated[
        list[str] | None,
        typer.Option(
            help="A network (CIDR, e.g. 10.20.0.0/16) webhooks may reach although it is not"
            " public (repeatable); by default loopback, private, link-local and multicast"
            " addresses are refused.",
        ),
    ] = None,
    http_request_timeout_s: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            help="Seconds a connection has to send a whole request before it is closed"
            " (default 10).",
        ),
    ] = None,
) -> None:
    """Ingest from MQTT and serve the HTTP API in one process until SIGTERM/Ctrl-C."""
    from lifeline.collector.api import create_app
    from lifeline.collector.api.server import HttpGuard, default_max_connections, server
    from lifeline.collector.ingest import IngestConfig
    from lifeline.collector.runtime import CollectorConfig, Runtime
    from lifeline.collector.webhooks import WebhookConfig
    from lifeline.wire.codes import AREA_CODE_RULE, is_area_code

    _setup_logging(verbose)
    given = {
        "mqtt": mqtt,
        "mqtt_protocol": mqtt_protocol,
        "db": db,
        "http": http,
        "root": root,
        "share_group": share_group,
        "partitions": partitions,
        "client_id": client_id,
        "assets": assets,
        "routing": routing,
        "district": district,
        "mqtt_username": mqtt_username,
        "mqtt_password": mqtt_password,
        "mqtt_ca": mqtt_ca,
        "mqtt_cert": mqtt_cert,
        "mqtt_key": mqtt_key,
        "max_clock_skew_s": max_clock_skew_s,
        "http_max_connections": http_max_connections,
        "http_request_timeout_s": http_request_timeout_s,
        "webhook_allow": webhook_allow or None,
    }
    opts = {**DEFAULTS, **_load_yaml(config), **{k: v for k, v in given.items() if v is not None}}
    host, port = _split_http(str(opts["http"]))
    try:
        skew_s = float(opts["max_clock_skew_s"])
    except (TypeError, ValueError):
        skew_s = -1.0
    if not skew_s >= 0:  # also refuses NaN
        raise typer.BadParameter(
            f"{opts['max_clock_skew_s']!r} is not a number of seconds >= 0",
            param_hint="--max-clock-skew-s",
        )
    try:
        cap = opts["http_max_connections"]
        guard = HttpGuard(
            max_connections=default_max_connections() if cap is None else int(cap),
            request_timeout_s=float(opts["http_request_timeout_s"]),
        )
    except (TypeError, ValueError):
        raise typer.BadParameter(
            "http_max_connections must be a whole number, http_request_timeout_s seconds",
            param_hint="--http-max-connections/--http-request-timeout-s",
        ) from None
    if not (guard.max_connections >= 1 and guard.request_timeout_s > 0):
        raise typer.BadParameter(
            "http_max_connections must be >= 1 and http_request_timeout_s > 0",
            param_hint="--http-max-connections/--http-request-timeout-s",
        )
    try:
        retention_days = float(opts["dead_letter_retention_days"])
    except (TypeError, ValueError):
        retention_days = -1.0
    if not retention_days > 0:
        raise typer.BadParameter(
            f"{opts['dead_letter_retention_days']!r} is not a number of days > 0",
            param_hint="dead_letter_retention_days (config file)",
        )
    allow = opts["webhook_allow"]
    allow = [allow] if isinstance(allow, str) else allow
    try:
        allow = [str(ipaddress.ip_network(str(n), strict=False)) for n in allow]
    except (TypeError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--webhook-allow") from None
    chosen_district = None if opts["district"] is None else str(opts["district"])
    if chosen_district is not None and not is_area_code(chosen_district):
        raise typer.BadParameter(
            f"{chosen_district!r} is not an area code: {AREA_CODE_RULE}", param_hint="--district"
        )
    from lifeline.collector.ingest import PROTOCOLS, parse_mqtt_urls
    from lifeline.collector.runtime import ConsoleConfig, check_public_url

    try:
        parse_mqtt_urls(str(opts["mqtt"]))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--mqtt") from None
    tiles = opts["tiles_url"]
    try:
        console = ConsoleConfig(None if tiles is None else str(tiles), str(opts["tiles_datum"]))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from None
    public_url = opts["public_url"]
    try:
        public_url = None if public_url is None else check_public_url(str(public_url))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from None
    # YAML reads `mqtt_protocol: 5` as a number: it means the same as "5".
    protocol = str(opts["mqtt_protocol"])
    if protocol not in PROTOCOLS:
        raise typer.BadParameter(
            f"{protocol!r} is not one of {', '.join(PROTOCOLS)}", param_hint="--mqtt-protocol"
        )
    from lifeline.collector.partitions import parse_partitions

    parts = None
    if opts["partitions"] is not None:
        if opts["share_group"] is not None:
            raise typer.BadParameter(
                "use either a shared subscription or partitions, not both",
                param_hint="--partitions",
            )
        try:
            parts = parse_partitions(str(opts["partitions"]))
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--partitions") from None
    cfg = CollectorConfig(
        db_url=str(opts["db"]),
        webhooks=WebhookConfig(allow=tuple(allow)),
        dead_letter_retention_days=retention_days,
        ingest=IngestConfig(
            mqtt_url=str(opts["mqtt"]),
            protocol=protocol,
            root=str(opts["root"]),
            client_id=str(opts["client_id"]),
            share_group=opts["share_group"],
            username=opts["mqtt_username"],
            password=opts["mqtt_password"],
            tls_ca=str(opts["mqtt_ca"]) if opts["mqtt_ca"] else None,
            tls_cert=str(opts["mqtt_cert"]) if opts["mqtt_cert"] else None,
            tls_key=str(opts["mqtt_key"]) if opts["mqtt_key"] else None,
        ),
        partitions=parts,
        assets_file=Path(opts["assets"]) if opts["assets"] else None,
        routing_file=Path(opts["routing"]) if opts["routing"] else None,
        district=chosen_district,
        max_clock_skew_s=skew_s,
        console=console,
        public_url=public_url,
    )
    from lifeline.collector.assets import AssetError
    from lifeline.collector.cases.routing import RoutingError
    from lifeline.collector.store import StoreError

    _check_folder(cfg.db_url)
    listener = _listen(host, port)  # before anything starts: a busy port changes nothing
    try:
        runtime = Runtime(cfg)
    except (AssetError, RoutingError, StoreError, ValueError, OSError) as exc:
        listener.close()
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        if bootstrap_key_file is not None:
            _bootstrap_key(runtime.store, bootstrap_key_file)
        runtime.start()
        api = create_app(cfg, runtime)
        api.state.http_guard = guard  # its counters in /metrics
        http_server = server(api, host, port, guard)
        port = listener.getsockname()[1]
        typer.echo(f"collector API listening on http://{host}:{port}", err=True)
        # uvicorn re-raises the signal that stopped it once it is done; a no-op handler lets
        # that happen without killing us, so the runtime below still shuts down cleanly.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        http_server.run(sockets=[listener])
    finally:
        listener.close()
        runtime.close()


@app.command()
def migrate(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Create or upgrade the database schema (safe to run twice)."""
    from lifeline.collector.store import open_store

    _setup_logging(False)
    url = db or DEFAULTS["db"]
    _check_folder(url)
    with _opening(url):
        store = open_store(url)
        try:
            applied = store.migrate()
        finally:
            store.close()
    if as_json:
        _print_json({"backend": store.backend, "applied": applied})
    else:
        typer.echo(f"{store.backend}: applied {applied or 'nothing (up to date)'}")


def _bootstrap_key(store: Any, path: Path) -> None:
    import time

    from lifeline.collector.keys import bootstrap_admin_key

    if bootstrap_admin_key(store, path, int(time.time() * 1000)):
        typer.echo(f"created an admin API key; it is in {path}", err=True)


@keys_app.command("create")
def create_key(
    role: Annotated[
        str,
        typer.Option(
            help="viewer, operator (ack, commands), admin, or a duty role: inspector (监督员),"
            " intake (受理员), shift_lead (值班长), dispatcher (派遣员), department (专业部门,"
            " with --department), leader (领导); reporter (公众上报应用: a citizen app's key,"
            " posts Open311 reports only)."
        ),
    ],
    name: Annotated[str, typer.Option(help="Who holds the key; recorded as the actor.")],
    department: Annotated[
        list[str] | None,
        typer.Option(help="For a department key: a registered department code (repeatable)."),
    ] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key and print it. It is shown only now: the database keeps its digest."""
    import time

    from lifeline.collector.api.routes.keys import check_scope, check_scope_shape
    from lifeline.collector.keys import digest, display_prefix, new_token
    from lifeline.collector.models import Role

    try:
        chosen = Role(role)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise typer.BadParameter(f"{role!r} is not one of {roles}", param_hint="--role") from None
    from lifeline.collector.departments import check_actor

    try:
        check_actor(name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--name") from None
    try:
        check_scope_shape(chosen, department or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--department") from None
    store = _open(db)
    try:
        try:
            scope = check_scope(store, chosen, department or [])
        except ValueError as exc:  # what the database holds, not how the command is written
            _fail(str(exc))
        token = new_token()
        now = int(time.time() * 1000)
        prefix = display_prefix(token)
        key_id = store.create_api_key(name, chosen.value, digest(token), prefix, now, scope)
    finally:
        store.close()
    if as_json:
        _print_json({"id": key_id, "role": chosen.value, "name": name, "key": token})
        return
    typer.echo(f"created key {key_id} ({chosen.value}) for {name}; store it now:", err=True)
    typer.echo(token)


@keys_app.command("list")
def list_keys(db: DbOpt = None) -> None:
    """List API keys (id, role, name, prefix, revoked or not); never the keys themselves."""
    store = _open(db)
    try:
        for k in store.api_keys():
            state = "revoked" if k.revoked_ms is not None else "active"
            # A name stored before names were checked may hold ESC or U+202E: quoted, escaped,
            # so it cannot rewrite the terminal or reorder the line.
            name = k.name if k.name.isprintable() else repr(k.name)
            typer.echo(f"{k.id}\t{k.role.value}\t{state}\t{k.prefix}...\t{name}")
    finally:
        store.close()


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[int, typer.Argument(help="The id shown by `keys list`.")],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke an API key at once."""
    import time

    store = _open(db)
    try:
        done = store.revoke_api_key(key_id, int(time.time() * 1000))
    finally:
        store.close()
    if not done:
        typer.echo(f"error: no active key {key_id}", err=True)
        raise typer.Exit(1)
    if as_json:
        _print_json({"id": key_id, "revoked": True})
    else:
        typer.echo(f"revoked key {key_id}")


CodeArg = Annotated[
    str, typer.Argument(help="Department code: 1-32 of A-Z a-z 0-9 _ . -, e.g. gas.")
]
NameArg = Annotated[str, typer.Argument(help="The department's name, e.g. 燃气集团.")]


def _department_args(code: str, name: str | None = None) -> None:
    """Refuse a code or name the registry cannot hold, as a usage error naming the argument."""
    from lifeline.collector.departments import check_code, check_name

    try:
        check_code(code)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="CODE") from None
    if name is not None:
        try:
            check_name(name)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="NAME") from None


def _put_department(store: "Store", code: str, name: str) -> None:
    """Register or rename a department; fail with one line if the registry refuses the name
    (another department's, now or before, or a code)."""
    import time

    from lifeline.collector.store import NameTaken

    try:
        store.put_department(code, name, int(time.time() * 1000))
    except NameTaken as exc:
        _fail(str(exc))


@departments_app.command("list")
def list_departments(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """List the registered departments (code, name), by code."""
    store = _open(db)
    try:
        found = store.departments()
    finally:
        store.close()
    if as_json:
        _print_json({"departments": [{"code": d.code, "name": d.name} for d in found]})
        return
    for d in found:
        typer.echo(f"{d.code}\t{d.name}")


@departments_app.command("add")
def add_department(
    code: CodeArg, name: NameArg, db: DbOpt = None, as_json: JsonOpt = False
) -> None:
    """Register a department. A code already registered is refused (rename it instead)."""
    _department_args(code, name)
    store = _open(db)
    try:
        known = {d.code: d.name for d in store.departments()}
        if code in known:
            _fail(
                f"department {code} is already registered as {known[code]!r}; rename it with"
                f" `lifeline collector departments rename {code} NAME`"
            )
        _put_department(store, code, name)
    finally:
        store.close()
    if as_json:
        _print_json({"code": code, "name": name, "added": True})
    else:
        typer.echo(f"added department {code} {name}")


@departments_app.command("rename")
def rename_department(
    code: CodeArg, name: NameArg, db: DbOpt = None, as_json: JsonOpt = False
) -> None:
    """Give a registered department a new name. Its open cases (主办 and 协办) follow it to the
    new name; closed cases keep the name they were closed under."""
    _department_args(code, name)
    store = _open(db)
    try:
        known = {d.code: d.name for d in store.departments()}
        if code not in known:
            _fail(
                f"no department {code}; register it with"
                f" `lifeline collector departments add {code} NAME`"
            )
        _put_department(store, code, name)
    finally:
        store.close()
    if as_json:
        _print_json({"code": code, "name": name, "was": known[code]})
    else:
        typer.echo(f"renamed department {code}: {known[code]} -> {name}")


@departments_app.command("remove")
def remove_department(code: CodeArg, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Remove a department from the registry. Refused while an open case has it as 主办 or 协办
    or an active key is scoped to it: re-dispatch or close those cases and revoke those keys
    first (and complete its open work orders). Closed cases keep its name, which is never
    given to another department."""
    import time

    from lifeline.collector.store import InUse

    _department_args(code)
    store = _open(db)
    try:
        found = store.remove_department(code, int(time.time() * 1000))
    except InUse as exc:
        _fail(str(exc))
    finally:
        store.close()
    if found is None:
        _fail(f"no department {code}")
    if as_json:
        _print_json({"code": code, "name": found.name, "removed": True})
    else:
        typer.echo(f"removed department {code} ({found.name})")


@assets_app.command("import")
def import_assets(
    file: Annotated[Path, typer.Argument(help="CSV or YAML asset file.", exists=True)],
    routing: Annotated[
        Path | None,
        typer.Option(
            help="Case routing table naming the 单元网格 file the assets are placed in"
            " (default: the shipped one); use the one `collector run` uses."
        ),
    ] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate and import assets (upsert by 部件标识码), binding their devices, and place
    every asset and device in its 单元网格. An asset whose point stands in another grid than
    the one it names is imported, placed where its point is, and named in a `warning:` line."""
    from lifeline.collector.assets import AssetError, load, misplaced
    from lifeline.collector.cases.routing import (
        RoutingError,
        default_routing_path,
        load_routing,
        routing_grids,
    )

    try:
        records = load(file)
        path = routing or default_routing_path()
        grids = routing_grids(load_routing(path), path)
    except (AssetError, RoutingError) as exc:
        _fail(str(exc))
    warnings = misplaced(records, grids)
    store = _open(db)
    try:
        store.use_grids(grids)
        count = store.upsert_assets(records)
    except AssetError as exc:
        _fail(str(exc))
    finally:
        store.close()
    for why in warnings:
        typer.echo(f"warning: {why}", err=True)
    if as_json:
        _print_json({"imported": count, "file": str(file), "warnings": warnings})
    else:
        typer.echo(f"imported {count} assets from {file}")
