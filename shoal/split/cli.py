"""Split learning's command line, for experiments (every process cuts the same dataset into
the same clients, as ``shoal server --experiment`` does)::

    python -m shoal.split.cli server --address 127.0.0.1:7000 --insecure --rounds 5 --min-clients 2
    python -m shoal.split.cli device --server 127.0.0.1:7000 --insecure --client-id 0
    python -m shoal.split.cli device --server 127.0.0.1:7000 --insecure --client-id 1

Both take the same data and model flags (``--dataset digits --num-clients 2 --hidden 16
--cuts 2``). The server prints one JSON record per round and, at the end, ``model hash:``.
TLS: the server takes ``--cert/--key`` (and ``--ca`` to require device certificates, whose
common name is the device's id); a device ``--ca`` (and ``--cert/--key``).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.config.names import SplitProtocol
from shoal.rng import NoiseName

if TYPE_CHECKING:
    from collections.abc import Callable

    from shoal.data import FederatedDataset, LabeledData
    from shoal.models import ModelFactory
    from shoal.split.config import SplitConfig

# What building the parser imports stays light (``shoal --help`` costs no torch): the data,
# models and the split package are imported where a command runs.
DATASETS = ("digits", "fashion-mnist", "mnist-subset")


def _experiment_flags(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--dataset", choices=DATASETS, default="digits")
    ap.add_argument("--num-clients", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", choices=["mlp", "2nn", "cnn"], default="mlp")
    ap.add_argument("--hidden", type=int, nargs="*", default=[16], help="mlp widths")
    ap.add_argument("--cuts", type=int, nargs="+", default=[2], help="one cut, or two (U-shaped)")
    ap.add_argument("--protocol", choices=[p.value for p in SplitProtocol], default="splitnn")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--activation-noise", type=float, default=0.0)
    ap.add_argument("--noise", choices=[n.value for n in NoiseName], default="secure")
    ap.add_argument("--ca", type=Path)
    ap.add_argument("--cert", type=Path)
    ap.add_argument("--key", type=Path)
    ap.add_argument("--insecure", action="store_true")


def experiment(args: argparse.Namespace) -> tuple[FederatedDataset, ModelFactory, SplitConfig]:
    from shoal.data import digits, fashion_mnist, iid, mnist_subset
    from shoal.models import mcmahan_2nn, mcmahan_cnn, mlp
    from shoal.split.config import SplitConfig

    loaders: dict[str, Callable[[], LabeledData]] = {
        "digits": digits,
        "mnist-subset": mnist_subset,
        "fashion-mnist": fashion_mnist,
    }
    data = iid(loaders[args.dataset](), num_clients=args.num_clients, seed=args.seed)
    shape, k = data.input_shape, data.num_classes
    model: ModelFactory = {
        "mlp": functools.partial(mlp, shape, k, tuple(args.hidden)),
        "2nn": functools.partial(mcmahan_2nn, shape, k),
        "cnn": functools.partial(mcmahan_cnn, shape, k),
    }[args.model]
    config = SplitConfig(
        cuts=tuple(args.cuts),
        protocol=SplitProtocol(args.protocol),
        lr=args.lr,
        batch_size=args.batch_size,
        local_epochs=args.local_epochs,
        seed=args.seed,
        activation_noise=args.activation_noise,
        noise=NoiseName(args.noise),
    )
    return data, model, config


def run_server(args: argparse.Namespace, console: Any = None) -> int:
    from shoal.net.auth import Authenticator, read_tokens
    from shoal.net.tls import TLSFiles
    from shoal.params import from_module, model_hash
    from shoal.split.net import SplitService, linger, run_rounds, serve
    from shoal.split.server import SplitServer

    data, model, config = experiment(args)
    server = SplitServer(model, data.input_shape, data.num_classes, config)
    auth = Authenticator(tokens=read_tokens(args.tokens) if args.tokens else None)
    tls = TLSFiles(args.cert, args.key, args.ca) if args.cert and args.key else None
    service = SplitService(server, auth)
    grpc_server, port = serve(service, args.address, tls, insecure=args.insecure)
    print(f"listening on port {port}", flush=True)

    def show(record: dict[str, object]) -> None:
        print(json.dumps(record), flush=True)

    try:
        run_rounds(
            service,
            args.rounds,
            min_clients=args.min_clients,
            round_timeout_s=args.round_timeout,
            idle_timeout_s=args.idle_timeout,
            test=data.test,
            on_record=show,
        )
        print(f"model hash: {model_hash(from_module(server.model())[0])}", flush=True)
        linger(service, args.idle_timeout)
    finally:
        grpc_server.stop(grace=2.0)  # devices hear "done" on their next call, or lose the server
    return 0


def run_device(args: argparse.Namespace, console: Any = None) -> int:
    from shoal.net.auth import read_token
    from shoal.net.tls import ClientTLS
    from shoal.split.device import SplitDevice
    from shoal.split.net import SplitNetDevice
    from shoal.split.session import CutLimits

    data, model, config = experiment(args)
    if args.client_id not in data.clients:
        print(
            f"client {args.client_id!r} is not one of this experiment's {len(data)} clients", file=sys.stderr
        )
        return 2
    device = SplitDevice(model, data.input_shape, config)
    limits = CutLimits.build(config, device.shapes, data.num_classes, device.num_params)
    tls = ClientTLS(args.ca, args.cert, args.key) if args.ca else None
    net = SplitNetDevice(
        args.server,
        args.client_id,
        device,
        data[args.client_id].train,
        limits,
        tls=tls,
        token=read_token(None),
    )
    turns = net.run(give_up_s=args.give_up)
    print(f"done after {turns} turns", flush=True)
    return 0


def add_commands(sub: Any) -> None:
    """``server`` and ``device``, under ``shoal split`` or ``python -m shoal.split.cli``."""
    s = sub.add_parser("server", help="train the server's part with devices over gRPC")
    _experiment_flags(s)
    s.add_argument("--address", default="127.0.0.1:7000")
    s.add_argument("--rounds", type=int, default=5)
    s.add_argument("--min-clients", type=int, default=1)
    s.add_argument("--round-timeout", type=float, default=600.0)
    s.add_argument("--idle-timeout", type=float, default=30.0)
    s.add_argument("--tokens", type=Path, help="lines of '<client id> <sha256 of its token>'")
    s.set_defaults(handler=run_server)
    d = sub.add_parser("device", help="train a device's part of the model")
    _experiment_flags(d)
    d.add_argument("--server", default="127.0.0.1:7000")
    d.add_argument("--client-id", required=True)
    d.add_argument("--give-up", type=float, default=120.0)
    d.set_defaults(handler=run_device)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shoal.split.cli", description=__doc__.split("\n\n")[0])
    add_commands(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
