"""Every device of a fleet, drawn from the run's seed; nothing per device is stored.

A device's key is a 64-bit hash of (seed, client id). Each attribute is a uniform made by
hashing the key with the attribute's salt (and, for what changes over time, the index of
the stretch of the day), so any device's profile, or its state at any virtual time, costs
O(1), and whole populations are numpy arrays. The hash is splitmix64's finalizer: a
bijective mix whose outputs pass BigCrush, and counter-based, so nothing depends on the
order in which devices are asked about.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shoal.data.population import IdRange
from shoal.fleet.spec import FleetSpec

DAY_S = 86_400.0

# One salt per drawn quantity: a new quantity takes a new salt, so old draws never move.
_TIER, _GFLOPS_A, _GFLOPS_B, _NETWORK, _DOWN_A, _DOWN_B, _UP_A, _UP_B, _ZONE, _STRETCH, _BATTERY = range(
    1, 12
)


def _mix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        out: np.ndarray = x ^ (x >> np.uint64(31))
        return out


def uniform(keys: np.ndarray, salt: int, counter: np.ndarray | int = 0) -> np.ndarray:
    """A uniform in [0, 1) per key, fixed by (key, salt, counter)."""
    with np.errstate(over="ignore"):
        c = np.asarray(counter).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h = _mix(_mix(keys ^ np.uint64(salt) * np.uint64(0xD1B54A32D192ED03)) ^ c)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _normal(keys: np.ndarray, salt_a: int, salt_b: int) -> np.ndarray:
    """A standard normal per key (Box-Muller on two of its uniforms)."""
    u1 = 1.0 - uniform(keys, salt_a)  # (0, 1]: log is finite
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * uniform(keys, salt_b))


def device_keys(client_ids: Sequence[str], seed: int) -> np.ndarray:
    """Each client id's 64-bit key under ``seed``: BLAKE2b, so ids need no structure; for
    a population's ids ``"0"`` .. ``"n-1"`` (:class:`~shoal.data.population.IdRange`), a
    mix of the index, made for a million at once."""
    if isinstance(client_ids, IdRange):
        with np.errstate(over="ignore"):
            base = _mix(np.array([seed], dtype=np.uint64) ^ np.uint64(0x5851F42D4C957F2D))
            return _mix(np.arange(len(client_ids), dtype=np.uint64) ^ base)
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(f"{seed}\x00{c}".encode(), digest_size=8).digest(), "little")
            for c in client_ids
        ),
        dtype=np.uint64,
        count=len(client_ids),
    )


def _categorical(u: np.ndarray, shares: Sequence[float]) -> np.ndarray:
    edges = np.cumsum(shares)[:-1]
    return np.searchsorted(edges, u, side="right").astype(np.int64)


@dataclass(frozen=True)
class DeviceProfile:
    """What one device is: its tier's compute, memory and battery, its network, its zone."""

    client_id: str
    tier: str
    gflops: float
    memory_mb: float
    battery_wh: float  # 0: mains powered
    train_watts: float
    network: str
    down_bps: float
    up_bps: float
    rtt_s: float
    unmetered: bool
    utc_offset_h: float

    def transfer_s(self, nbytes: int, up: bool) -> float:
        """One message of ``nbytes`` each way's latency plus its bits at the link's rate."""
        return self.rtt_s + 8.0 * nbytes / (self.up_bps if up else self.down_bps)

    def compute_s(self, flops: float) -> float:
        return flops / (self.gflops * 1e9)


