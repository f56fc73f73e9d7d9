"""Split learning computes what the unsplit model computes; SplitFed of one is SplitNN."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shoal.data import FederatedDataset, LabeledData
from shoal.models import ModelFactory
from shoal.rng import NoiseName
from shoal.split import DeviceHalf, ServerHalf, SplitConfig, cut_model, cut_shapes, decode, encode, run_split
from shoal.split.compute import Meter
from shoal.split.messages import Activations, Gradients, OutputGradients, ServerOutput
from tests.split.conftest import one_client, seeded, tiny_cnn

LIMIT = 1 << 24


def _wire(msg: Activations | Gradients | ServerOutput | OutputGradients) -> np.ndarray:
    """The message's tensor after a trip through the codec, as the other side sees it."""
    back = decode(encode(msg), LIMIT)
    assert type(back) is type(msg)
    return back.activations if isinstance(back, Activations) else back.tensor


def _split_grads(model: torch.nn.Module, cuts: tuple[int, ...], x: torch.Tensor, y: torch.Tensor) -> None:
    """One batch through the split protocol's halves and the codec (gradients left in place)."""
    parts = cut_model(model, cuts)
    shapes = cut_shapes(parts, tuple(x.shape[1:]))
    device = DeviceHalf(parts, shapes, tuple(x.shape[1:]), lr=0.1)
    server = ServerHalf(parts.middle, shapes, lr=0.1, meter=Meter())
    acts = _wire(Activations(0, "c", 0, device.forward(x), y.numpy()))
    if parts.u_shaped:
        out = _wire(ServerOutput(0, "c", 0, server.forward(acts)))
        out_grad, _ = device.head(out, y)
        grad = server.backward(_wire(OutputGradients(0, "c", 0, out_grad)))
    else:
        grad, _ = server.train_step(acts, y.numpy())
    device.backward(_wire(Gradients(0, "c", 0, grad)))


@pytest.mark.parametrize("cuts", [(2,), (4,), (2, 4), (3, 5)], ids=["v-early", "v-late", "u-a", "u-b"])
def test_split_mlp_gradients_equal_the_unsplit_models(
    small_mlp_factory: ModelFactory, digits_data: LabeledData, cuts: tuple[int, ...]
) -> None:
    model = seeded(small_mlp_factory)
    ref = copy.deepcopy(model)
    x, y = digits_data.train.x[:32], digits_data.train.y[:32]
    F.cross_entropy(ref(x), y).backward()
    _split_grads(model, cuts, x, y)
    for (name, p), q in zip(ref.named_parameters(), model.parameters(), strict=True):
        assert q.grad is not None, name
        assert torch.equal(p.grad, q.grad), name  # exactly: the same operations in the same order


@pytest.mark.parametrize("cuts", [(3,), (8,), (3, 9)], ids=["v-conv", "v-fc", "u"])
def test_split_cnn_gradients_equal_the_unsplit_models(
    digits_data: LabeledData, cuts: tuple[int, ...]
) -> None:
    model = seeded(tiny_cnn)
    ref = copy.deepcopy(model)
    x, y = digits_data.train.x[:16].reshape(16, 1, 8, 8), digits_data.train.y[:16]
    F.cross_entropy(ref(x), y).backward()
    _split_grads(model, cuts, x, y)
    for (name, p), q in zip(ref.named_parameters(), model.parameters(), strict=True):
        assert q.grad is not None, name
        assert torch.equal(p.grad, q.grad), name


@pytest.mark.parametrize("cuts", [(2,), (2, 4)], ids=["vanilla", "u-shaped"])
def test_a_split_round_on_one_batch_is_one_sgd_step_of_the_unsplit_model(
    small_mlp_factory: ModelFactory, digits_data: LabeledData, cuts: tuple[int, ...]
) -> None:
    data = one_client(digits_data, 32)
    config = SplitConfig(cuts=cuts, lr=0.3, batch_size=32)
    history = run_split(small_mlp_factory, data, config, rounds=1)
    ref = seeded(small_mlp_factory)
    loss = F.cross_entropy(ref(data["0"].train.x), data["0"].train.y)
    loss.backward()
    with torch.no_grad():
        for p in ref.parameters():
            p -= 0.3 * p.grad
    trained = history.load_into(small_mlp_factory())
    for (name, p), q in zip(ref.named_parameters(), trained.parameters(), strict=True):
        # the batch is shuffled, so the mean loss sums in another order: float tolerance
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("version", ["splitfed-v1", "splitfed-v2"])
@pytest.mark.parametrize("cuts", [(2,), (2, 4)], ids=["vanilla", "u-shaped"])
def test_splitfed_with_one_client_equals_splitnn(
    small_mlp_factory: ModelFactory, digits_data: LabeledData, version: str, cuts: tuple[int, ...]
) -> None:
    data = one_client(digits_data, 100)
    config = SplitConfig(
        cuts=cuts,
        lr=0.2,
        batch_size=16,
        local_epochs=2,
        seed=5,
        activation_noise=0.05,
        noise=NoiseName.SEEDED,
    )
    runs = {
        p: run_split(small_mlp_factory, data, dataclasses.replace(config, protocol=p), rounds=3)
        for p in ("splitnn", version)
    }
    assert runs["splitnn"].model_hash == runs[version].model_hash
    assert [r["test_accuracy"] for r in runs["splitnn"].records] == [
        r["test_accuracy"] for r in runs[version].records
    ]


def test_the_protocols_differ_with_several_clients(
    small_mlp_factory: ModelFactory, fed4: FederatedDataset
) -> None:
    hashes = {
        p: run_split(small_mlp_factory, fed4, SplitConfig(cuts=(2,), protocol=p), rounds=1).model_hash
        for p in ("splitnn", "splitfed-v1", "splitfed-v2")
    }
    assert len(set(hashes.values())) == 3
