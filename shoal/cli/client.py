"""``shoal client``: a device that joins a server and trains the tasks it is given."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from rich.console import Console

from shoal.cli.common import config_flags, run_config, tls_flags
from shoal.config.names import AttackName
from shoal.errors import ShoalError

TOKEN_ON_COMMAND_LINE = (
    "--token would show the token to every user of this machine (ps, /proc); "
    "put it on the first line of a file readable only by you and pass --token-file FILE, "
    "or set the SHOAL_TOKEN environment variable"
)


def add_parser(sub: Any) -> None:
    cli = sub.add_parser(
        "client",
        help="a device: join a server and train its tasks",
        description="A device: joins a shoal server and trains on its own files (--data), which "
        "never leave it; or, in an experiment (--experiment), on its shard of the config's dataset.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  shoal client --server 10.0.0.5:8443 --config shoal.toml --client-id phone-7 "
        "--data ~/my-data \\\n"
        "    --ca certs/ca.pem --cert certs/client-phone-7.pem --key certs/client-phone-7.key",
    )
    cli.add_argument("--server", required=True, help="host:port of the shoal server")
    config_flags(cli, required=True)
    source = cli.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data",
        type=Path,
        help="this device's own data: a file or folder (CSV, images in class folders, .npz, "
        ".safetensors, text), or what the config's loader reads",
    )
    source.add_argument(
        "--experiment",
        action="store_true",
        help="the partition-of-one-dataset mode: train on this client id's shard of the config's "
        "dataset (the device loads all of it; for experiments)",
    )
    cli.add_argument("--client-id", required=True, help="this device's id (its certificate's common name)")
    tls_flags(cli, "client")
    cli.add_argument(
        "--token-file",
        type=Path,
        help="a file whose first line is this device's token, if the server uses tokens (or set SHOAL_TOKEN)",
    )
    cli.add_argument("--token", help="refused: use --token-file or SHOAL_TOKEN (a flag shows in ps)")
    cli.add_argument("--give-up", type=float, default=600.0, help="seconds without contact before exiting")
    cli.add_argument("--state-dir", type=Path, help="keep this device's client state (SCAFFOLD's c_i) here")
    cli.add_argument(
        "--attack",
        choices=[a.value for a in AttackName if not a.colluding],
        help="for evaluating a server's defences only: this device is hostile and sends its update "
        "rewritten by the attack (with trainer.attack_scale, or the attack's own scale)",
    )
    cli.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    from shoal.net.auth import check_client_id, read_token

    if args.token is not None:
        raise ShoalError(TOKEN_ON_COMMAND_LINE)
    check_client_id(args.client_id, "--client-id")
    if not args.insecure and args.ca is None:
        raise ShoalError(
            "give --ca (the CA that signed the server's certificate), or --insecure for a local trial"
        )
    token = read_token(args.token_file)
    cfg = run_config(args)
    if args.attack is not None:  # this device alone is hostile, whatever share the config names
        trainer = dataclasses.replace(cfg.trainer, attack=AttackName(args.attack), attack_fraction=1.0)
        cfg = dataclasses.replace(cfg, trainer=trainer)
    # gRPC, torch and the rest load here, after every mistake on the command line has been named
    from shoal import experiment
    from shoal.net.client import device_for
    from shoal.net.tls import ClientTLS

    tls = None if args.insecure else ClientTLS(args.ca, args.cert, args.key)
    if args.state_dir is not None:
        args.state_dir.mkdir(parents=True, exist_ok=True)
    data = experiment.device_data(cfg, args.data.expanduser().resolve()) if args.data else None
    device = device_for(cfg, args.client_id, args.server, tls, token, data=data, state_dir=args.state_dir)
    done = device.run(give_up_s=args.give_up)
    console.print(f"client {args.client_id}: {done} tasks done; the server finished the run")
    return 0
