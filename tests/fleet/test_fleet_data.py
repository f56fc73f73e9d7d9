"""The built-in fleet files (shoal/fleet/data/*.toml) keep their schema; sources in docs/fleet-sources.md."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "shoal" / "fleet" / "data"
FLEETS = ["phones", "iot", "vehicles"]

TIER_KEYS = {"name", "share", "gflops_median", "gflops_sigma", "memory_mb", "battery_wh", "train_watts"}
NETWORK_KEYS = {
    "name",
    "share",
    "down_mbps_median",
    "down_sigma",
    "up_mbps_median",
    "up_sigma",
    "rtt_ms",
    "unmetered",
}
AVAILABILITY_KEYS = {
    "eligible_by_hour",
    "session_minutes_median",
    "timezones",
    "timezone_shares",
    "battery_floor",
    "max_tasks_per_day",
}


def load(name: str) -> dict:
    return tomllib.loads((DATA / f"{name}.toml").read_text())


@pytest.mark.parametrize("name", FLEETS)
def test_header_and_names(name):
    fleet = load(name)
    assert fleet["name"] == name
    assert fleet["description"].strip()
    for table in ("tier", "network"):
        names = [row["name"] for row in fleet[table]]
        assert names and len(set(names)) == len(names), f"{name}: [[{table}]] names must be unique"


@pytest.mark.parametrize("name", FLEETS)
def test_tiers(name):
    tiers = load(name)["tier"]
    assert math.isclose(sum(t["share"] for t in tiers), 1.0, abs_tol=1e-6)
    for t in tiers:
        assert set(t) == TIER_KEYS, t["name"]
        assert t["share"] >= 0
        assert t["gflops_median"] > 0 and t["memory_mb"] > 0 and t["train_watts"] > 0
        assert t["gflops_sigma"] >= 0 and t["battery_wh"] >= 0


@pytest.mark.parametrize("name", FLEETS)
def test_networks(name):
    networks = load(name)["network"]
    assert math.isclose(sum(n["share"] for n in networks), 1.0, abs_tol=1e-6)
    for n in networks:
        assert set(n) == NETWORK_KEYS, n["name"]
        assert n["share"] >= 0
        assert n["down_mbps_median"] > 0 and n["up_mbps_median"] > 0 and n["rtt_ms"] > 0
        assert n["down_sigma"] >= 0 and n["up_sigma"] >= 0
        assert isinstance(n["unmetered"], bool)


@pytest.mark.parametrize("name", FLEETS)
def test_availability(name):
    a = load(name)["availability"]
    assert set(a) == AVAILABILITY_KEYS
    hours = a["eligible_by_hour"]
    assert len(hours) == 24 and all(0 <= p <= 1 for p in hours)
    assert a["session_minutes_median"] > 0
    assert len(a["timezones"]) == len(a["timezone_shares"]) > 0
    assert all(-12 <= tz <= 14 for tz in a["timezones"])
    assert all(s >= 0 for s in a["timezone_shares"])
    assert math.isclose(sum(a["timezone_shares"]), 1.0, abs_tol=1e-6)
    assert 0 <= a["battery_floor"] < 1
    assert isinstance(a["max_tasks_per_day"], int) and a["max_tasks_per_day"] >= 1


def test_phones_follow_their_sources():
    phones, iot = load("phones"), load("iot")
    hours = phones["availability"]["eligible_by_hour"]
    # Bonawitz et al. 2019: a 4x swing over the day, more devices eligible at night
    assert math.isclose(max(hours) / min(hours), 4.0, rel_tol=0.05)
    assert hours.index(max(hours)) < 6
    assert any(n["unmetered"] for n in phones["network"])
    assert all(t["battery_wh"] > 0 for t in phones["tier"])
    # the IoT fleet is mains powered, weaker on the whole, and flatter over the day
    assert all(t["battery_wh"] == 0 for t in iot["tier"])

    def typical_gflops(fleet: dict) -> float:
        return math.exp(sum(t["share"] * math.log(t["gflops_median"]) for t in fleet["tier"]))

    def mean_memory(fleet: dict) -> float:
        return sum(t["share"] * t["memory_mb"] for t in fleet["tier"])

    assert typical_gflops(iot) < typical_gflops(phones)
    assert mean_memory(iot) < mean_memory(phones)
    iot_hours = iot["availability"]["eligible_by_hour"]
    assert max(iot_hours) / min(iot_hours) < max(hours) / min(hours)


def test_the_sources_page_covers_every_fleet():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "fleet-sources.md").read_text()
    for name in FLEETS:
        assert f"{name}.toml" in doc
