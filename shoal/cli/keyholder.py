"""``shoal keyholder``: the CKKS key holder as its own party, for homomorphic aggregation
over the network (:mod:`shoal.he.keyholder`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from shoal import config as cfgmod
from shoal.errors import ShoalError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "keyholder",
        help="hold the CKKS secret key and decrypt only the server's sums ([he] over the network)",
        description="Make (first start) or load a CKKS key pair in --out and decrypt the sums the "
        "server sends, one a round, for the server only. Copy OUT/public.ckks to the server and to "
        "every device (he.public_key) and OUT/server.token to the server (--keyholder-token); "
        "OUT/secret.ckks never leaves this machine. Run it where the server's operator cannot read "
        "it: the guarantee holds while the two do not collude.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  shoal keyholder --config examples/hospitals_network.toml --out keys "
        "--address 127.0.0.1:7100 --insecure",
    )
    p.add_argument("--config", type=Path, required=True, help="the run's TOML file (its [he] parameters)")
    p.add_argument("--out", type=Path, required=True, metavar="KEYDIR", help="folder of the keys")
    p.add_argument("--address", default="127.0.0.1:7100", help="host:port to listen on")
    p.add_argument("--cert", type=Path, help="this key holder's TLS certificate (PEM)")
    p.add_argument("--key", type=Path, help="its private key (PEM)")
    p.add_argument("--insecure", action="store_true", help="plaintext gRPC: for a local trial only")
    p.add_argument(
        "--max-values",
        type=int,
        default=None,
        help="the most model parameters a sum may hold (bounds every request; default 2,000,000)",
    )
    p.add_argument("--for", dest="seconds", type=float, help="stop after this many seconds (default: Ctrl-C)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    if args.insecure == bool(args.cert or args.key):
        raise ShoalError("give --cert and --key, or --insecure for a local trial")
    cfg = cfgmod.load(args.config)
    if args.max_values is not None and args.max_values < 1:
        raise ShoalError(f"--max-values must be >= 1, got {args.max_values}")
    # gRPC and TenSEAL load here, after every mistake on the command line has been named
    import secrets

    from shoal.he.keyholder import DEFAULT_MAX_VALUES, SERVER_ID, KeyHolderService, load_or_create, serve
    from shoal.net.auth import Authenticator, read_token, token_digest
    from shoal.net.tls import TLSFiles

    authority = load_or_create(args.out, cfg.he.params())
    token_file = args.out / "server.token"
    if not token_file.exists():  # the server's credential, made with the keys
        token_file.touch(mode=0o600)
        token_file.write_text(secrets.token_hex(32) + "\n")
    token = read_token(token_file)
    assert token is not None  # read_token refuses an empty file
    service = KeyHolderService(
        authority,
        Authenticator(tokens={SERVER_ID: token_digest(token)}, enrolled=frozenset({SERVER_ID})),
        args.out,
        args.max_values or DEFAULT_MAX_VALUES,
    )
    tls = None if args.insecure else TLSFiles(args.cert, args.key)
    server, port = serve(service, args.address, tls, args.insecure)
    host = args.address.rsplit(":", 1)[0]
    console.print(
        f"[bold]shoal keyholder[/bold] on {host}:{port}; public key {args.out / 'public.ckks'} (for the "
        f"server and every device), server token {token_file} (for the server only)",
        soft_wrap=True,
    )
    try:
        if args.seconds is not None:
            time.sleep(args.seconds)
        else:
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop(grace=2.0)
        console.print(f"decrypted {service.decryptions} sums; last round {service.last_round}")
    return 0
