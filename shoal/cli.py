"""The ``shoal`` command: ``run``, ``report``, ``privacy``, and ``server``/``client``/``certs``."""

from __future__ import annotations

import argparse
import enum
import sys
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from shoal import config as cfgmod
from shoal import experiment
from shoal.errors import ShoalError
from shoal.report import RoundProgress, render
from shoal.runtime.history import History, MetricsLog


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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shoal", description="Federated deep learning for PyTorch.", allow_abbrev=False
    )
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run a federated training simulation",
        allow_abbrev=False,
        description="Train a model with federated learning across simulated clients. Settings come "
        "from the defaults, then --config FILE (TOML), then the flags below.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  shoal run --config examples/fmnist_noniid.toml "
        "--rounds 50 --clients-per-round 10 --seed 7",
    )
    run.add_argument("--config", type=Path, help="TOML config file (see examples/)")
    run.add_argument("--out", type=Path, help="run folder (default: runs/<timestamp>)")
    run.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue an interrupted run from its last round",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    group = run.add_argument_group("config keys (the same names as in the TOML file)")
    for f in cfgmod.flags():
        key = f"{f.section}.{f.key}" if f.section else f.key
        group.add_argument(
            f.flag,
            dest=f.flag,
            metavar=_choices(f.type) or f.key.upper(),
            default=None,
            help=f"{key} (default: {_default(f.default)})",
        )
    rep = sub.add_parser("report", help="(re)render report.html for a run folder")
    rep.add_argument("run_dir", type=Path)
    _privacy_parser(sub)
    _net_parsers(sub)
    return p


def _net_parsers(sub: Any) -> None:
    certs = sub.add_parser("certs", help="make a CA and TLS certificates for a test deployment")
    certs.add_argument("out", type=Path, help="folder for ca.pem, server.pem/.key, client-<id>.pem/.key")
    certs.add_argument(
        "--host",
        action="append",
        default=None,
        help="server name or IP (repeat; default localhost, 127.0.0.1)",
    )
    certs.add_argument("--clients", default="", help="comma-separated client ids to make certificates for")
    srv = sub.add_parser(
        "server",
        help="coordinate a federated run with remote devices (gRPC)",
        description="Run the config's training with devices that connect over the network (shoal client).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  shoal certs certs --clients 0,1,2\n"
        "  shoal server --config run.toml --address 0.0.0.0:8443 --cert certs/server.pem "
        "--key certs/server.key --ca certs/ca.pem",
    )
    srv.add_argument("--config", type=Path, required=True)
    srv.add_argument("--address", default="127.0.0.1:8443", help="host:port to listen on")
    srv.add_argument("--out", type=Path, help="run folder (default: runs/<timestamp>)")
    srv.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    _tls_flags(srv, "server")
    srv.add_argument(
        "--tokens", type=Path, help="per-device tokens: lines of '<client id> <sha256 of token>'"
    )
    srv.add_argument("--round-timeout", type=float, default=60.0, help="seconds a round waits for devices")
    over = "pick this share more devices; a round commits with the first answers (e.g. 0.3)"
    srv.add_argument("--over-selection", type=float, default=0.0, help=over)
    srv.add_argument(
        "--min-clients", type=int, help="devices to wait for before round 1 (default: a round's)"
    )
    srv.add_argument("--join-timeout", type=float, default=300.0, help="seconds to wait for them")
    srv.add_argument("--quiet", action="store_true")
    cli = sub.add_parser("client", help="a device: join a server and train its tasks")
    cli.add_argument("--server", required=True, help="host:port of the shoal server")
    cli.add_argument("--config", type=Path, required=True, help="the server's config (model, trainer, data)")
    cli.add_argument("--client-id", required=True, help="this device's id (its certificate's common name)")
    _tls_flags(cli, "client")
    cli.add_argument("--token", help="per-device token, if the server uses tokens")
    cli.add_argument("--give-up", type=float, default=600.0, help="seconds without contact before exiting")
    cli.add_argument("--state-dir", type=Path, help="keep this device's client state (SCAFFOLD's c_i) here")


def _tls_flags(p: argparse.ArgumentParser, side: str) -> None:
    p.add_argument("--cert", type=Path, help=f"this {side}'s certificate (PEM)")
    p.add_argument("--key", type=Path, help=f"this {side}'s private key (PEM)")
    p.add_argument(
        "--ca",
        type=Path,
        help="CA certificate: "
        + ("require client certificates from it" if side == "server" else "that signed the server's"),
    )
    p.add_argument("--insecure", action="store_true", help="plaintext gRPC: for a local trial only")


