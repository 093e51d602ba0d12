"""The gateway's command handlers: rebirth, ack, reload, write (MQTT commands from the collector).

`Commands.handle` checks a command's arguments, has the gateway carry it out through the
narrow `Controls` port, and answers with a `CommandReply`. A command that cannot be carried
out gets a reply saying why; the gateway keeps running.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from lifeline.drivers.errors import DriverError
from lifeline.drivers.link import Link
from lifeline.drivers.values import Value
from lifeline.edge.config import ConfigError
from lifeline.edge.scheduler import Device
from lifeline.wire import Command, CommandReply

log = logging.getLogger("lifeline.edge")

Args = dict[str, Value | None]


class Controls(Protocol):
    """What the commands ask of the running gateway."""

    def rebirth(self) -> None:
        """Publish the birth again."""

    def acknowledge(self, alarm_id: str, who: str, note: str) -> str:
        """Acknowledge an alarm; its new state. Raises ValueError for an unknown alarm."""
        ...

    async def reload(self, name: str | None) -> tuple[str, int]:
        """Load the config file `name` (None: the one running); (config hash, devices).

        Raises ConfigError or ValueError, and the gateway keeps its config.
        """
        ...

    def device(self, dev_id: str) -> tuple[Device, Link | None] | None:
        """The device `dev_id` and the link of its bus (None while not running); None if unknown."""
        ...


class Commands:
    """Answers the collector's commands for gateway `gateway`, session `session`.

    `trusted`: the MQTT connection is authenticated (or the config allows anonymous commands);
    over an anonymous one only `rebirth` is carried out. `wall` (UTC ms) stamps the replies.
    """

    def __init__(
        self,
        gateway: str,
        session: str,
        controls: Controls,
        wall: Callable[[], int],
        trusted: bool,
    ) -> None:
        self.gateway, self.session = gateway, session
        self._trusted = trusted
        self._controls = controls
        self._wall = wall
        self._handlers: dict[str, Callable[[Args], Awaitable[Args]]] = {
            "rebirth": self._rebirth,
            "ack": self._ack,
            "reload": self._reload,
            "write": self._write,
        }

    async def handle(self, cmd: Command) -> CommandReply:
        """Execute one command and say how it went (never raises for a bad command)."""
        handler = self._handlers.get(cmd.name)
        if handler is None:
            known = sorted(self._handlers)
            return self._reply(cmd, error=f"unknown command {cmd.name!r}; know {known}")
        if cmd.name != "rebirth" and not self._trusted:
            # Over an anonymous connection the command may come from anybody on the broker.
            log.warning(
                "refused command %s %s: anonymous MQTT connection", cmd.name, cmd.command_id
            )
            return self._reply(
                cmd,
                error=f"refused {cmd.name!r}: this gateway's MQTT connection is anonymous, so "
                "the command cannot be told from anybody's; give it mqtt.username (broker "
                "passwords and ACL) or set mqtt.allow_anonymous_commands on a closed broker",
            )
        try:
            result = await handler(cmd.args)
        except (ValueError, KeyError, DriverError, ConfigError) as exc:
            return self._reply(cmd, error=str(exc))
        return self._reply(cmd, ok=True, result=result)

    def _reply(
        self, cmd: Command, ok: bool = False, result: Args | None = None, error: str = ""
    ) -> CommandReply:
        return CommandReply(
            self.gateway,
            self.session,
            0,
            self._wall(),
            command_id=cmd.command_id,
            ok=ok,
            result=dict(result or {}),
            error=error,
        )

    async def _rebirth(self, args: Args) -> Args:
        self._controls.rebirth()
        return {}

    async def _ack(self, args: Args) -> Args:
        alarm_id = _str_arg(args, "alarm_id")
        who = str(args.get("who") or "collector")
        note = str(args.get("note") or "")
        state = self._controls.acknowledge(alarm_id, who, note)
        return {"alarm_id": alarm_id, "state": state}

    async def _reload(self, args: Args) -> Args:
        name = args.get("path")
        config_hash, devices = await self._controls.reload(
            None if name in (None, "") else str(name)
        )
        return {"config_hash": config_hash, "devices": devices}

    async def _write(self, args: Args) -> Args:
        dev_id = _str_arg(args, "device")
        point_name = _str_arg(args, "point")
        value = args.get("value")
        if value is None:
            raise ValueError("missing argument 'value'")
        found = self._controls.device(dev_id)
        if found is None:
            raise ValueError(f"no device {dev_id!r} on this gateway")
        dev, link = found
        point = dev.profile.point(point_name)
        if not point.writable:
            raise ValueError(f"point {point_name!r} of {dev_id} is not writable")
        if link is None:
            raise ValueError(f"the bus of {dev_id} is not running")
        await link.write(dev.cfg.unit, point, value, dev.cfg.timeout_s)
        return {"device": dev_id, "point": point_name, "value": value, "modbus": "ok"}


def _str_arg(args: Args, name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"argument {name!r} must be a non-empty string")
    return value
