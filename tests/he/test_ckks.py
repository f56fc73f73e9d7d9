"""CKKS aggregation: the same model as plain averaging, and the server holds no key and no update."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import shoal
from shoal.messages import TrainResult
from shoal.strategy import mean
from shoal.transforms.base import TransformContext

ts = pytest.importorskip(
    "tenseal", reason='pip install "shoal[he]" (TenSEAL) to test homomorphic aggregation'
)
from shoal.he import HomomorphicAggregation, KeyAuthority  # noqa: E402
from shoal.he.ckks import CIPHERTEXT, KeyHolderError, frame, unframe  # noqa: E402

TRAINER = shoal.TorchTrainer(lr=0.3, local_epochs=2, batch_size=16)


@pytest.fixture(scope="module")
def authority():
    return KeyAuthority()


class CountingAuthority(KeyAuthority):
    def __init__(self):
        super().__init__()
        self.received: list[int] = []  # ciphertext frames per decryption request

    def decrypt_sum(self, framed, length, round=0):
        self.received.append(len(framed))
        return super().decrypt_sum(framed, length, round)


class RefusingAuthority(KeyAuthority):
    """A key holder that is down, or refuses: no sum for any round."""

    def decrypt_sum(self, framed, length, round=0):
        raise KeyHolderError(f"round {round}: unreachable")


def test_a_round_the_key_holder_does_not_decrypt_is_lost_and_the_run_goes_on(fed_digits, small_mlp):
    with pytest.warns(RuntimeWarning, match="no round committed"):
        history = shoal.simulate(
            small_mlp,
            fed_digits,
            shoal.FedAvg(clients_per_round=4, aggregator=mean),
            TRAINER,
            rounds=2,
            transforms=[HomomorphicAggregation(RefusingAuthority())],
        )
    assert [r["aborted"] for r in history.records] == [True, True]  # the model stays as it was
    assert all("the key holder did not decrypt the sum" in r["failures"][0] for r in history.records)


def test_encrypted_aggregation_trains_the_same_model(fed_digits, small_mlp):
    plain = shoal.simulate(
        small_mlp, fed_digits, shoal.FedAvg(clients_per_round=8, aggregator=mean), TRAINER, rounds=3
    )
    authority = CountingAuthority()
    he = shoal.simulate(
        small_mlp,
        fed_digits,
        shoal.FedAvg(clients_per_round=8, aggregator=mean),
        TRAINER,
        rounds=3,
        transforms=[HomomorphicAggregation(authority)],
    )
    np.testing.assert_allclose(he.params, plain.params, atol=1e-6)
    assert he.records[-1]["clients_completed"] == 8
    assert len(authority.received) == 3  # one decryption a round: the sum, never an update


def test_the_server_holds_no_secret_key_and_only_ciphertexts(authority):
    he = HomomorphicAggregation(authority)
    assert not he._public().is_private()  # the server's context cannot decrypt
    ctx = TransformContext(1, 0, 10_000)
    update = np.random.default_rng(0).normal(0, 0.01, 10_000).astype(np.float32)
    sent = he.client_apply(TrainResult(1, "a", 5, {"delta": update}), ctx)
    assert set(sent.payload) == {CIPHERTEXT}
    assert update.tobytes()[:64] not in sent.payload[CIPHERTEXT].tobytes()
    first = unframe(sent.payload[CIPHERTEXT].tobytes())[0]
    encrypted = ts.ckks_vector_from(he._public(), first)  # a well-formed ciphertext...
    with pytest.raises(ValueError, match="secret_key"):  # ...that the server cannot open
        encrypted.decrypt()
    device_copy = pickle.loads(pickle.dumps(he))  # what a worker or device receives
    assert device_copy.authority is None and device_copy.public_context == authority.public_context


def test_precision_of_a_sum_over_many_clients(authority):
    he = HomomorphicAggregation(authority)
    ctx = TransformContext(1, 0, 5000)
    rng = np.random.default_rng(1)
    updates = [rng.normal(0, 0.05, 5000).astype(np.float32) for _ in range(50)]
    sent = [he.client_apply(TrainResult(1, str(i), 1, {"delta": u}), ctx) for i, u in enumerate(updates)]
    (merged,) = he.server_apply(sent, ctx)
    np.testing.assert_allclose(merged.payload["delta"], np.mean(updates, axis=0), atol=1e-7)


def test_a_malformed_ciphertext_costs_only_its_sender(authority):
    he = HomomorphicAggregation(authority)
    ctx = TransformContext(1, 0, 100)
    good = [
        he.client_apply(TrainResult(1, str(i), 1, {"delta": np.ones(100, np.float32)}), ctx) for i in range(3)
    ]
    bad = TrainResult(1, "evil", 1, {CIPHERTEXT: np.frombuffer(frame([b"garbage"]), np.uint8)})
    merged, failure = he.server_apply([*good, bad], ctx)
    np.testing.assert_allclose(merged.payload["delta"], 1.0, atol=1e-6)
    assert failure.client_id == "evil" and "ciphertext" in failure.reason