class Fleet:
    """The devices behind a population of client ids, and when each may train."""

    def __init__(self, spec: FleetSpec, client_ids: Sequence[str], seed: int) -> None:
        self.spec, self.seed = spec, seed
        self.ids = client_ids if isinstance(client_ids, IdRange) else list(client_ids)
        self._index = None if isinstance(self.ids, IdRange) else {c: i for i, c in enumerate(self.ids)}
        self.keys = device_keys(self.ids, seed)
        a = spec.availability
        self.stretch_s = a.session_minutes_median * 60.0
        self._p = np.asarray(a.eligible_by_hour, dtype=np.float64)
        self.tier_of = _categorical(uniform(self.keys, _TIER), [t.share for t in spec.tiers])
        self.network_of = _categorical(uniform(self.keys, _NETWORK), [n.share for n in spec.networks])
        zone = _categorical(uniform(self.keys, _ZONE), a.timezone_shares)
        self.offset_s = np.asarray(a.timezones, dtype=np.float64)[zone] * 3600.0
        self._unmetered = np.array([n.unmetered for n in spec.networks])[self.network_of]
        self._mains = np.array([t.battery_wh == 0 for t in spec.tiers])[self.tier_of]
        for cid, d in spec.trace.items():  # measured devices: their own zone and network
            if (i := self._position(cid)) is not None:
                self.offset_s[i], self._unmetered[i] = d.timezone * 3600.0, d.unmetered
                self._mains[i] = d.battery_wh == 0

    def _position(self, client_id: str) -> int | None:
        if isinstance(self.ids, IdRange):
            return self.ids.position(client_id)
        return self._index.get(client_id) if self._index is not None else None

    @property
    def tier_names(self) -> list[str]:
        """Every tier a device may report: the fleet's, and the trace's own."""
        names = [t.name for t in self.spec.tiers]
        return names + sorted({d.tier for d in self.spec.trace.values()} - set(names))

    def index(self, client_id: str) -> int:
        """Where ``client_id`` sits in the population."""
        k = self._position(client_id)
        if k is None:
            raise KeyError(f"{client_id!r} is not a device of this fleet")
        return k

    # -- what a device is ------------------------------------------------------------------
    @functools.lru_cache(maxsize=65_536)  # noqa: B019 (one fleet a run; bounded)
    def profile(self, client_id: str) -> DeviceProfile:
        i = self.index(client_id)
        if (d := self.spec.trace.get(client_id)) is not None:
            return DeviceProfile(
                client_id=client_id,
                tier=d.tier,
                gflops=d.gflops,
                memory_mb=d.memory_mb,
                battery_wh=d.battery_wh,
                train_watts=d.train_watts,
                network="traced",
                down_bps=d.down_mbps * 1e6,
                up_bps=d.up_mbps * 1e6,
                rtt_s=d.rtt_ms / 1000.0,
                unmetered=d.unmetered,
                utc_offset_h=d.timezone,
            )
        key = self.keys[i : i + 1]
        t, n = self.spec.tiers[self.tier_of[i]], self.spec.networks[self.network_of[i]]
        gflops = t.gflops_median * math.exp(t.gflops_sigma * float(_normal(key, _GFLOPS_A, _GFLOPS_B)[0]))
        down = n.down_mbps_median * math.exp(n.down_sigma * float(_normal(key, _DOWN_A, _DOWN_B)[0]))
        up = n.up_mbps_median * math.exp(n.up_sigma * float(_normal(key, _UP_A, _UP_B)[0]))
        return DeviceProfile(
            client_id=client_id,
            tier=t.name,
            gflops=gflops,
            memory_mb=t.memory_mb,
            battery_wh=t.battery_wh,
            train_watts=t.train_watts,
            network=n.name,
            down_bps=down * 1e6,
            up_bps=up * 1e6,
            rtt_s=n.rtt_ms / 1000.0,
            unmetered=bool(n.unmetered),
            utc_offset_h=float(self.offset_s[i] / 3600.0),
        )

    # -- when it may train -----------------------------------------------------------------
    def _stretch(self, i: np.ndarray | slice, t: float) -> np.ndarray:
        """The index of the stretch of local time each device is in at virtual time ``t``."""
        k: np.ndarray = np.floor((t + self.offset_s[i]) / self.stretch_s).astype(np.int64)
        return k

    def _idle_and_charging(self, i: np.ndarray | slice, k: np.ndarray) -> np.ndarray:
        local_hour = ((k * self.stretch_s) % DAY_S / 3600.0).astype(np.int64)
        return uniform(self.keys[i], _STRETCH, k) < self._p[local_hour]

    def eligible(self, t: float) -> np.ndarray:
        """Which devices the policy lets train at ``t``: a mask over the population."""
        everyone = slice(None)
        k = self._stretch(everyone, t)
        plugged = self._idle_and_charging(everyone, k)  # the trace: idle and charging together
        policy = self.spec.availability.policy()
        return np.asarray(policy.eligible(plugged, self._unmetered, plugged, self.battery(everyone, k)))

    def battery(self, i: np.ndarray | slice, k: np.ndarray) -> np.ndarray:
        """Charge at the start of a stretch off the charger (mains-powered devices: full)."""
        level = 0.1 + 0.9 * uniform(self.keys[i], _BATTERY, k)
        return np.where(self._mains[i], 1.0, level)

    def off_charger_battery(self, client_id: str, t: float) -> float | None:
        """The battery level of a device training off the charger at ``t`` (allowed when
        the policy does not require charging), or None when it is plugged in or on mains."""
        i = np.array([self.index(client_id)])
        k = self._stretch(i, t)
        if self._idle_and_charging(i, k)[0] or self._mains[i[0]]:
            return None
        return float(self.battery(i, k)[0])

    def online_until(self, client_id: str, t: float, horizon_s: float = 7 * DAY_S) -> float:
        """When the eligible stretch ``client_id`` is in at ``t`` ends (the device leaves:
        unplugged, busy, off Wi-Fi), looking at most ``horizon_s`` ahead."""
        i = np.array([self.index(client_id)])
        k = self._stretch(i, t)
        if not self._idle_and_charging(i, k)[0]:  # off the charger: only allowed, and only
            # ended by its battery, when the policy does not require charging
            return t if self.spec.availability.require_charging else t + horizon_s
        end = (k[0] + 1) * self.stretch_s - self.offset_s[i[0]]
        while end - t < horizon_s and self._idle_and_charging(i, k + 1)[0]:
            k = k + 1
            end += self.stretch_s
        return float(end)

    def local_day(self, client_id: str, t: float) -> int:
        return math.floor((t + float(self.offset_s[self.index(client_id)])) / DAY_S)
