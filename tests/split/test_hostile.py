"""Every message the server receives is judged; a bad one costs its sender the turn, never
the server or another device."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from shoal.data import FederatedDataset
from shoal.models import ModelFactory
from shoal.split import (
    Ack,
    Activations,
    DeviceWeights,
    Gradients,
    OutputGradients,
    Ready,
    ServerOutput,
    SplitConfig,
    SplitDevice,
    SplitServer,
    Turn,
    decode,
    encode,
)
from shoal.split.runner import InProcessLink

B, WIDTH = 8, 16  # batch size; the cut at layer 2 of the 64-16-16-10 MLP is 16 wide


def _server(factory: ModelFactory, cuts: tuple[int, ...] = (2,), protocol: str = "splitnn") -> SplitServer:
    server = SplitServer(factory, (1, 8, 8), 10, SplitConfig(cuts=cuts, protocol=protocol, batch_size=B))
    server.begin_round(0, ["a", "b"])
    return server


def _turn(server: SplitServer, cid: str) -> Turn:
    turn = server.handle(Ready(cid))
    assert isinstance(turn, Turn), turn
    return turn


def _acts(batch: int = 0, n: int = B, labels: np.ndarray | None = None, cid: str = "a") -> Activations:
    y = np.arange(n, dtype=np.int64) % 10 if labels is None else labels
    return Activations(0, cid, batch, np.ones((n, WIDTH), np.float32), y)


def _refused(reply: object, match: str) -> None:
    assert isinstance(reply, Ack) and not reply.accepted, reply
    assert match in reply.reason, reply.reason


def _raw(array: np.ndarray, labels: np.ndarray | None = None) -> Callable[[], Activations]:
    return lambda: Activations(0, "a", 0, array, np.zeros(B, np.int64) if labels is None else labels)


HOSTILE: dict[str, tuple[Callable[[], Activations], str]] = {
    "wrong width": (_raw(np.ones((B, WIDTH + 1), np.float32)), "shape [8, 17], expected [8, 16]"),
    "batch too big": (lambda: _acts(n=B + 1), "1 to 8"),
    "empty batch": (lambda: _acts(n=0), "1 to 8"),
    "NaN": (_raw(np.full((B, WIDTH), np.nan, np.float32)), "NaN or infinity"),
    "infinity": (_raw(np.full((B, WIDTH), np.inf, np.float32)), "NaN or infinity"),
    "float64": (_raw(np.ones((B, WIDTH))), "float32"),
    "label too big": (lambda: _acts(labels=np.full(B, 10, np.int64)), "labels out of range"),
    "negative label": (lambda: _acts(labels=np.full(B, -1, np.int64)), "labels out of range"),
    "labels short": (lambda: _acts(labels=np.zeros(B - 1, np.int64)), "labels must be int64[8]"),
    "no labels": (lambda: Activations(0, "a", 0, np.ones((B, WIDTH), np.float32)), "needs the batch's"),
    "out of sequence": (lambda: _acts(batch=1), "batch 1 is out of sequence: expected batch 0"),
    "wrong round": (lambda: Activations(3, "a", 0, np.ones((B, WIDTH), np.float32), np.zeros(B, np.int64)),
                    "round 3"),
    # finite, but it drives the server's loss to infinity: refused before any weight moves
    "huge values": (_raw(np.full((B, WIDTH), 3e38, np.float32)), "NaN or infinity"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_message_is_refused_with_its_reason_and_ends_only_that_turn(
    small_mlp_factory: ModelFactory, case: str
) -> None:
    server = _server(small_mlp_factory)
    _turn(server, "a")
    before = server.model().state_dict()
    before = {k: v.clone() for k, v in before.items()}
    make, reason = HOSTILE[case]
    _refused(server.handle(make()), reason)
    _refused(server.handle(_acts()), "no open turn")  # the turn is over
    for k, v in server.model().state_dict().items():  # nothing of the turn stayed
        assert v.equal(before[k]), k
    # the next device's turn goes on as if nothing had happened
    _turn(server, "b")
    assert isinstance(server.handle(_acts(cid="b")), Gradients)
    assert isinstance(server.handle(DeviceWeights(0, "b", server.device_weights())), Ack)
    outcome = server.finish_round()
    assert outcome.accepted == ["b"] and reason in outcome.refused["a"]


def test_a_refused_turn_is_rolled_back_after_accepted_batches(small_mlp_factory: ModelFactory) -> None:
    server = _server(small_mlp_factory)
    _turn(server, "a")
    start = server.model().state_dict()
    start = {k: v.clone() for k, v in start.items()}
    assert isinstance(server.handle(_acts(0)), Gradients)  # the server part moved
    _refused(server.handle(_acts(5)), "out of sequence")
    for k, v in server.model().state_dict().items():
        assert v.equal(start[k]), k


def test_a_message_naming_another_device_is_refused(small_mlp_factory: ModelFactory) -> None:
    server = _server(small_mlp_factory)
    _turn(server, "a")
    _refused(server.handle(_acts(cid="a"), caller="b"), "the call is from 'b'")
    assert isinstance(server.handle(_acts(cid="a"), caller="a"), Gradients)  # a's turn is untouched


def test_splitnn_turns_come_one_at_a_time(small_mlp_factory: ModelFactory) -> None:
    server = _server(small_mlp_factory)
    first = server.waiting_for()[0]
    other = "b" if first == "a" else "a"
    assert server.handle(Ready(other)).__class__.__name__ == "Wait"
    _turn(server, first)
    _refused(server.handle(Ready(first)), "middle of its turn")


def test_u_shaped_sequence_and_labels_are_enforced(small_mlp_factory: ModelFactory) -> None:
    server = _server(small_mlp_factory, cuts=(2, 4))
    _turn(server, "a")
    _refused(server.handle(_acts()), "labels sent in U-shaped")
    _turn(server, "b")
    out = server.handle(Activations(0, "b", 0, np.ones((B, WIDTH), np.float32)))
    assert isinstance(out, ServerOutput) and out.tensor.shape == (B, 16)
    _refused(
        server.handle(Activations(0, "b", 1, np.ones((B, WIDTH), np.float32))), "output gradients are due"
    )


def test_u_shaped_output_gradients_are_checked(small_mlp_factory: ModelFactory) -> None:
    server = _server(small_mlp_factory, cuts=(2, 4), protocol="splitfed-v1")
    for cid in ("a", "b"):
        _turn(server, cid)
        assert isinstance(
            server.handle(Activations(0, cid, 0, np.ones((B, WIDTH), np.float32))), ServerOutput
        )
    _refused(server.handle(OutputGradients(0, "a", 1, np.ones((B, 16), np.float32))), "no such batch")
    _refused(server.handle(OutputGradients(0, "b", 0, np.ones((B, 3), np.float32))), "shape")


def test_device_weights_are_checked(small_mlp_factory: ModelFactory) -> None:
    server = _server(small_mlp_factory, protocol="splitfed-v1")
    turn = _turn(server, "a")
    _refused(server.handle(DeviceWeights(0, "a", turn.weights)), "without a single batch")
    turn = _turn(server, "b")
    server.handle(_acts(cid="b"))
    _refused(server.handle(DeviceWeights(0, "b", turn.weights[:-1])), "expected [")
    assert server.finish_round().accepted == []  # nothing kept, and the model is unchanged


def test_a_turn_cannot_run_past_the_batch_bound(small_mlp_factory: ModelFactory) -> None:
    config = SplitConfig(cuts=(2,), batch_size=B, max_num_examples=2 * B, local_epochs=1)
    server = SplitServer(small_mlp_factory, (1, 8, 8), 10, config)
    server.begin_round(0, ["a"])
    _turn(server, "a")
    for b in range(2):
        assert isinstance(server.handle(_acts(b)), Gradients)
    _refused(server.handle(_acts(2)), "more than 2 batches")


def test_the_server_decodes_under_a_size_bound_from_the_model(small_mlp_factory: ModelFactory) -> None:
    server = _server(small_mlp_factory)
    big = encode(Activations(0, "a", 0, np.ones((100 * B, WIDTH), np.float32), np.zeros(100 * B, np.int64)))
    with pytest.raises(ValueError, match="exceeds the limit"):
        decode(big, server.limits.max_message_bytes())
    assert server.limits.max_message_bytes() < len(big)


def test_a_device_refuses_a_server_answer_out_of_protocol(
    small_mlp_factory: ModelFactory, fed4: FederatedDataset
) -> None:
    config = SplitConfig(cuts=(2,), batch_size=B)
    server = SplitServer(small_mlp_factory, (1, 8, 8), 10, config)
    server.begin_round(0, ["0"])
    device = SplitDevice(small_mlp_factory, (1, 8, 8), config)
    link = InProcessLink(server)

    def lying(msg: object) -> object:
        reply = link(msg)  # type: ignore[arg-type]
        if isinstance(reply, Gradients):  # a gradient of the wrong shape
            return Gradients(reply.round, reply.client_id, reply.batch, reply.tensor[:, :3].copy())
        return reply

    turn = device.request_turn("0", link)
    assert isinstance(turn, Turn)
    with pytest.raises(Exception, match="Gradients has shape"):
        device.train_turn(turn, fed4["0"].train, lying)  # type: ignore[arg-type]
