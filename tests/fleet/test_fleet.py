"""A fleet on a virtual clock: durations from profiles and exact bytes, who may train
when, devices that leave mid-task, deadlines and over-selection, and exact resume."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import shoal
from shoal import config, experiment
from shoal.data import digits, iid
from shoal.errors import ConfigError
from shoal.fleet.backend import FleetBackend, RoundPolicy
from shoal.fleet.devices import Fleet
from shoal.fleet.spec import from_dict, load_fleet
from shoal.messages import Failure, FailureKind, TrainResult, encoded_size
from shoal.models import mlp
from shoal.runtime.backend import InProcessBackend

HP = shoal.TorchTrainer(lr=0.2, local_epochs=1, batch_size=16)


def spec(eligible=None, gflops=1.0, tiers=None, **availability):
    return from_dict(
        {
            "name": "test",
            "tier": tiers or [{"name": "only", "share": 1.0, "gflops_median": gflops, "gflops_sigma": 0.0,
                               "memory_mb": 2000, "battery_wh": 12.0, "train_watts": 2.0}],
            "network": [{"name": "wifi", "share": 1.0, "down_mbps_median": 8.0, "down_sigma": 0.0,
                         "up_mbps_median": 2.0, "up_sigma": 0.0, "rtt_ms": 50, "unmetered": True}],
            "availability": {"eligible_by_hour": eligible or [1.0] * 24, "session_minutes_median": 60,
                             "timezones": [0], "timezone_shares": [1.0], "max_tasks_per_day": 100,
                             **availability},
        }
    )  # fmt: skip


@pytest.fixture(scope="module")
def data():
    return iid(digits(), 12, seed=0, holdout_fraction=0.0)


def backend(data, fleet_spec, flops=1e6, policy=None, min_available=1):
    model = functools.partial(mlp, data.input_shape, 10, (8,))
    inner = InProcessBackend(HP, model, data, run_seed=0)
    fleet = Fleet(fleet_spec, data.client_ids, seed=0)
    return model, FleetBackend(inner, fleet, data.sizes(), flops, HP, policy or RoundPolicy(), min_available)


def tasks_for(model, clients, round_=1):
    params, _ = shoal.runtime.initial_params(model, 0)
    return shoal.FedAvg(clients_per_round=len(clients)).configure_train(
        shoal.strategy.RoundContext(round_, 0), params, clients
    )


def test_a_tasks_virtual_duration_is_download_compute_upload(data):
    model, fb = backend(data, spec(gflops=0.5), flops=2e6)
    (task,) = tasks_for(model, [data.client_ids[0]])
    (result,) = fb.train([task])
    assert isinstance(result, TrainResult)
    n = data.sizes()[task.client_id]
    down, up = 0.05 + 8 * encoded_size(task) / 8e6, 0.05 + 8 * encoded_size(result) / 2e6
    expected = down + 2e6 * n / 0.5e9 + up
    assert fb.now == pytest.approx(expected, rel=1e-12)
    assert fb.round_metrics()["round_virtual_s"] == pytest.approx(expected, rel=1e-12)
    assert fb.round_metrics()["energy_wh"] == pytest.approx(2.0 * (2e6 * n / 0.5e9) / 3600)


def test_the_share_of_eligible_devices_follows_the_local_hour():
    hours = [0.9 if h < 6 else 0.1 for h in range(24)]
    fleet = Fleet(spec(hours), [str(i) for i in range(20_000)], seed=1)
    night, day = fleet.eligible(2 * 3600.0).mean(), fleet.eligible(14 * 3600.0).mean()
    assert night == pytest.approx(0.9, abs=0.01) and day == pytest.approx(0.1, abs=0.01)


def test_an_ineligible_device_is_never_picked(data):
    metered = spec()
    metered = from_dict({**_raw(metered), "network": [
        {"name": "wifi", "share": 0.5, "down_mbps_median": 8.0, "down_sigma": 0.0, "up_mbps_median": 2.0,
         "up_sigma": 0.0, "rtt_ms": 50, "unmetered": True},
        {"name": "4g", "share": 0.5, "down_mbps_median": 8.0, "down_sigma": 0.0, "up_mbps_median": 2.0,
         "up_sigma": 0.0, "rtt_ms": 50, "unmetered": False}]})  # fmt: skip
    _, fb = backend(data, metered)
    cellular = {c for c in data.client_ids if not fb.fleet.profile(c).unmetered}
    assert cellular and not cellular & set(fb.available())


def _raw(s):
    import dataclasses

    a = dataclasses.asdict(s.availability)
    return {"name": s.name, "tier": [dataclasses.asdict(t) for t in s.tiers],
            "network": [dataclasses.asdict(n) for n in s.networks], "availability": a}  # fmt: skip


def test_a_device_that_leaves_mid_task_fails_at_that_time(data):
    first_hour_only = [1.0] + [0.0] * 23  # every device unplugs at 01:00
    model, fb = backend(data, spec(first_hour_only, gflops=1e-5), flops=1e6)  # 100 s an example
    (task,) = tasks_for(model, [data.client_ids[0]])
    (out,) = fb.train([task])
    assert isinstance(out, Failure) and out.kind is FailureKind.DROPPED
    assert "left (unplugged, busy or off Wi-Fi) 3600 s after it was sent" in out.reason
    assert fb.now == pytest.approx(3600.0)
    assert fb.round_metrics()["fleet_dropped"] == 1.0


def test_the_clock_waits_for_devices_to_become_eligible(data):
    nights = [0.0] * 22 + [1.0, 1.0]  # only 22:00-24:00
    _, fb = backend(data, spec(nights), min_available=3)
    assert len(fb.available()) == 12 and fb.now == pytest.approx(22 * 3600.0)


def test_over_selection_commits_on_the_first_answers_and_a_deadline_drops_late_ones(data):
    tiers = [{"name": "slow", "share": 0.5, "gflops_median": 1e-4, "gflops_sigma": 0.0, "memory_mb": 1,
              "battery_wh": 10, "train_watts": 1},
             {"name": "fast", "share": 0.5, "gflops_median": 1.0, "gflops_sigma": 0.0, "memory_mb": 1,
              "battery_wh": 10, "train_watts": 1}]  # fmt: skip
    model, fb = backend(data, spec(tiers=tiers), policy=RoundPolicy(commit_fraction=0.5))
    outs = fb.train(tasks_for(model, data.client_ids))
    kept = [o for o in outs if isinstance(o, TrainResult)]
    assert len(kept) == 6 and {fb.fleet.profile(o.client_id).tier for o in kept} == {"fast"}
    assert all("not needed" in o.reason for o in outs if isinstance(o, Failure))
    model, fb = backend(data, spec(tiers=tiers), policy=RoundPolicy(deadline_s=60.0))
    outs = fb.train(tasks_for(model, data.client_ids))
    late = [o for o in outs if isinstance(o, Failure)]
    assert late and all(o.kind is FailureKind.TIMEOUT and "late" in o.reason for o in late)
    assert fb.now == pytest.approx(60.0)


def test_a_fleet_run_resumes_on_the_uninterrupted_hash(tmp_path):
    raw = {
        "rounds": 4, "seed": 2, "backend": "inprocess", "fleet": "phones_test",
        "data": {"dataset": "digits", "num_clients": 30},
        "model": {"name": "mlp", "hidden": [8]},
        "strategy": {"clients_per_round": 5, "over_selection": 0.4, "deadline_s": 600.0},
        "trainer": {"lr": 0.2, "local_epochs": 1, "batch_size": 16},
    }  # fmt: skip
    fleet_file = tmp_path / "phones_test.toml"
    fleet_file.write_text(_toml(_raw(spec([0.5] * 24))))
    raw["fleet"] = str(fleet_file)
    whole = experiment.run(config.from_dict(raw), tmp_path / "whole")
    assert whole.records[-1]["virtual_hours"] > 0
    half = config.from_dict({**raw, "rounds": 2})
    experiment.run(half, tmp_path / "half")
    (tmp_path / "half" / "config.toml").write_text((tmp_path / "whole" / "config.toml").read_text())
    resumed = experiment.resume(tmp_path / "half")
    assert resumed.model_hash == whole.model_hash
    assert [r["virtual_hours"] for r in resumed.records] == [r["virtual_hours"] for r in whole.records]


def _toml(raw):
    import tomli_w

    return tomli_w.dumps(raw)


def test_a_fleet_refuses_what_it_cannot_model_yet():
    with pytest.raises(ConfigError, match="straggler_fraction = 0"):
        config.from_dict({"fleet": "phones", "strategy": {"straggler_fraction": 0.2}})
    plain = {
        "data": {"dataset": "digits", "num_clients": 4},
        "strategy": {"clients_per_round": 2, "deadline_s": 5},
    }
    with pytest.raises(ConfigError, match="need a clock"):
        experiment.build(config.from_dict(plain), None)


def test_one_eligibility_policy_serves_the_fleet_and_the_server(data):
    from shoal.fleet.policy import EligibilityPolicy
    from shoal.net import backend as net

    assert net.EligibilityPolicy is EligibilityPolicy
    raw = _raw(spec())
    raw["network"][0]["unmetered"] = False
    _, strict = backend(data, from_dict(raw))
    assert len(strict.available()) == 0  # nobody is on unmetered Wi-Fi, all day
    raw["availability"]["require_unmetered"] = False
    _, relaxed = backend(data, from_dict(raw))
    assert list(relaxed.available()) == data.client_ids and relaxed.now == 0.0


def _fleet_config(tmp_path, fleet_hours, **strategy):
    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text(_toml(_raw(spec(fleet_hours))))
    return {
        "rounds": 4, "seed": 3, "backend": "inprocess", "fleet": str(fleet_file),
        "data": {"dataset": "digits", "num_clients": 24},
        "model": {"name": "mlp", "hidden": [8]},
        "strategy": {"clients_per_round": 6, **strategy},
        "trainer": {"lr": 0.2, "local_epochs": 1, "batch_size": 16},
    }  # fmt: skip


def test_fedbuff_with_a_full_buffer_and_nothing_in_flight_is_fedavg(tmp_path):
    sync = experiment.run(config.from_dict(_fleet_config(tmp_path, None)), tmp_path / "sync")
    buffered = _fleet_config(tmp_path, None, name="fedbuff", buffer_size=6, concurrency=6)
    asynchronous = experiment.run(config.from_dict(buffered), tmp_path / "async")
    assert asynchronous.model_hash == sync.model_hash
    assert [r["virtual_hours"] for r in asynchronous.records] == [r["virtual_hours"] for r in sync.records]


def test_fedbuff_weights_stale_results_down_and_keeps_devices_busy(tmp_path):
    buffered = _fleet_config(tmp_path, [0.7] * 24, name="fedbuff", buffer_size=2, concurrency=6)
    history = experiment.run(config.from_dict(buffered), tmp_path / "async")
    in_flight = [r["in_flight"] for r in history.records]
    assert all(n >= 2 for n in in_flight)  # devices still training while the server steps
    assert all(r["clients_completed"] <= 2 for r in history.records)
    hours = [r["virtual_hours"] for r in history.records]
    assert hours == sorted(hours) and hours[-1] > 0


def test_fedbuffs_staleness_rule():
    from shoal.strategy.base import RoundContext
    from shoal.strategy.fedbuff import FedBuff

    fb = FedBuff(clients_per_round=2, buffer_size=2, staleness_exponent=0.5)
    fresh = TrainResult(5, "a", 10, {"delta": np.ones(3, np.float32)})
    stale = TrainResult(2, "b", 10, {"delta": -np.ones(3, np.float32)})  # 3 steps old: weight 1/2
    new = fb.aggregate_train(RoundContext(5, 0), np.zeros(3, np.float32), [fresh, stale], [])
    np.testing.assert_allclose(new, (10 * 1 + 10 * 0.5 * -1) / 20, rtol=1e-6)


def test_an_asynchronous_run_resumes_on_the_uninterrupted_hash(tmp_path):
    raw = _fleet_config(tmp_path, [0.6] * 24, name="fedbuff", buffer_size=2, concurrency=5)
    raw["rounds"] = 6
    whole = experiment.run(config.from_dict(raw), tmp_path / "whole")
    experiment.run(config.from_dict({**raw, "rounds": 3}), tmp_path / "half")
    (tmp_path / "half" / "config.toml").write_text((tmp_path / "whole" / "config.toml").read_text())
    resumed = experiment.resume(tmp_path / "half")
    assert resumed.model_hash == whole.model_hash
    assert [r["in_flight"] for r in resumed.records] == [r["in_flight"] for r in whole.records]


def test_fedbuff_needs_a_clock_and_refuses_what_it_cannot_claim():
    with pytest.raises(ConfigError, match="on a clock"):
        experiment.build(
            config.from_dict({"data": {"dataset": "digits"}, "strategy": {"name": "fedbuff"}}), None
        )
    with pytest.raises(ConfigError, match="asynchronous participation"):
        config.from_dict({"fleet": "phones", "strategy": {"name": "fedbuff"},
                          "privacy": {"mode": "central", "noise_multiplier": 1.0}})  # fmt: skip


def test_a_fleet_runs_report_shows_time_to_accuracy_and_who_contributes(tmp_path):
    from shoal.report import render

    raw = _fleet_config(tmp_path, [0.6] * 24)
    experiment.run(config.from_dict(raw), tmp_path / "run")
    page = render(tmp_path / "run").read_text()
    for title in ("<h2>Fleet</h2>", "Accuracy over virtual time", "Who contributes, by tier", "Results lost"):
        assert title in page
    other = page[page.index("<h2>Other metrics</h2>") :] if "<h2>Other metrics</h2>" in page else ""
    assert "tier_only_completed" not in other and "virtual_hours" not in other  # shown above, not twice


def test_measured_devices_from_a_trace_replace_their_drawn_profiles(tmp_path, data):
    (tmp_path / "measured.csv").write_text(
        "device,gflops,down_mbps,up_mbps,rtt_ms,unmetered,timezone,tier\n"
        "0,0.25,4,1,80,true,5.5,lab-phone\n"
        "1,3.0,100,50,10,false,0,lab-phone\n"
    )
    raw = _raw(spec())
    (tmp_path / "fleet.toml").write_text(_toml({**raw, "devices": "measured.csv"}))
    fleet_spec = load_fleet(tmp_path / "fleet.toml")
    model, fb = backend(data, fleet_spec, flops=1e6)
    p = fb.fleet.profile("0")
    assert (p.tier, p.gflops, p.down_bps, p.up_bps, p.rtt_s, p.utc_offset_h) == (
        "lab-phone",
        0.25,
        4e6,
        1e6,
        0.08,
        5.5,
    )
    assert "1" not in set(fb.available())  # metered, as measured
    (task,) = tasks_for(model, ["0"])
    (result,) = fb.train([task])
    n = data.sizes()["0"]
    expected = (
        p.transfer_s(encoded_size(task), False) + 1e6 * n / 0.25e9 + p.transfer_s(encoded_size(result), True)
    )
    assert (
        fb.now == pytest.approx(expected, rel=1e-12) and fb.round_metrics()["tier_lab-phone_completed"] == 1.0
    )
    (tmp_path / "bad.csv").write_text("device,gflops\n0,1\n")
    (tmp_path / "bad.toml").write_text(_toml({**raw, "devices": "bad.csv"}))
    with pytest.raises(ConfigError, match="lacks"):
        load_fleet(tmp_path / "bad.toml")
    (tmp_path / "pickled.toml").write_text(_toml({**raw, "devices": "devices.pkl"}))
    (tmp_path / "devices.pkl").write_bytes(b"\x80\x04")
    with pytest.raises(ConfigError, match="never pickle"):
        load_fleet(tmp_path / "pickled.toml")


def test_a_device_training_off_the_charger_fails_when_its_battery_hits_the_floor(data):
    off_charger = spec([0.0] * 24, gflops=1e-6, require_charging=False, require_idle=False, battery_floor=0.2)
    model, fb = backend(data, off_charger, flops=1e6)  # 1,000 s an example: a day of training
    ids = list(fb.available())
    assert ids  # nobody is plugged in, but the policy lets them train on battery
    (task,) = tasks_for(model, [ids[0]])
    level = fb.fleet.off_charger_battery(ids[0], 0.0)
    (out,) = fb.train([task])
    p = fb.fleet.profile(ids[0])
    began = p.transfer_s(encoded_size(task), up=False)
    flat = began + (level - 0.2) * p.battery_wh * 3600 / p.train_watts  # 12 Wh at 2 W
    assert isinstance(out, Failure) and "battery fell to the policy's floor" in out.reason
    assert fb.now == pytest.approx(flat)
    assert fb.round_metrics()["battery_pct_max"] == pytest.approx(100 * (level - 0.2), rel=1e-6)


def test_secure_aggregation_runs_under_a_fleets_drops(tmp_path):
    raw = _fleet_config(tmp_path, [0.9] * 24, clients_per_round=12, over_selection=0.25, deadline_s=600.0)
    raw.update(rounds=2, secagg={"mode": "secagg"})
    raw["data"]["num_clients"] = 40
    history = experiment.run(config.from_dict(raw), tmp_path / "run")
    for r in history.records:  # 15 picked, the first 12 answers unmasked together
        assert not r["aborted"] and r["clients_selected"] == 15 and r["clients_completed"] == 12
        assert r["fleet_not_needed"] + r["fleet_dropped"] + r["fleet_late"] == 3
    with pytest.raises(ConfigError, match=r"over_selection below 0\.50"):
        config.from_dict({**raw, "strategy": {**raw["strategy"], "over_selection": 0.5}})


def test_secure_aggregation_says_when_too_few_neighbours_survive():
    from shoal.secagg.common import ThresholdError, complete_graph
    from shoal.secagg.server import SecAggServer
    from shoal.secagg.transform import LocalDevices

    channel = LocalDevices()
    ids = [str(i) for i in range(9)]
    channel.open_round(ids)
    server = SecAggServer(1, ids, 6, 4, complete_graph(9), channel, 1.0, 1 << 16)
    server.setup()
    masked = {c: channel.devices[c].masked_input(np.zeros(4, np.float32)) for c in ids[:6]}
    with pytest.raises(ThresholdError, match="a survivor has 5 surviving neighbours and threshold is 6"):
        server.aggregate(masked)


@pytest.mark.parametrize("name", ["digits_fleet", "digits_fleet_fedbuff", "population_million"])
def test_the_fleet_examples_run(name, tmp_path):
    from pathlib import Path

    raw = config.to_dict(config.load(Path(__file__).parents[2] / "examples" / f"{name}.toml"))
    history = experiment.run(config.from_dict({**raw, "rounds": 2}), tmp_path / name)
    assert len(history.records) == 2 and history.records[-1]["virtual_hours"] >= 0
    assert not any(r["aborted"] for r in history.records)