def _certs(args: argparse.Namespace, console: Console) -> int:
    from shoal.net.certs import make_certs

    hosts = args.host or ["localhost", "127.0.0.1"]
    out = make_certs(args.out, hosts, [c for c in args.clients.split(",") if c])
    console.print(f"wrote a test CA and certificates for {', '.join(hosts)} into {out}")
    return 0


def _server(args: argparse.Namespace, console: Console) -> int:
    from shoal.net.run import serve
    from shoal.net.server import TLSFiles

    if args.insecure == bool(args.cert or args.key):
        raise ShoalError(
            "give --cert and --key (and --ca for client certificates), or --insecure for a local trial"
        )
    if args.resume and args.out is None:
        raise ShoalError("--resume continues the run in --out: give --out RUN_DIR")
    tls = None if args.insecure else TLSFiles(args.cert, args.key, args.ca)
    cfg = cfgmod.load(args.out / "config.toml") if args.resume and args.out else cfgmod.load(args.config)
    out = args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    kw = dict(insecure=args.insecure, round_timeout_s=args.round_timeout, min_clients=args.min_clients,
              join_timeout_s=args.join_timeout, resume=args.resume)  # fmt: skip
    kw["tokens"] = _read_tokens(args.tokens)
    kw["over_selection"] = args.over_selection
    console.print(f"[bold]shoal server[/bold] on {args.address}: {cfg.rounds} rounds, run folder {out}")
    if args.quiet:
        history = serve(cfg, out, args.address, tls, **kw)
    else:
        with RoundProgress(cfg.rounds, 0, console) as bar:
            history = serve(cfg, out, args.address, tls, callbacks=(bar,), **kw)
    render(out)
    _print_result(console, history, out)
    return 0


def _read_tokens(path: Path | None) -> dict[str, str] | None:
    if path is None:
        return None
    if not path.is_file():
        raise ShoalError(f"token file {path} does not exist")
    tokens = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or line.startswith("#"):
            continue
        if len(parts) != 2 or len(parts[1]) != 64:
            raise ShoalError(f"{path}:{n}: expected '<client id> <64 hex digits of sha256(token)>'")
        tokens[parts[0]] = parts[1].lower()
    return tokens


def _client(args: argparse.Namespace, console: Console) -> int:
    from shoal.net.client import ClientTLS
    from shoal.net.run import device_for

    if not args.insecure and args.ca is None:
        raise ShoalError(
            "give --ca (the CA that signed the server's certificate), or --insecure for a local trial"
        )
    tls = None if args.insecure else ClientTLS(args.ca, args.cert, args.key)
    if args.state_dir is not None:
        args.state_dir.mkdir(parents=True, exist_ok=True)
    device = device_for(
        cfgmod.load(args.config), args.client_id, args.server, tls, args.token, state_dir=args.state_dir
    )
    done = device.run(give_up_s=args.give_up)
    console.print(f"client {args.client_id}: {done} tasks done; the server finished the run")
    return 0


def _privacy_parser(sub: Any) -> None:
    priv = sub.add_parser(
        "privacy",
        help="epsilon of a DP run before running it, or the noise for a target epsilon",
        allow_abbrev=False,
        description="Client-level (epsilon, delta) of DP-FedAvg from Google's dp-accounting. Settings "
        "come from --config (its [privacy], [strategy], rounds and data), then the flags.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  shoal privacy --config examples/digits_central_dp.toml\n"
        "  shoal privacy --clients 10000 --clients-per-round 100 --rounds 500 --noise-multiplier 1.0\n"
        "  shoal privacy --clients 10000 --clients-per-round 100 --rounds 500 --target-epsilon 3",
    )
    priv.add_argument("--config", type=Path, help="a run's TOML config")
    priv.add_argument("--clients", type=int, help="N, clients available each round")
    priv.add_argument("--clients-per-round", type=int, help="m (fixed) or qN (poisson)")
    priv.add_argument(
        "--sampling", choices=["poisson", "fixed"], help="how clients are picked (default poisson)"
    )
    priv.add_argument("--rounds", type=int, help="rounds of training")
    priv.add_argument("--noise-multiplier", type=float, help="z: noise std / clip norm")
    priv.add_argument("--delta", type=float, help="default 1/N^1.1")
    priv.add_argument("--target-epsilon", type=float, help="print the noise multiplier that meets it instead")
    priv.add_argument("--accountant", choices=["rdp", "pld"], help="default rdp")


