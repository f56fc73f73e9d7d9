"""A fleet described in TOML: device tiers, networks and when devices may train.

The file format (``shoal/fleet/data/phones.toml`` is the reference, its sources in
``docs/fleet-sources.md``): ``[[tier]]`` tables (compute, memory, battery), ``[[network]]``
tables (bandwidth, latency, metered or not), one ``[availability]`` table (the share of
devices eligible by local hour, stretch length, time zones, the eligibility policy). A
user's own fleet is a file in the same format; its optional ``devices = "FILE"`` names a
trace of measured devices (CSV or JSON, never pickle; see :func:`load_trace`) that
replaces the drawn profile of every device it lists.
"""

from __future__ import annotations

import csv
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.errors import ConfigError
from shoal.fleet.policy import EligibilityPolicy

DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class Tier:
    name: str
    share: float
    gflops_median: float  # sustained on-device training throughput, GFLOP/s (log-normal)
    gflops_sigma: float
    memory_mb: float
    battery_wh: float  # 0: mains powered
    train_watts: float  # extra draw while training


@dataclass(frozen=True)
class Network:
    name: str
    share: float
    down_mbps_median: float  # log-normal
    down_sigma: float
    up_mbps_median: float
    up_sigma: float
    rtt_ms: float
    unmetered: bool


@dataclass(frozen=True)
class Availability:
    """When devices may train: each device's day is cut into stretches of
    ``session_minutes_median`` minutes, and in each it is idle and charging with the
    probability ``eligible_by_hour`` gives for the local hour the stretch starts in. The
    share of a time zone's devices eligible at a local hour is that probability, and an
    eligible stretch runs on while the next one is eligible too: a device may leave
    mid-task."""

    eligible_by_hour: tuple[float, ...]
    session_minutes_median: float
    timezones: tuple[float, ...]
    timezone_shares: tuple[float, ...]
    battery_floor: float = 0.2
    max_tasks_per_day: int = 1
    require_charging: bool = True
    require_unmetered: bool = True
    require_idle: bool = True

    def policy(self) -> EligibilityPolicy:
        return EligibilityPolicy(
            self.require_charging, self.require_unmetered, self.require_idle, self.battery_floor
        )


@dataclass(frozen=True)
class FleetSpec:
    name: str
    tiers: tuple[Tier, ...]
    networks: tuple[Network, ...]
    availability: Availability
    description: str = ""
    source: str = field(default="", compare=False)  # the file it came from
    trace: Mapping[str, TracedDevice] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        where = self.source or self.name
        for kind, parts in (("tier", self.tiers), ("network", self.networks)):
            if not parts:
                raise ConfigError(f"fleet {where}: needs at least one [[{kind}]]")
            total = sum(p.share for p in parts)
            if not math.isclose(total, 1.0, abs_tol=1e-6) or min(p.share for p in parts) < 0:
                raise ConfigError(
                    f"fleet {where}: [[{kind}]] shares must be >= 0 and sum to 1, got {total:g}"
                )
        for t in self.tiers:
            _positive(where, f"tier {t.name!r} gflops_median", t.gflops_median)
            _at_least(where, f"tier {t.name!r} gflops_sigma", t.gflops_sigma, 0)
            _at_least(where, f"tier {t.name!r} battery_wh", t.battery_wh, 0)
            _at_least(where, f"tier {t.name!r} train_watts", t.train_watts, 0)
        for n in self.networks:
            _positive(where, f"network {n.name!r} down_mbps_median", n.down_mbps_median)
            _positive(where, f"network {n.name!r} up_mbps_median", n.up_mbps_median)
            _at_least(where, f"network {n.name!r} sigmas", min(n.down_sigma, n.up_sigma), 0)
            _at_least(where, f"network {n.name!r} rtt_ms", n.rtt_ms, 0)
        a = self.availability
        if len(a.eligible_by_hour) != 24 or not all(0 <= p <= 1 for p in a.eligible_by_hour):
            raise ConfigError(f"fleet {where}: availability.eligible_by_hour needs 24 values in [0, 1]")
        _positive(where, "availability.session_minutes_median", a.session_minutes_median)
        if len(a.timezones) != len(a.timezone_shares) or not a.timezones:
            raise ConfigError(f"fleet {where}: availability.timezones and timezone_shares differ in length")
        if not math.isclose(sum(a.timezone_shares), 1.0, abs_tol=1e-6):
            raise ConfigError(f"fleet {where}: availability.timezone_shares must sum to 1")
        if not 0 <= a.battery_floor < 1:
            raise ConfigError(f"fleet {where}: availability.battery_floor must be in [0, 1)")
        _at_least(where, "availability.max_tasks_per_day", a.max_tasks_per_day, 1)


def _positive(where: str, key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"fleet {where}: {key} must be > 0, got {value}")


def _at_least(where: str, key: str, value: float, low: float) -> None:
    if value < low:
        raise ConfigError(f"fleet {where}: {key} must be >= {low}, got {value}")


def builtin_fleets() -> list[str]:
    return sorted(p.stem for p in DATA.glob("*.toml"))


