"""``shoal certs DIR``: a test CA and TLS certificates for a trial deployment."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console


def add_parser(sub: Any) -> None:
    certs = sub.add_parser("certs", help="make a CA and TLS certificates for a test deployment")
    certs.add_argument("out", type=Path, help="folder for ca.pem, server.pem/.key, client-<id>.pem/.key")
    certs.add_argument(
        "--host",
        action="append",
        default=None,
        help="server name or IP (repeat; default localhost, 127.0.0.1)",
    )
    certs.add_argument("--clients", default="", help="comma-separated client ids to make certificates for")
    certs.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    from shoal.net.certs import make_certs

    hosts = args.host or ["localhost", "127.0.0.1"]
    out = make_certs(args.out, hosts, [c for c in args.clients.split(",") if c])
    console.print(f"wrote a test CA and certificates for {', '.join(hosts)} into {out}")
    return 0
