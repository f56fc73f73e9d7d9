from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import shoal
from shoal.client import ClientState, TorchTrainer
from shoal.data import ClientData, FederatedDataset
from shoal.messages import EvalResult, EvalTask, TrainResult, TrainTask
from shoal.params import from_module, model_hash
from shoal.runtime import Simulation, initial_params
from shoal.transforms import HalfPrecision

TRAINER = TorchTrainer(lr=0.3, local_epochs=3, batch_size=16)


def run(model, data, rounds=3, **kw):
    strategy = kw.pop("strategy", shoal.FedAvg(clients_per_round=5))
    return shoal.simulate(model, data, strategy, kw.pop("trainer", TRAINER), rounds=rounds, **kw)


def test_one_client_one_step_equals_plain_sgd(small_mlp, fed_digits):
    one = FederatedDataset("one", {"solo": fed_digits["0"]}, 10, fed_digits.input_shape)
    trainer = TorchTrainer(lr=0.1, local_steps=1, batch_size=len(one["solo"].train))  # full batch: no order
    h = run(
        small_mlp,
        one,
        rounds=1,
        strategy=shoal.FedAvg(clients_per_round=1),
        trainer=trainer,
        seed=5,
    )

    init, _ = initial_params(small_mlp, 5)
    model = small_mlp()
    shoal.to_module(init, h.spec, model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = one["solo"].train
    F.cross_entropy(model(data.x), data.y).backward()
    opt.step()
    expected, _ = from_module(model)
    np.testing.assert_allclose(h.params, expected, rtol=0, atol=1e-7)
    assert not np.allclose(h.params, init)


def test_same_seed_same_model_hash(small_mlp, fed_digits):
    a = run(small_mlp, fed_digits, seed=11)
    b = run(small_mlp, fed_digits, seed=11)
    c = run(small_mlp, fed_digits, seed=12)
    assert a.model_hash == b.model_hash != c.model_hash
    assert a.final_accuracy is not None and a.final_accuracy > 0.5


def test_resume_matches_an_uninterrupted_run(tmp_path, small_mlp, fed_digits):
    full = run(small_mlp, fed_digits, rounds=4, seed=3)
    first = run(small_mlp, fed_digits, rounds=2, seed=3, out_dir=tmp_path)
    assert len(first.records) == 2
    resumed = run(small_mlp, fed_digits, rounds=4, seed=3, out_dir=tmp_path, resume=True)
    assert resumed.model_hash == full.model_hash
    assert [r["round"] for r in resumed.records] == [1, 2, 3, 4]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and (tmp_path / "model.safetensors").is_file()


def test_resume_drops_rounds_logged_after_the_checkpoint(tmp_path, small_mlp, fed_digits):
    run(small_mlp, fed_digits, rounds=2, seed=3, out_dir=tmp_path)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"round": 3, "torn": tru')  # a crash mid-write
    h = run(small_mlp, fed_digits, rounds=3, seed=3, out_dir=tmp_path, resume=True)
    assert [r["round"] for r in h.records] == [1, 2, 3] and "torn" not in h.records[-1]


class Flaky:
    """Client 0 crashes; client 1 sends NaN; client 2 sends the wrong shape; client 3 reports a
    NaN loss (its model diverged), which the wire format cannot carry; the rest are honest."""

    def __init__(self, inner):
        self.inner = inner

    def train(self, task: TrainTask, data: ClientData, state: dict) -> TrainResult:
        if task.client_id == "0":
            raise RuntimeError("out of memory on device")
        result = self.inner.train(task, data, state)
        if task.client_id == "1":
            return dataclasses.replace(
                result, payload={"delta": np.full_like(result.payload["delta"], np.nan)}
            )
        if task.client_id == "2":
            return dataclasses.replace(result, payload={"delta": np.zeros(3, np.float32)})
        if task.client_id == "3":
            return dataclasses.replace(result, metrics={"train_loss": float("nan")})
        return result

    def evaluate(self, task: EvalTask, data: ClientData, state: ClientState) -> EvalResult:
        return self.inner.evaluate(task, data)


@dataclasses.dataclass(frozen=True)
class FlakyBuilder:
    def build(self, model):
        return Flaky(TRAINER.build(model))


def test_bad_clients_cost_only_their_own_update(small_mlp, fed_digits):
    h = run(
        small_mlp,
        fed_digits,
        rounds=2,
        trainer=FlakyBuilder(),
        strategy=shoal.FedAvg(clients_per_round=20),
    )
    for r in h.records:
        assert (r["clients_completed"], r["clients_failed"]) == (16, 4) and not r["aborted"]
    reasons = " ".join(h.records[0]["failures"])
    assert "out of memory" in reasons and "finite float32" in reasons and "cannot be encoded" in reasons
    assert np.isfinite(h.params).all() and h.final_accuracy > 0.5


def test_round_aborted_below_min_clients_keeps_the_model(small_mlp, fed_digits):
    sim = Simulation(
        small_mlp,
        fed_digits,
        shoal.FedAvg(clients_per_round=3, min_clients=3),
        FlakyBuilder(),
        seed=0,
    )
    sim.params = sim.params.copy()
    before = model_hash(sim.params)
    # Force the three crashing/malicious clients to be the only ones available.
    sim.data = FederatedDataset(
        "bad",
        {c: fed_digits[c] for c in ("0", "1", "2")},
        10,
        fed_digits.input_shape,
        fed_digits.test,
    )
    record = sim.step(last=1)
    assert record["aborted"] and "min_clients is 3" in record["abort_reason"]
    assert model_hash(sim.params) == before


def test_federated_evaluation_on_client_holdouts(small_mlp, fed_digits):
    h = run(
        small_mlp,
        fed_digits,
        rounds=2,
        federated_eval_every=1,
        federated_eval_clients=4,
        eval_every=0,
    )
    last = h.records[-1]
    assert last["fed_eval_clients"] == 4 and 0 <= last["fed_eval_accuracy"] <= 1
    assert "test_accuracy" not in last and h.final_accuracy == last["fed_eval_accuracy"]


def test_half_precision_halves_bytes_up_and_still_learns(small_mlp, fed_digits):
    plain = run(small_mlp, fed_digits, rounds=3)
    half = run(small_mlp, fed_digits, rounds=3, transforms=[HalfPrecision()])
    ratio = half.records[0]["bytes_up"] / plain.records[0]["bytes_up"]
    assert 0.45 < ratio < 0.6
    assert half.final_accuracy > plain.final_accuracy - 0.05
    assert half.model_hash != plain.model_hash


def test_initial_params_and_pretrained_start(small_mlp, fed_digits):
    a, spec = initial_params(small_mlp, 0)
    b, _ = initial_params(small_mlp, 0)
    assert np.array_equal(a, b)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    initial_params(small_mlp, 1)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    h = run(small_mlp, fed_digits, rounds=1, params=a + 0.01)
    assert h.spec == spec
    with pytest.raises(shoal.SpecMismatchError):
        run(small_mlp, fed_digits, rounds=1, params=a[:-1])


def test_a_run_that_commits_no_round_says_so(small_mlp, fed_digits):
    strategy = shoal.FedAvg(clients_per_round=2, min_clients=3)  # every round aborts
    with pytest.warns(RuntimeWarning, match="no round committed.*min_clients is 3"):
        history = run(small_mlp, fed_digits, rounds=2, strategy=strategy)
    assert all(r["aborted"] for r in history.records)