def _privacy(args: argparse.Namespace, console: Console) -> int:
    from shoal.privacy.accounting import calibrate_noise, epsilon
    from shoal.sampling import Sampling

    cfg = cfgmod.load(args.config) if args.config else cfgmod.RunConfig()
    clients = args.clients or (len(experiment.load_data(cfg)) if args.config else None)
    per_round = args.clients_per_round or (cfg.strategy.clients_per_round if args.config else None)
    if not clients or not per_round:
        raise ShoalError(
            "say how many clients there are and how many join a round: --clients and "
            "--clients-per-round, or --config"
        )
    kind = args.sampling or (cfg.strategy.sampling.value if args.config else "poisson")
    sampling = (
        Sampling.poisson(per_round / clients, clients)
        if kind == "poisson"
        else Sampling.fixed(per_round, clients)
    )
    rounds = args.rounds or cfg.rounds
    delta = args.delta or cfg.privacy.delta_for(clients)
    accountant = args.accountant or cfg.privacy.accountant.value
    target = args.target_epsilon or (None if args.noise_multiplier else cfg.privacy.target_epsilon)
    what = f"{kind} sampling of {per_round} in {clients} clients a round, delta {delta:.3g} ({accountant})"
    if target is not None and args.noise_multiplier is None and not (args.config and not args.target_epsilon):
        z = calibrate_noise(sampling, rounds, target, delta, accountant)
        console.print(what)
        console.print(f"  noise_multiplier {z:.4f} keeps epsilon <= {target:g} for {rounds} rounds")
        return 0
    z = args.noise_multiplier or cfg.privacy.noise_multiplier
    console.print(f"{what}, noise_multiplier {z:g}")
    for r in sorted({max(1, rounds // 4), max(1, rounds // 2), rounds}):
        console.print(f"  after {r:>6} rounds: epsilon {epsilon(sampling, z, r, delta, accountant):.4f}")
    if target is not None:
        console.print(f"  (target_epsilon {target:g}: the run stops before it passes it)")
    return 0


def _print_result(console: Console, history: History, out: Path) -> None:
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


def _run(args: argparse.Namespace, console: Console) -> int:
    overrides = {k: v for k, v in vars(args).items() if k.startswith("--") and v is not None}
    if args.resume is not None:
        if args.config is not None or overrides:
            raise ShoalError(
                "--resume continues a run with its saved config.toml; drop --config and other flags"
            )
        out = args.resume
        cfg = cfgmod.load(out / "config.toml")
        done = len(MetricsLog(out / "metrics.jsonl").read()) if (out / "metrics.jsonl").exists() else 0
    else:
        raw = cfgmod.to_dict(cfgmod.load(args.config)) if args.config else {}
        cfg = cfgmod.from_dict(cfgmod.apply_overrides(raw, overrides))
        out = args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        done = 0
    console.print(
        f"[bold]shoal[/bold] {cfg.data.dataset.value} / {cfg.model.name.value} / {cfg.strategy.name.value}: "
        f"{cfg.rounds} rounds, {cfg.strategy.clients_per_round} of {cfg.data.num_clients} clients a round"
    )
    try:
        if args.quiet:
            history = _go(args, cfg, out, ())
        else:
            with RoundProgress(cfg.rounds, done, console) as bar:
                history = _go(args, cfg, out, (bar,))
    except KeyboardInterrupt:
        console.print(f"\ninterrupted; continue with: shoal run --resume {out}")
        return 130
    render(out)
    _print_result(console, history, out)
    return 0


def _go(args: argparse.Namespace, cfg: cfgmod.RunConfig, out: Path, callbacks: Sequence[Any]) -> History:
    if args.resume is not None:
        return experiment.resume(out, callbacks=callbacks)
    return experiment.run(cfg, out, callbacks)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console(stderr=False)
    try:
        if args.command == "run":
            return _run(args, console)
        if args.command == "privacy":
            return _privacy(args, console)
        if args.command in ("certs", "server", "client"):
            return {"certs": _certs, "server": _server, "client": _client}[args.command](args, console)
        console.print(f"wrote {render(args.run_dir)}")
        return 0
    except ShoalError as exc:
        print(f"shoal: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
