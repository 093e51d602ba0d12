"""Plausible physics for the four sensor families, driven by a seeded random generator."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lifeline.drivers.values import Value

__all__ = ["PHYSICS", "Physics", "SimEventError"]


class SimEventError(ValueError):
    """An event name or argument the device does not understand."""


@dataclass
class _Leak:
    """A gas release: linear ramp to `peak`, hold, then exponential decay."""

    start: float
    peak: float
    ramp_s: float
    hold_s: float
    decay_s: float

    def level(self, t: float) -> float:
        age = t - self.start
        if age < 0:
            return 0.0
        if age < self.ramp_s:
            return self.peak * age / self.ramp_s
        if age < self.ramp_s + self.hold_s:
            return self.peak
        return self.peak * math.exp(-(age - self.ramp_s - self.hold_s) / self.decay_s)


def _num(args: dict[str, Any], key: str, default: float) -> float:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SimEventError(f"argument {key!r} must be a number, not {value!r}")
    return float(value)


class Physics:
    """State of one simulated device; `step` advances it, `event` changes it on purpose."""

    events: tuple[str, ...] = ()

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.t = 0.0  # simulated seconds since start
        self.values: dict[str, Value] = {}

    def noise(self, sigma: float) -> float:
        """Gaussian sensor noise."""
        return self.rng.gauss(0.0, sigma)

    def step(self, now: datetime, dt: float) -> None:
        """Advance the simulated state by `dt` seconds; `now` is the simulated wall clock."""
        self.t += dt

    def event(self, name: str, args: dict[str, Any]) -> None:
        """Apply a named event (see `events`)."""
        raise SimEventError(f"unknown event {name!r}; this device knows {', '.join(self.events)}")

    def written(self, point: str, value: Value) -> None:
        """A master wrote a writable point."""
        self.values[point] = value


class ManholePhysics(Physics):
    """Cover that opens and tilts, water that rises in rain, methane that leaks in."""

    events = ("open", "close", "displace", "tilt", "rain", "dry", "gas_leak", "drain_battery")

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.base_tilt = (rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5))
        self.extra_tilt = (0.0, 0.0)
        self.open = False
        self.displaced = False
        self.water = rng.uniform(2, 8)
        self.rain_cm_per_min = 0.0
        self.leaks: list[_Leak] = []
        self.battery = rng.uniform(70, 95)

    def step(self, now: datetime, dt: float) -> None:
        """Advance water, gas, battery and noise."""
        super().step(now, dt)
        if self.rain_cm_per_min > 0:
            self.water = min(200.0, self.water + self.rain_cm_per_min * dt / 60)
        else:
            self.water = max(3.0, self.water - 0.5 * dt / 60)  # drains slowly
        self.battery = max(0.0, self.battery - dt * 1e-6)
        ch4 = 0.3 + sum(leak.level(self.t) for leak in self.leaks) + abs(self.noise(0.1))
        tx = self.base_tilt[0] + self.extra_tilt[0] + self.noise(0.02)
        ty = self.base_tilt[1] + self.extra_tilt[1] + self.noise(0.02)
        self.values.update(
            tilt_x=round(tx, 2),
            tilt_y=round(ty, 2),
            water_level=round(self.water),
            ch4=round(min(ch4, 100.0), 1),
            temperature=round(14.0 + 3 * math.sin(self.t / 43200 * math.pi) + self.noise(0.1), 1),
            battery_voltage=round(3.3 + 0.009 * self.battery, 2),
            battery=round(self.battery),
            cover_open=self.open,
            displaced=self.displaced,
            water_alarm=self.water >= 80,
            low_battery=self.battery < 20,
        )

    def event(self, name: str, args: dict[str, Any]) -> None:
        """open, close, displace, tilt{x,y}, rain{cm_per_min}, dry, gas_leak{...}."""
        if name == "open":
            self.open = True
            self.extra_tilt = (_num(args, "x", 25.0), _num(args, "y", 4.0))
        elif name == "close":
            self.open = self.displaced = False
            self.extra_tilt = (0.0, 0.0)
        elif name == "displace":
            self.displaced = True
            self.extra_tilt = (_num(args, "x", 6.0), _num(args, "y", 2.0))
        elif name == "tilt":
            self.extra_tilt = (_num(args, "x", 12.0), _num(args, "y", 0.0))
        elif name == "rain":
            self.rain_cm_per_min = _num(args, "cm_per_min", 2.0)
        elif name == "dry":
            self.rain_cm_per_min = 0.0
        elif name == "gas_leak":
            self.leaks.append(_leak(self.t, args))
        elif name == "drain_battery":
            self.battery = _num(args, "to", 10.0)
        else:
            super().event(name, args)


def _leak(t: float, args: dict[str, Any]) -> _Leak:
    return _Leak(
        start=t,
        peak=_num(args, "peak", 35.0),
        ramp_s=max(0.001, _num(args, "ramp_s", 20.0)),
        hold_s=_num(args, "hold_s", 30.0),
        decay_s=max(0.001, _num(args, "decay_s", 30.0)),
    )


class StreetlightPhysics(Physics):
    """Lamp switched by a dusk/dawn schedule or by command, with energy metering and failures."""

    events = ("dusk", "dawn", "lamp_failure", "repair", "voltage", "leakage")
    RATED_W = 120.0

    def __init__(self, rng: random.Random, dusk_hour: float = 18.0, dawn_hour: float = 6.0) -> None:
        super().__init__(rng)
        self.dusk_hour, self.dawn_hour = dusk_hour, dawn_hour
        self.night: bool | None = None
        self.failed = False
        self.mains_v = 220.0
        self.leak_ma = rng.uniform(0.5, 3.0)
        self.energy = rng.uniform(100, 900)
        self.hours = rng.uniform(1000, 9000)
        self.values.update(lamp_switch=False, dimming=100)

    def _is_night(self, now: datetime) -> bool:
        hour = now.hour + now.minute / 60
        return hour >= self.dusk_hour or hour < self.dawn_hour

    def step(self, now: datetime, dt: float) -> None:
        """Follow the schedule at its transitions, then meter the lamp."""
        super().step(now, dt)
        night = self._is_night(now)
        if night != self.night:  # schedule acts at dusk/dawn; commands hold until the next one
            self.night = night
            self.values["lamp_switch"] = night
        switched = bool(self.values["lamp_switch"])
        lit = switched and not self.failed
        volts = self.mains_v + self.noise(0.8)
        dim = int(self.values.get("dimming", 100) or 0)
        power = self.RATED_W * max(dim, 10) / 100 + self.noise(0.5) if lit else 0.4
        pf = 0.96 if lit else 0.3
        if lit:
            self.hours += dt / 3600
        self.energy += power * dt / 3.6e6
        self.values.update(
            voltage=round(volts, 1),
            current=round(power / (volts * pf), 3),
            active_power=round(max(power, 0.0), 1),
            power_factor=pf,
            energy=round(self.energy, 2),
            leakage_current=round(max(0.0, self.leak_ma + self.noise(0.2))),
            lamp_temperature=round(18.0 + (25.0 if lit else 0.0) + self.noise(0.2), 1),
            lamp_on=lit,
            lamp_failure=switched and self.failed,
            over_voltage=volts > 253,
            under_voltage=volts < 187,
            leakage_fault=self.leak_ma >= 30,
            running_hours=int(self.hours),
        )

    def event(self, name: str, args: dict[str, Any]) -> None:
        """dusk, dawn, lamp_failure, repair, voltage{v}, leakage{ma}."""
        if name in ("dusk", "dawn"):
            self.values["lamp_switch"] = name == "dusk"
        elif name == "lamp_failure":
            self.failed = True
        elif name == "repair":
            self.failed = False
            self.leak_ma = self.rng.uniform(0.5, 3.0)
        elif name == "voltage":
            self.mains_v = _num(args, "v", 260.0)
        elif name == "leakage":
            self.leak_ma = _num(args, "ma", 40.0)
        else:
            super().event(name, args)

    def written(self, point: str, value: Value) -> None:
        """Switch and dimming commands."""
        if point == "dimming" and isinstance(value, int | float) and not 0 <= value <= 100:
            raise SimEventError("dimming is 0..100")
        super().written(point, value)


class GasPhysics(Physics):
    """Combustible gas detector: leaks ramp up and decay; the detector latches its own alarms."""

    events = ("leak", "sensor_fault", "clear_fault")

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.leaks: list[_Leak] = []
        self.fault = False
        self.life_days = rng.uniform(400, 1000)

    def step(self, now: datetime, dt: float) -> None:
        """Advance leaks and noise."""
        super().step(now, dt)
        self.life_days = max(0.0, self.life_days - dt / 86400)
        level = sum(leak.level(self.t) for leak in self.leaks) + abs(self.noise(0.15))
        level = 0.0 if self.fault else min(level, 100.0)
        self.values.update(
            gas_concentration=round(level, 1),
            alarm_low=level >= 20,
            alarm_high=level >= 50,
            sensor_fault=self.fault,
            temperature=round(16.0 + self.noise(0.1), 1),
            full_scale=100,
            sensor_life=round(self.life_days),
            gas_name="CH4",
        )

    def event(self, name: str, args: dict[str, Any]) -> None:
        """leak{peak, ramp_s, hold_s, decay_s}, sensor_fault, clear_fault."""
        if name == "leak":
            self.leaks.append(_leak(self.t, args))
        elif name == "sensor_fault":
            self.fault = True
        elif name == "clear_fault":
            self.fault = False
        else:
            super().event(name, args)


class TiltPhysics(Physics):
    """Inclinometer on a pole, bridge or slope: slow creep, sudden jumps, vibration bursts."""

    events = ("creep", "jump", "vibrate", "settle")

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.angle = [rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), rng.uniform(-0.1, 0.1)]
        self.creep_deg_per_h = [0.0, 0.0]
        self.vibration_until = -1.0
        self.vibration = 0.0
        self.battery = rng.uniform(60, 100)

    def step(self, now: datetime, dt: float) -> None:
        """Advance creep and noise."""
        super().step(now, dt)
        for axis in (0, 1):
            self.angle[axis] += self.creep_deg_per_h[axis] * dt / 3600
        shaking = self.t < self.vibration_until
        vib = abs(self.noise(0.2)) + (self.vibration if shaking else 0.3)
        ax, ay, az = (a + self.noise(0.005) for a in self.angle)
        self.battery = max(0.0, self.battery - dt * 1e-6)
        self.values.update(
            angle_x=round(ax, 3),
            angle_y=round(ay, 3),
            angle_z=round(az, 3),
            vibration=round(vib, 2),
            temperature=round(12.0 + self.noise(0.1), 1),
            battery=round(self.battery),
            tilt_alarm=max(abs(ax), abs(ay)) > 5,
            low_battery=self.battery < 20,
        )

    def event(self, name: str, args: dict[str, Any]) -> None:
        """creep{x_deg_per_h, y_deg_per_h}, jump{x, y}, vibrate{mm_s, duration_s}, settle."""
        if name == "creep":
            self.creep_deg_per_h = [_num(args, "x_deg_per_h", 0.5), _num(args, "y_deg_per_h", 0)]
        elif name == "jump":
            self.angle[0] += _num(args, "x", 3.0)
            self.angle[1] += _num(args, "y", 0.0)
        elif name == "vibrate":
            self.vibration = _num(args, "mm_s", 15.0)
            self.vibration_until = self.t + _num(args, "duration_s", 10.0)
        elif name == "settle":
            self.creep_deg_per_h = [0.0, 0.0]
            self.vibration_until = -1.0
        else:
            super().event(name, args)


PHYSICS: dict[str, type[Physics]] = {
    "manhole": ManholePhysics,
    "streetlight": StreetlightPhysics,
    "gas": GasPhysics,
    "tilt": TiltPhysics,
}
