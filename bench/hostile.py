"""Attacks on a live `shoal server` while honest devices train (issue 11).

Each attack gets a fresh `shoal server` process (TLS, per-device tokens) and three honest
`shoal client` processes on 127.0.0.1. The attacker is an enrolled device turned hostile
(it holds a valid token, is picked every round and fetches its task) or, for the
connection flood, one load-generator process speaking for 10,000 enrolled devices:

- idle-upload-streams: each round, 200 PutResult streams from the attacker that never
  send a byte (the old server's 64 threads all waited on such streams: no round committed);
- poisoned-update: an update of 3e38s claiming 10**9 examples;
- junk-uploads: 4 concurrent 200 MB uploads (the old server buffered each, up to 1 GiB);
- connection-flood: 10,000 authenticated devices, each on its own TLS connection, joined
  (ineligible) and long-polling for work the whole time.

It prints one line per attack: how many rounds committed with every honest device's
update, and the server process's peak resident memory (sampled every 50 ms).

    .venv/bin/python bench/hostile.py [--rounds 3] [--flood 10000] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil

from shoal.messages import TrainResult, TrainTask, decode, encode
from shoal.net.auth import ID_HEADER, TOKEN_HEADER, token_digest
from shoal.net.certs import make_certs
from shoal.net.chunks import CHUNK_BYTES, MAX_CHUNK_MESSAGE, ChunkReader, chunk_stream
from shoal.net.proto import shoal_pb2 as pb
from shoal.net.proto import shoal_pb2_grpc as rpc

HONEST = ("0", "1", "2")
ATTACKER = "3"
ROUND_TIMEOUT_S = 8.0


def _config(rounds: int, clients: int, per_round: int, csv: Path | None = None) -> str:
    data = f'dataset = "csv"\npath = "{csv}"\nlabel_column = "label"' if csv else 'dataset = "digits"'
    return f"""rounds = {rounds}
