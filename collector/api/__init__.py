"""The collector's HTTP API (FastAPI): `create_app` is the factory."""

from lifeline.collector.api.app import AppConfig, create_app

__all__ = ["AppConfig", "create_app"]
