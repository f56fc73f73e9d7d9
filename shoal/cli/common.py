"""What several subcommands share: the end-of-run summary and the TLS flags."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from shoal.runtime.history import History


def print_result(console: Console, history: History, out: Path) -> None:
    acc = history.final_accuracy
    console.print(
        f"final test accuracy: {acc:.4f}" if acc is not None else "final test accuracy: not evaluated"
    )
    eps = history.series("dp_epsilon") or history.series("ldp_epsilon_worst_client")
    if eps:
        delta = history.extra.get("summary", {}).get("dp_delta")
        console.print(f"privacy: epsilon {eps[-1][1]:.3f} at delta {delta:.3g} (client level)")
    if history.stopped:
        console.print(f"[yellow]stopped after round {len(history.records)}: {history.stopped}")
    console.print(f"model hash: {history.model_hash}")
    console.print(f"run folder: {out}  (report: {out / 'report.html'})")


def tls_flags(p: argparse.ArgumentParser, side: str) -> None:
    p.add_argument("--cert", type=Path, help=f"this {side}'s certificate (PEM)")
    p.add_argument("--key", type=Path, help=f"this {side}'s private key (PEM)")
    p.add_argument(
        "--ca",
        type=Path,
        help="CA certificate: "
        + ("require client certificates from it" if side == "server" else "that signed the server's"),
    )
    p.add_argument("--insecure", action="store_true", help="plaintext gRPC: for a local trial only")