def load_fleet(name_or_path: str | Path) -> FleetSpec:
    """A built-in fleet by name (``phones``, ``iot``) or a TOML file of the same format."""
    path = Path(name_or_path)
    if not path.suffix and (DATA / f"{name_or_path}.toml").is_file():
        path = DATA / f"{name_or_path}.toml"
    if not path.is_file():
        raise ConfigError(
            f"fleet {str(name_or_path)!r}: no such file; name a built-in fleet "
            f"({', '.join(builtin_fleets())}) or a TOML file in their format "
            "(shoal/fleet/data/phones.toml, explained in docs/fleet-sources.md)"
        )
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"fleet {path}: not valid TOML: {exc}") from None
    devices = raw.get("devices")
    trace = load_trace(path.parent / str(devices)) if devices is not None else {}
    return from_dict({k: v for k, v in raw.items() if k != "devices"}, str(path), trace)


def from_dict(
    raw: Mapping[str, Any], source: str = "", trace: Mapping[str, TracedDevice] | None = None
) -> FleetSpec:
    where = source or str(raw.get("name", "fleet"))
    try:
        tiers = tuple(Tier(**t) for t in raw.get("tier", []))
        networks = tuple(Network(**n) for n in raw.get("network", []))
        avail = dict(raw["availability"])
        for key in ("eligible_by_hour", "timezones", "timezone_shares"):
            avail[key] = tuple(float(v) for v in avail.get(key, ()))
        availability = Availability(**avail)
    except KeyError as exc:
        raise ConfigError(f"fleet {where}: missing {exc}; see shoal/fleet/data/phones.toml") from None
    except TypeError as exc:  # an unknown or missing key in one table
        raise ConfigError(f"fleet {where}: {exc}; see shoal/fleet/data/phones.toml for the keys") from None
    return FleetSpec(
        name=str(raw.get("name", Path(source).stem if source else "fleet")),
        tiers=tiers,
        networks=networks,
        availability=availability,
        description=str(raw.get("description", "")),
        source=source,
        trace=dict(trace or {}),
    )


@dataclass(frozen=True)
class TracedDevice:
    """One measured device of a trace."""

    gflops: float
    down_mbps: float
    up_mbps: float
    rtt_ms: float
    unmetered: bool
    timezone: float  # UTC offset, hours
    tier: str = "traced"
    memory_mb: float = 0.0
    battery_wh: float = 0.0  # 0: mains powered
    train_watts: float = 0.0


_REQUIRED = ("device", "gflops", "down_mbps", "up_mbps", "rtt_ms", "unmetered", "timezone")
_OPTIONAL = ("tier", "memory_mb", "battery_wh", "train_watts")


def load_trace(path: Path) -> dict[str, TracedDevice]:
    """Measured devices, one row each: a CSV with a header row, or a JSON list of objects,
    with ``device`` (its client id), ``gflops``, ``down_mbps``, ``up_mbps``, ``rtt_ms``,
    ``unmetered`` (true/false), ``timezone`` (UTC offset in hours), and optionally
    ``tier``, ``memory_mb``, ``battery_wh``, ``train_watts``."""
    if not path.is_file():
        raise ConfigError(f"fleet trace {path} does not exist (devices = ... is relative to the fleet file)")
    if path.suffix == ".json":
        try:
            rows = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"fleet trace {path}: not valid JSON: {exc}") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ConfigError(f"fleet trace {path}: expected a JSON list of objects, one per device")
    elif path.suffix == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        raise ConfigError(f"fleet trace {path}: use a .csv or .json file (never pickle)")
    out: dict[str, TracedDevice] = {}
    for n, row in enumerate(rows, start=1):
        missing = [k for k in _REQUIRED if k not in row]
        extra = sorted(set(row) - {*_REQUIRED, *_OPTIONAL})
        if missing or extra:
            raise ConfigError(
                f"fleet trace {path}: row {n} lacks {missing} or has unknown columns {extra}; "
                f"the columns are {', '.join(_REQUIRED + _OPTIONAL)}"
            )
        try:
            unmetered = str(row["unmetered"]).strip().lower()
            if unmetered not in ("true", "false", "1", "0"):
                raise ValueError(f"unmetered must be true or false, got {row['unmetered']!r}")
            device = TracedDevice(
                gflops=float(row["gflops"]),
                down_mbps=float(row["down_mbps"]),
                up_mbps=float(row["up_mbps"]),
                rtt_ms=float(row["rtt_ms"]),
                unmetered=unmetered in ("true", "1"),
                timezone=float(row["timezone"]),
                tier=str(row.get("tier") or "traced"),
                **{
                    k: float(row[k])
                    for k in ("memory_mb", "battery_wh", "train_watts")
                    if row.get(k) not in (None, "")
                },
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"fleet trace {path}: row {n}: {exc}") from None
        if min(device.gflops, device.down_mbps, device.up_mbps) <= 0 or device.rtt_ms < 0:
            raise ConfigError(f"fleet trace {path}: row {n}: speeds must be > 0 and rtt_ms >= 0")
        out[str(row["device"])] = device
    return out
