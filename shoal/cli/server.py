"""``shoal server``: coordinate a federated run with remote devices over gRPC."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from shoal import config as cfgmod
from shoal.cli import dashboard
from shoal.cli.common import (
    config_flags,
    config_keys,
    overrides,
    print_result,
    run_config,
    run_folder,
    tls_flags,
)
from shoal.errors import ShoalError


def add_parser(sub: Any) -> None:
    srv = sub.add_parser(
        "server",
        help="coordinate a federated run with remote devices (gRPC)",
        description="Run the config's training with devices that connect over the network "
        "(shoal client). The devices train on their own data, which the server never loads; it "
        "builds the model from [data] input_shape and num_classes and tests on [data] test_path, "
        "if set. With --experiment, devices train on shards of the config's dataset instead.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  shoal certs certs --clients 0,1,2\n"
        "  shoal server --config run.toml --address 0.0.0.0:8443 --cert certs/server.pem "
        "--key certs/server.key --ca certs/ca.pem",
    )
    config_flags(srv, required=True)
    srv.add_argument("--address", default="127.0.0.1:8443", help="host:port to listen on")
    srv.add_argument("--out", type=Path, help="run folder (default: runs/<timestamp>)")
    srv.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    tls_flags(srv, "server")
    srv.add_argument(
        "--tokens", type=Path, help="per-device tokens: lines of '<client id> <sha256 of token>'"
    )
    srv.add_argument("--round-timeout", type=float, default=60.0, help="seconds a round waits for devices")
    srv.add_argument(
        "--min-clients", type=int, help="devices to wait for before round 1 (default: a round's)"
    )
    srv.add_argument("--join-timeout", type=float, default=300.0, help="seconds to wait for them")
    srv.add_argument(
        "--experiment",
        action="store_true",
        help="the partition-of-one-dataset mode: the devices are the clients of the config's dataset "
        "cut as [data] says (the server loads it for its test split and admits only those ids)",
    )
    srv.add_argument("--quiet", action="store_true")
    srv.add_argument(
        "--keyholder-token",
        type=Path,
        metavar="FILE",
        help="[he] over the network: the server.token shoal keyholder wrote, to call it with",
    )
    srv.add_argument(
        "--keyholder-ca", type=Path, metavar="FILE", help="the CA that signed the key holder's certificate"
    )
    dashboard.add_flags(srv, "--dashboard")
    config_keys(srv, skip=frozenset({"--min-clients"}))  # here: devices to wait for
    srv.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    if args.insecure == bool(args.cert or args.key):
        raise ShoalError(
            "give --cert and --key (and --ca for client certificates), or --insecure for a local trial"
        )
    if args.resume and args.out is None:
        raise ShoalError("--resume continues the run in --out: give --out RUN_DIR")
    if args.resume and overrides(args):  # --config may stay: the saved config.toml is what resumes
        raise ShoalError("--resume continues a run with its saved config.toml; drop the config-key flags")
    cfg = cfgmod.load(args.out / "config.toml") if args.resume and args.out else run_config(args)
    out = run_folder(args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    # gRPC, torch and the rest load here, after every mistake on the command line has been named
    from shoal.net.auth import read_tokens
    from shoal.net.run import serve
    from shoal.net.tls import TLSFiles
    from shoal.report import RoundProgress, render

    tls = None if args.insecure else TLSFiles(args.cert, args.key, args.ca)
    kw = dict(insecure=args.insecure, round_timeout_s=args.round_timeout, min_clients=args.min_clients,
              join_timeout_s=args.join_timeout, resume=args.resume)  # fmt: skip
    kw["tokens"] = read_tokens(args.tokens) if args.tokens is not None else None
    kw["partition"] = args.experiment
    if cfg.he.enabled:  # the key holder's credentials: a token, and its CA unless it runs plaintext
        if args.keyholder_token is None:
            raise ShoalError(
                "[he] over the network: give --keyholder-token FILE (the key holder's server.token)"
            )
        from shoal.net.auth import read_token
        from shoal.net.tls import ClientTLS

        kw["keyholder_token"] = read_token(args.keyholder_token)
        kw["keyholder_tls"] = ClientTLS(args.keyholder_ca) if args.keyholder_ca else None
    if args.dashboard is not None:  # a live page of the run folder, with the devices connected
        from shoal.dashboard import DashboardSpec, parse_address

        token = dashboard.token_for(parse_address(args.dashboard)[0], args.dashboard_token)
        kw["dashboard"] = DashboardSpec(args.dashboard, token, lambda url: console.print(f"dashboard: {url}"))
    console.print(f"[bold]shoal server[/bold] on {args.address}: {cfg.rounds} rounds, run folder {out}")
    if args.quiet:
        history = serve(cfg, out, args.address, tls, **kw)
    else:
        with RoundProgress(cfg.rounds, 0, console) as bar:
            history = serve(cfg, out, args.address, tls, callbacks=(bar,), **kw)
    render(out)
    print_result(console, history, out)
    return 0
