"""What several subcommands share: the end-of-run summary and the TLS flags."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from shoal.errors import ShoalError
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
    # soft_wrap: a path must stay on one line when the output is a file or a pipe
    console.print(f"model hash: {history.model_hash}", soft_wrap=True)
    console.print(f"run folder: {out}  (report: {out / 'report.html'})", soft_wrap=True)


def run_folder(out: Path) -> Path:
    """``out``, created if need be; a clear error, before any data loads, if it cannot be."""
    if out.exists() and not out.is_dir():
        raise ShoalError(f"--out {out} is a file, not a folder; pass a folder for the run")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise ShoalError(f"cannot create the run folder {out}: {why}; pass a writable --out") from None
    return out


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
