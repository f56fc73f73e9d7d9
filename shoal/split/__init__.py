"""Split learning: the first layers train on the device, the rest on the server.

SplitNN (Gupta & Raskar 2018), vanilla or U-shaped, and SplitFed V1/V2 (Thapa et al. 2022),
as explicit messages between a device half and a server half (:mod:`shoal.split.messages`),
encoded by a wire codec that never unpickles (:mod:`shoal.split.wire`). :func:`run_split`
runs them in one process; :mod:`shoal.split.net` runs them over gRPC.

Split learning by itself is not a privacy guarantee: see the README's "Split learning"
(labels and inputs leak through what crosses the cut).
"""

from typing import TYPE_CHECKING

from shoal._lazy import exports

# imported on first use: the command line builds its parser without torch
_WHERE = {
    "Ack": "shoal.split.messages",
    "Activations": "shoal.split.messages",
    "cut_model": "shoal.split.cut",
    "cut_shapes": "shoal.split.cut",
    "CutLimits": "shoal.split.session",
    "CutShapes": "shoal.split.cut",
    "decode": "shoal.split.wire",
    "DeviceHalf": "shoal.split.halves",
    "DeviceWeights": "shoal.split.messages",
    "encode": "shoal.split.wire",
    "encoded_size": "shoal.split.wire",
    "Gradients": "shoal.split.messages",
    "InProcessLink": "shoal.split.runner",
    "OutputGradients": "shoal.split.messages",
    "Ready": "shoal.split.messages",
    "Refusal": "shoal.split.errors",
    "RoundOutcome": "shoal.split.server",
    "run_split": "shoal.split.runner",
    "ServerHalf": "shoal.split.halves",
    "ServerOutput": "shoal.split.messages",
    "Session": "shoal.split.session",
    "SplitConfig": "shoal.split.config",
    "SplitDevice": "shoal.split.device",
    "SplitMessage": "shoal.split.messages",
    "SplitParts": "shoal.split.cut",
    "SplitProtocol": "shoal.config.names",
    "SplitServer": "shoal.split.server",
    "Turn": "shoal.split.messages",
    "Wait": "shoal.split.messages",
}
__getattr__, __dir__ = exports(globals(), _WHERE)

if TYPE_CHECKING:  # what _WHERE loads, for type checkers
    from shoal.config.names import SplitProtocol
    from shoal.split.config import SplitConfig
    from shoal.split.cut import CutShapes, SplitParts, cut_model, cut_shapes
    from shoal.split.device import SplitDevice
    from shoal.split.errors import Refusal
    from shoal.split.halves import DeviceHalf, ServerHalf
    from shoal.split.messages import (
        Ack,
        Activations,
        DeviceWeights,
        Gradients,
        OutputGradients,
        Ready,
        ServerOutput,
        SplitMessage,
        Turn,
        Wait,
    )
    from shoal.split.runner import InProcessLink, run_split
    from shoal.split.server import RoundOutcome, SplitServer
    from shoal.split.session import CutLimits, Session
    from shoal.split.wire import decode, encode, encoded_size

__all__ = [
    "Ack",
    "Activations",
    "CutLimits",
    "CutShapes",
    "DeviceHalf",
    "DeviceWeights",
    "Gradients",
    "InProcessLink",
    "OutputGradients",
    "Ready",
    "Refusal",
    "RoundOutcome",
    "ServerHalf",
    "ServerOutput",
    "Session",
    "SplitConfig",
    "SplitDevice",
    "SplitMessage",
    "SplitParts",
    "SplitProtocol",
    "SplitServer",
    "Turn",
    "Wait",
    "cut_model",
    "cut_shapes",
    "decode",
    "encode",
    "encoded_size",
    "run_split",
]