seed = 0
backend = "inprocess"
[data]
{data}
num_clients = {clients}
[model]
name = "mlp"
hidden = [32]
[strategy]
clients_per_round = {per_round}
[trainer]
lr = 0.2
local_epochs = 2
batch_size = 16
"""


def _digits_csv(path: Path, rows: int) -> Path:
    """The digits, repeated with a little noise to ``rows`` rows: enough data to enroll
    10,000 devices with a few examples each."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    pick = rng.integers(0, len(y), rows)
    noisy = x[pick] + rng.normal(0, 0.5, (rows, x.shape[1]))
    lines = [",".join([*(f"p{i}" for i in range(x.shape[1])), "label"])]
    lines += [
        ",".join([*(f"{v:.2f}" for v in row), str(label)]) for row, label in zip(noisy, y[pick], strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the hostile device -------------------------------------------------------------------------
class Silence:
    """A request stream that sends no byte until ``hush`` is set, then ends."""

    def __init__(self, hush: asyncio.Event) -> None:
        self.hush = hush

    def __aiter__(self) -> Silence:
        return self

    async def __anext__(self) -> pb.Chunk:
        await self.hush.wait()
        raise StopAsyncIteration


class Peer:
    """An enrolled device turned hostile: joins, takes its task each round, answers with an attack."""

    def __init__(self, address: str, cid: str, token: str, ca: Path) -> None:
        opts = [("grpc.max_receive_message_length", MAX_CHUNK_MESSAGE), ("grpc.use_local_subchannel_pool", 1)]
        creds = grpc.ssl_channel_credentials(ca.read_bytes())
        self.channel = grpc.aio.secure_channel(address, creds, options=opts)
        self.stub = rpc.CoordinatorStub(self.channel)
        self.md = ((ID_HEADER, cid), (TOKEN_HEADER, token))
        self.answers: collections.Counter[str] = collections.Counter()
        self.hush = asyncio.Event()  # set when the run is over: the idle streams end

    async def join(self, eligible: bool = True, attempts: int = 20) -> None:
        state = pb.DeviceState(charging=eligible, unmetered=True, idle=True, battery=1.0)
        for attempt in range(attempts):
            try:
                await self.stub.Join(pb.JoinRequest(state=state), metadata=self.md, timeout=30)
                return
            except grpc.aio.AioRpcError:
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(1.0)

    async def task(self, wait_ms: int) -> TrainTask | str:
        reader = ChunkReader({"task", "secagg"}, 1 << 30)
        async for chunk in self.stub.GetTask(pb.TaskRequest(wait_ms=wait_ms), metadata=self.md):
            if chunk.kind in ("none", "done"):
                return str(chunk.kind)
            reader.add(chunk)
        task = decode(reader.payload())
        return task if isinstance(task, TrainTask) else "none"

    def tally(self, outcomes: Iterable[Any]) -> None:
        for o in outcomes:
            if isinstance(o, grpc.aio.AioRpcError):
                self.answers[o.code().name] += 1
            elif isinstance(o, pb.PutReply):
                self.answers["accepted" if o.accepted else f"refused: {o.reason[:60]}"] += 1

    async def serve(self, attack: Callable[[Peer, TrainTask], Awaitable[None]]) -> None:
        await self.join()
        while True:
            try:
                got = await self.task(5000)
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.5)
                continue
            if got == "done":
                self.hush.set()  # the idle streams' senders end before the channel closes
                await asyncio.sleep(0.2)
                await self.channel.close()
                return
            if isinstance(got, TrainTask):
                await attack(self, got)


async def idle_upload_streams(peer: Peer, task: TrainTask) -> None:
    calls = [peer.stub.PutResult(Silence(peer.hush), metadata=peer.md) for _ in range(200)]
    peer.tally(await asyncio.gather(*calls, return_exceptions=True))


async def poisoned_update(peer: Peer, task: TrainTask) -> None:
    delta = np.full(task.params.shape, 3e38, np.float32)
    poison = TrainResult(task.round, task.client_id, 10**9, {"delta": delta}, {"train_loss": 0.01})
    call = peer.stub.PutResult(chunk_stream("result", encode(poison)), metadata=peer.md)
    peer.tally(await asyncio.gather(call, return_exceptions=True))


async def junk_uploads(peer: Peer, task: TrainTask) -> None:
    piece, total = bytes(CHUNK_BYTES), 200 << 20  # chunk headers all in order: only the size is a lie

    def junk() -> Any:
        count = total // CHUNK_BYTES
        for i in range(count):
            yield pb.Chunk(kind="result", index=i, count=count, total_bytes=total, data=piece)

    calls = [peer.stub.PutResult(junk(), metadata=peer.md) for _ in range(4)]
    peer.tally(await asyncio.gather(*calls, return_exceptions=True))


ATTACKS: dict[str, Callable[[Peer, TrainTask], Awaitable[None]]] = {
    "idle-upload-streams": idle_upload_streams,
    "poisoned-update": poisoned_update,
    "junk-uploads": junk_uploads,
}


def _in_thread(coro_factory: Callable[[], Coroutine[Any, Any, None]]) -> threading.Thread:
    thread = threading.Thread(target=lambda: asyncio.run(coro_factory()), daemon=True)
    thread.start()
    return thread


# -- the flood: its own process ---------------------------------------------------------------
async def _flood(address: str, first: int, count: int, token: str, ca: Path) -> None:
    polling, done = 0, 0

    async def device(cid: str) -> None:
        nonlocal polling, done
        peer = Peer(address, cid, token, ca)
        await peer.join(eligible=False)  # never picked: it only holds a connection and a long poll
        polling += 1
        while True:
            try:
                if await peer.task(30_000) == "done":
                    break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(1.0)
        done += 1
        await peer.channel.close()

    devices = []
    for i in range(count):
        devices.append(asyncio.ensure_future(device(str(first + i))))
        if i % 200 == 199:  # pace the TLS handshakes a little
            await asyncio.sleep(0.05)
    while done < count:
        print(json.dumps({"polling": polling, "done": done}), flush=True)
        await asyncio.sleep(1.0)
    await asyncio.gather(*devices, return_exceptions=True)


# -- one attack against one server ------------------------------------------------------------
class Sampler:
    """Peak resident memory of a process, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.process, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.05)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_attack(name: str, work: Path, certs: Path, rounds: int, flood: int) -> tuple[int, int, int, str]:
    """(rounds with every honest update, rounds, peak server RSS, what the attacker was told)."""
    folder = work / name
    folder.mkdir()
    clients = len(HONEST) + (flood if name == "connection-flood" else 1 if name in ATTACKS else 0)
    csv = _digits_csv(folder / "data.csv", 4 * clients) if name == "connection-flood" else None
    per_round = len(HONEST) + (1 if name in ATTACKS else 0)
    config = folder / "run.toml"
    config.write_text(_config(rounds, clients, per_round, csv))
    tokens = folder / "tokens"
    lines = [f"{c} {token_digest('token-' + c)}" for c in HONEST]
    if csv is not None:  # every flood device holds a valid token
        lines += [f"{i} {token_digest('flood')}" for i in range(len(HONEST), clients)]
    else:
        lines.append(f"{ATTACKER} {token_digest('token-' + ATTACKER)}")
    tokens.write_text("\n".join(lines) + "\n")
    address = f"127.0.0.1:{_port()}"
    out, logs = folder / "out", folder / "logs"
    logs.mkdir()

    def shoal(log: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        full = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
        return subprocess.Popen([sys.executable, "-m", "shoal.cli", *args], env=full,
                                stdout=(logs / log).open("wb"), stderr=subprocess.STDOUT)  # fmt: skip

    server = shoal(
        "server.log", "server", "--config", str(config), "--address", address, "--out", str(out), "--quiet",
        "--cert", str(certs / "server.pem"), "--key", str(certs / "server.key"), "--tokens", str(tokens),
        "--min-clients", str(per_round), "--round-timeout", str(ROUND_TIMEOUT_S), "--join-timeout", "600",
        "--experiment",
    )  # fmt: skip
    sampler = Sampler(server.pid)
    procs: list[subprocess.Popen[bytes]] = []
    told = ""
    try:
        _wait(lambda: _listening(address), 120, "the server to listen", logs / "server.log")
        attacker: threading.Thread | None = None
        peer: Peer | None = None
        if name in ATTACKS:
            holder: dict[str, Peer] = {}

            async def hostile() -> None:
                holder["peer"] = Peer(address, ATTACKER, f"token-{ATTACKER}", certs / "ca.pem")
                await holder["peer"].serve(ATTACKS[name])

            attacker = _in_thread(hostile)
        elif name == "connection-flood":
            procs.append(_start_flood(address, len(HONEST), flood, certs / "ca.pem", logs / "flood.log"))
            _wait(lambda: _flood_polling(logs / "flood.log") >= flood, 600, "the flood", logs / "flood.log")
        for c in HONEST:
            token_file = folder / f"token-{c}"
            token_file.write_text(f"token-{c}\n")
            args = ["client", "--server", address, "--config", str(config), "--client-id", c, "--experiment"]
            procs.append(
                shoal(
                    f"client-{c}.log", *args, "--ca", str(certs / "ca.pem"), "--token-file", str(token_file)
                )
            )
        if server.wait(timeout=900) != 0:
            raise RuntimeError(
                f"the server failed; see {logs / 'server.log'}:\n" + _tail(logs / "server.log")
            )
        if attacker is not None:
            attacker.join(timeout=30)
            peer = holder.get("peer")
            told = ", ".join(f"{k} x{v}" for k, v in sorted(peer.answers.items())) if peer else ""
    finally:
        peak = sampler.stop()
        for p in [server, *procs]:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    committed = sum(1 for r in records if not r["aborted"] and r["clients_completed"] >= len(HONEST))
    return committed, rounds, peak, told


def _start_flood(address: str, first: int, count: int, ca: Path, log: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, __file__, "--flood-worker", address, str(first), str(count), str(ca)]
    return subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _flood_polling(log: Path) -> int:
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")] if log.exists() else []
    return int(json.loads(lines[-1])["polling"]) if lines else 0


def _listening(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) == 0


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _wait(condition: Callable[[], bool], timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}; {log}:\n{_tail(log)}")
        time.sleep(0.1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--flood", type=int, default=10_000, help="devices in the connection flood")
    p.add_argument("--only", nargs="*", help="run only these attacks")
    p.add_argument("--verbose", action="store_true", help="also print what the attacker was told")
    p.add_argument(
        "--flood-worker", nargs=4, metavar=("ADDRESS", "FIRST", "COUNT", "CA"), help=argparse.SUPPRESS
    )
    args = p.parse_args()
    _raise_fd_limit()  # 10,000 connections: the server and the load generator inherit or raise it
    if args.flood_worker:
        address, first, count, ca = args.flood_worker
        asyncio.run(_flood(address, int(first), int(count), "flood", Path(ca)))
        return
    names = ["none", *ATTACKS, "connection-flood"]
    with tempfile.TemporaryDirectory(prefix="shoal-hostile-") as tmp:
        work = Path(tmp)
        certs = make_certs(work / "certs", ["127.0.0.1"], [])  # the server's; devices use tokens
        for name in names:
            if args.only and name not in args.only:
                continue
            committed, rounds, peak, told = run_attack(name, work, certs, args.rounds, args.flood)
            print(f"attack: {name}  honest rounds committed: {committed}/{rounds}  "
                  f"peak server RSS: {peak >> 20} MiB", flush=True)  # fmt: skip
            if args.verbose and told:
                print(f"  the attacker was told: {told}", flush=True)


if __name__ == "__main__":
    main()
