"""``shoal dashboard RUN_DIR``: a live page of a run folder, while it runs or after."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from shoal.errors import ShoalError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "dashboard",
        help="serve a live, read-only page of a run folder",
        description="Follow a run folder (shoal run --out DIR, or a shoal server's) in the browser: "
        "round progress, accuracy and loss, devices per round and why they failed, bytes, privacy "
        "spent, time. The page updates as rounds finish. Bound to 127.0.0.1 unless told otherwise; "
        "bound elsewhere it needs a token (one is made up and printed if --token-file is not given).",
        epilog="example:\n  shoal dashboard runs/20261129-120000 --address 127.0.0.1:8080",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run folder to follow")
    add_flags(p, "--address")
    p.add_argument("--for", dest="seconds", type=float, help="stop after this many seconds (default: Ctrl-C)")
    p.set_defaults(handler=handle)


def add_flags(p: argparse.ArgumentParser, address_flag: str) -> None:
    """The address and token flags, shared with ``shoal server --dashboard``."""
    p.add_argument(
        address_flag,
        default="127.0.0.1:8080" if address_flag == "--address" else None,
        metavar="HOST:PORT",
        help="where the dashboard listens (port 0: any free one)",
    )
    p.add_argument(
        "--dashboard-token",
        type=Path,
        metavar="FILE",
        help="a file whose first line is the token the page requires (needed off loopback)",
    )


def token_for(host: str, token_file: Path | None) -> str | bool | None:
    """The token a dashboard on ``host`` requires: the file's, a made-up one off loopback, or none."""
    from shoal.dashboard import loopback

    if token_file is not None:
        try:
            token = token_file.read_text().splitlines()[0].strip()
        except (OSError, IndexError):
            raise ShoalError(
                f"--dashboard-token {token_file}: not a readable file with a token on its first line"
            ) from None
        if len(token) < 16:
            raise ShoalError("--dashboard-token: use a token of at least 16 characters")
        return token
    return None if loopback(host) else True


def start(run_dir: Path, address: str, token_file: Path | None, console: Console, live: Any = None) -> Any:
    from shoal.dashboard import Dashboard, parse_address

    host, _ = parse_address(address)
    board = Dashboard(run_dir, address, token_for(host, token_file), live).start()
    console.print(f"dashboard: {board.url}")
    return board


def handle(args: argparse.Namespace, console: Console) -> int:
    if not args.run_dir.is_dir():
        raise ShoalError(f"{args.run_dir} is not a folder; give the folder of a shoal run (its --out)")
    board = start(args.run_dir, args.address, args.dashboard_token, console)
    try:
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
    return 0
