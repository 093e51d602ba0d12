"""`lifeline collector ...`: run the collector, migrate its database, import assets."""

import logging
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="The collector: MQTT ingest -> database -> alarms and city cases -> HTTP API.",
    no_args_is_help=True,
)
assets_app = typer.Typer(help="Manage the 部件 (asset) registry.", no_args_is_help=True)
app.add_typer(assets_app, name="assets")

DEFAULTS: dict[str, Any] = {
    "mqtt": "mqtt://127.0.0.1:1883",
    "db": "sqlite:///lifeline-collector.db",
    "http": "127.0.0.1:8080",
    "root": "lifeline",
    "share_group": None,
    "client_id": "lifeline-collector",
    "assets": None,
    "routing": None,
}

DbOpt = Annotated[
    str | None,
    typer.Option(
        help="Database URL: sqlite:///FILE or postgresql://USER@HOST:PORT/DB"
        " (default sqlite:///lifeline-collector.db)."
    ),
]


def _load_yaml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    import yaml

    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(doc, dict):
        raise typer.BadParameter(f"{path} must hold a mapping", param_hint="--config")
    unknown = set(doc) - set(DEFAULTS)
    if unknown:
        raise typer.BadParameter(
            f"{path}: unknown keys {sorted(unknown)} (known: {', '.join(sorted(DEFAULTS))})",
            param_hint="--config",
        )
    return doc


def _split_http(http: str) -> tuple[str, int]:
    host, _, port = http.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter(f"{http!r} is not HOST:PORT", param_hint="--http")
    return host, int(port)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def run(
    mqtt: Annotated[
        str | None, typer.Option(help="Broker URL (default mqtt://127.0.0.1:1883).")
    ] = None,
    db: DbOpt = None,
    http: Annotated[str | None, typer.Option(help="Where the API listens, HOST:PORT.")] = None,
    root: Annotated[str | None, typer.Option(help="MQTT topic root (default lifeline).")] = None,
    share_group: Annotated[
        str | None, typer.Option(help="MQTT shared-subscription group, to split load.")
    ] = None,
    client_id: Annotated[
        str | None, typer.Option(help="Fixed MQTT client id (keeps the persistent session).")
    ] = None,
    assets: Annotated[Path | None, typer.Option(help="Asset file (.csv/.yaml) to import.")] = None,
    routing: Annotated[
        Path | None, typer.Option(help="Case routing table (default: the shipped one).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML file with any of the options above.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Ingest from MQTT and serve the HTTP API in one process until SIGTERM/Ctrl-C."""
    import uvicorn

    from collector.api import create_app
    from collector.ingest import IngestConfig
    from collector.runtime import CollectorConfig, Runtime

    _setup_logging(verbose)
    given = {
        "mqtt": mqtt,
        "db": db,
        "http": http,
        "root": root,
        "share_group": share_group,
        "client_id": client_id,
        "assets": assets,
        "routing": routing,
    }
    opts = {**DEFAULTS, **_load_yaml(config), **{k: v for k, v in given.items() if v is not None}}
    host, port = _split_http(str(opts["http"]))
    cfg = CollectorConfig(
        db_url=str(opts["db"]),
        ingest=IngestConfig(
            mqtt_url=str(opts["mqtt"]),
            root=str(opts["root"]),
            client_id=str(opts["client_id"]),
            share_group=opts["share_group"],
        ),
        assets_file=Path(opts["assets"]) if opts["assets"] else None,
        routing_file=Path(opts["routing"]) if opts["routing"] else None,
    )
    from collector.assets import AssetError
    from collector.cases.routing import RoutingError
    from collector.store import StoreError

    try:
        runtime = Runtime(cfg)
    except (AssetError, RoutingError, StoreError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        runtime.start()
        server = uvicorn.Server(
            uvicorn.Config(create_app(cfg, runtime), host=host, port=port, log_level="warning")
        )
        typer.echo(f"collector API listening on http://{host}:{port}", err=True)
        # uvicorn re-raises the signal that stopped it once it is done; a no-op handler lets
        # that happen without killing us, so the runtime below still shuts down cleanly.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        server.run()
    finally:
        runtime.close()


@app.command()
def migrate(db: DbOpt = None) -> None:
    """Create or upgrade the database schema (safe to run twice)."""
    from collector.store import open_store

    _setup_logging(False)
    store = open_store(db or DEFAULTS["db"])
    try:
        applied = store.migrate()
        typer.echo(f"{store.backend}: applied {applied or 'nothing (up to date)'}")
    finally:
        store.close()


@assets_app.command("import")
def import_assets(
    file: Annotated[Path, typer.Argument(help="CSV or YAML asset file.", exists=True)],
    db: DbOpt = None,
) -> None:
    """Validate and import assets (upsert by 部件标识码), binding their devices."""
    from collector.assets import AssetError, load
    from collector.store import open_store

    try:
        records = load(file)
    except AssetError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    store = open_store(db or DEFAULTS["db"])
    try:
        store.migrate()
        typer.echo(f"imported {store.upsert_assets(records)} assets from {file}")
    finally:
        store.close()
