"""Split learning in one process: the server and the devices exchange real encoded messages.

:class:`InProcessLink` carries each message through the wire codec both ways, as gRPC
would, so the bytes it counts are the exact encoded sizes and the server decodes under the
same size limit as on the network. :func:`run_split` runs rounds over a
:class:`~shoal.data.FederatedDataset` and returns a :class:`~shoal.runtime.History` whose
records hold, per round: ``test_accuracy``/``test_loss`` on the central test set,
``bytes_up``/``bytes_down``, ``device_flops`` (counted by torch's FLOP counter, forward and
backward of the device part(s), summed over the round's devices), ``device_seconds``
(the same passes, measured), ``server_flops``/``server_seconds``, and who was refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from shoal.client.trainer import evaluate_module
from shoal.data.datasets import FederatedDataset
from shoal.params import from_module
from shoal.runtime.history import History, Record
from shoal.split.config import SplitConfig
from shoal.split.device import SplitDevice
from shoal.split.errors import Refusal
from shoal.split.messages import SplitMessage, Wait
from shoal.split.server import SplitServer
from shoal.split.wire import decode, encode

REPLY_LIMIT = 1 << 30  # what a device accepts from the server in one message


@dataclass
class InProcessLink:
    """A device's connection to an in-process server: encode, count, decode, answer."""

    server: SplitServer
    bytes_up: int = 0
    bytes_down: int = 0

    def __call__(self, msg: SplitMessage) -> SplitMessage:
        up = encode(msg)
        self.bytes_up += len(up)
        reply = self.server.handle(decode(up, self.server.limits.max_message_bytes()))
        down = encode(reply)
        self.bytes_down += len(down)
        return decode(down, REPLY_LIMIT)

    def take(self) -> tuple[int, int]:
        out = (self.bytes_up, self.bytes_down)
        self.bytes_up = self.bytes_down = 0
        return out


def run_split(
    model_factory: Callable[[], nn.Module],
    data: FederatedDataset,
    config: SplitConfig,
    rounds: int,
    eval_every: int = 1,
    on_record: Callable[[Record], None] | None = None,
) -> History:
    """Train ``model_factory``'s model cut at ``config.cuts`` for ``rounds`` rounds.

    Example::

        data = shoal.data.iid(shoal.data.digits(), num_clients=4, seed=0)
        model = lambda: shoal.models.mlp(data.input_shape, data.num_classes, (32,))
        history = run_split(model, data, SplitConfig(cuts=(3,)), rounds=2)
        history.final_accuracy
    """
    server = SplitServer(model_factory, data.input_shape, data.num_classes, config)
    device = SplitDevice(model_factory, data.input_shape, config)
    link = InProcessLink(server)
    records: list[Record] = []
    for r in range(rounds):
        record = _round(server, device, link, data, r)
        if data.test is not None and eval_every and ((r + 1) % eval_every == 0 or r == rounds - 1):
            record["test_loss"], record["test_accuracy"] = evaluate_module(server.model(), data.test)
        records.append(record)
        if on_record is not None:  # a run's log, a progress bar
            on_record(record)
    server.finished = True
    params, spec = from_module(server.model())
    return History(records, params, spec, extra={"protocol": str(config.protocol), "cuts": list(config.cuts)})


def _round(
    server: SplitServer, device: SplitDevice, link: InProcessLink, data: FederatedDataset, r: int
) -> Record:
    """One round: each picked device takes its turn (one after another here; SplitFed-V1's
    turns are independent, so their order does not change the result)."""
    refused: dict[str, str] = {}
    picked = server.begin_round(r, list(data.client_ids))
    for cid in picked:
        try:
            turn = device.request_turn(cid, link)
            if isinstance(turn, Wait):
                raise Refusal("the server gave no turn when this device's was due")
            device.train_turn(turn, data[cid].train, link)
        except Refusal as exc:  # one device's failure is its own
            refused[cid] = exc.reason
    outcome = server.finish_round()
    bytes_up, bytes_down = link.take()
    device_seconds, device_flops = device.half.meter.take()
    refused.update(outcome.refused)
    return {
        "round": r + 1,  # counted from 1, as the federated loop counts
        "aborted": False,
        "clients_selected": len(picked),
        "clients_completed": len(outcome.accepted),
        "clients_failed": len(refused),
        "examples": outcome.examples,
        "bytes_up": bytes_up,
        "bytes_down": bytes_down,
        "device_flops": device_flops,
        "device_seconds": device_seconds,
        "server_flops": outcome.server_flops,
        "server_seconds": outcome.server_seconds,
        "refused": refused,
    }
