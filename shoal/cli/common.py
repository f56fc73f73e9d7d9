"""What several subcommands share: the config and its flags, the end-of-run summary, the TLS flags."""

from __future__ import annotations

import argparse
import enum
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from shoal import config as cfgmod
from shoal.apps import find_project
from shoal.errors import ShoalError

if TYPE_CHECKING:
    from shoal.runtime.history import History


def print_result(console: Console, history: History, out: Path) -> None:
    acc = history.final_accuracy
    console.print(
        f"final test accuracy: {acc:.4f}" if acc is not None else "final test accuracy: not evaluated"
    )
    summary = history.extra.get("summary", {})
    for key, value in summary.items():  # the run's [eval] metrics, as last measured
        if key.startswith("final_") and key != "final_test_accuracy" and isinstance(value, float):
            console.print(f"{key.removeprefix('final_').replace('_', ' ')}: {value:.4f}")
    if clients := summary.get("clients"):
        print_clients(console, clients)
    eps = history.series("dp_epsilon") or history.series("ldp_epsilon_worst_client")
    if eps:
        delta = history.extra.get("summary", {}).get("dp_delta")
        console.print(f"privacy: epsilon {eps[-1][1]:.3f} at delta {delta:.3g} (client level)")
    if history.stopped:
        console.print(f"[yellow]stopped after round {len(history.records)}: {history.stopped}")
    # soft_wrap: a path must stay on one line when the output is a file or a pipe
    console.print(f"model hash: {history.model_hash}", soft_wrap=True)
    console.print(f"run folder: {out}  (report: {out / 'report.html'})", soft_wrap=True)


def print_clients(console: Console, clients: dict[str, dict[str, float]], most: int = 20) -> None:
    """The last federated evaluation as a table, a row a device (the ``most`` worst by
    accuracy when there are more): how each site, bank or home fared on its own data."""
    from rich.table import Table

    rows = sorted(clients.items(), key=lambda kv: (kv[1].get("accuracy", 0.0), kv[0]))
    # the device's own scores, and the global model's accuracy beside them when it personalizes
    own = {k for _, m in rows for k in m if k != "loss" and not k.startswith("global_")}
    shown = own | ({"global_accuracy"} if any("global_accuracy" in m for _, m in rows) else set())
    columns = sorted(shown, key=lambda k: (k.startswith("global_"), k != "accuracy", k))
    title = "last federated evaluation, on each device's held-out data"
    if len(rows) > most:
        title += f" (the {most} lowest of {len(rows)})"
    console.print(title + ":")
    table = Table()
    for name in ("device", *columns):
        table.add_column(name, justify="left" if name == "device" else "right")
    for cid, m in sorted(rows[:most]):
        table.add_row(cid, *(f"{m[c]:.3f}" if c in m else "-" for c in columns))
    console.print(table)


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


def config_flags(p: argparse.ArgumentParser, required: bool = False) -> None:
    """--config: a TOML file, by default the shoal.toml of the project we are in."""
    p.add_argument(
        "--config",
        type=Path,
        help="TOML config file (see examples/; default: the shoal.toml of the project this folder is in)",
    )
    p.set_defaults(config_required=required)


def config_keys(p: argparse.ArgumentParser, skip: frozenset[str] = frozenset()) -> None:
    """One flag per config key, over what the file says (but ``skip``, flags of the command's own)."""
    group = p.add_argument_group("config keys (the same names as in the TOML file)")
    for f in cfgmod.flags():
        if f.flag in skip:
            continue
        key = f"{f.section}.{f.key}" if f.section else f.key
        group.add_argument(
            f.flag,
            dest=f.flag,
            metavar=_choices(f.type) or f.key.upper(),
            default=None,
            help=f"{key} (default: {_default(f.default)})",
        )


def overrides(args: argparse.Namespace) -> dict[str, str]:
    return {k: v for k, v in vars(args).items() if k.startswith("--") and v is not None}


def run_config(args: argparse.Namespace) -> cfgmod.RunConfig:
    """The defaults, then --config (or the project's shoal.toml), then the config-key flags."""
    if args.config is None:
        project = find_project()
        if project is not None and (project / "shoal.toml").is_file():
            args.config = project / "shoal.toml"  # run from a project folder: its config
        elif args.config_required:
            raise ShoalError("give --config FILE, or run from a project folder that holds a shoal.toml")
    raw = cfgmod.to_dict(cfgmod.load(args.config)) if args.config else {}
    return cfgmod.from_dict(cfgmod.apply_overrides(raw, overrides(args)))


def _choices(tp: Any) -> str:
    for t in (tp, *typing.get_args(tp)):
        if isinstance(t, type) and issubclass(t, enum.Enum):
            return "{" + ",".join(str(m.value) for m in t) + "}"
        if typing.get_origin(t) is tuple:
            return "A,B,..."
    return ""


def _default(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, tuple):
        return ",".join(str(_default(v)) for v in value) or "(none)"
    return str(value)
