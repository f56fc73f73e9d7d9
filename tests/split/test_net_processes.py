"""Split learning between real processes on 127.0.0.1: a server and devices exchanging
activations and gradients per batch over gRPC, with mutual TLS or tokens, and a hostile peer."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from shoal.data import FederatedDataset, digits, iid
from shoal.models import mlp
from shoal.net.auth import token_digest
from shoal.net.certs import make_certs
from shoal.split import Activations, Ready, SplitConfig, Turn, decode, encode, run_split
from shoal.split.net import METHOD
from tests.net.procs import free_port, stop, wait_for

pytestmark = pytest.mark.slow
FLAGS = ["--dataset", "digits", "--num-clients", "2", "--hidden", "16", "16", "--cuts", "2", "--seed", "0"]


def _proc(*args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    # one thread, as this test process uses: float sums then match the in-process run bit for bit
    full = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "shoal.split.cli", *args],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=full,
    )


def _records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


@pytest.mark.parametrize("cuts", [["2"], ["2", "4"]], ids=["vanilla", "u-shaped"])
def test_devices_over_mutual_tls_train_the_model_the_in_process_run_trains(
    tmp_path: Path, cuts: list[str]
) -> None:
    certs = make_certs(tmp_path / "certs", ["127.0.0.1"], ["0", "1"])
    address = f"127.0.0.1:{free_port()}"
    flags = [*FLAGS[:-4], "--cuts", *cuts, "--seed", "0"]
    server = _proc(
        "server", *flags, "--address", address, "--rounds", "2", "--min-clients", "2",
        "--cert", str(certs / "server.pem"), "--key", str(certs / "server.key"),
        "--ca", str(certs / "ca.pem"), log=tmp_path / "server.log",
    )  # fmt: skip

    def device(c: str) -> subprocess.Popen[bytes]:
        tls = ["--ca", str(certs / "ca.pem"), "--cert", str(certs / f"client-{c}.pem")]
        tls += ["--key", str(certs / f"client-{c}.key")]
        args = [*flags, "--server", address, "--client-id", c, "--give-up", "60", *tls]
        return _proc("device", *args, log=tmp_path / f"device{c}.log")

    devices = [device(c) for c in "01"]
    try:
        assert server.wait(timeout=120) == 0, (tmp_path / "server.log").read_text()
        for c, d in zip("01", devices, strict=True):
            assert d.wait(timeout=30) == 0, (tmp_path / f"device{c}.log").read_text()
    finally:
        stop(server, *devices)
    text = (tmp_path / "server.log").read_text()
    records = _records(tmp_path / "server.log")
    assert [r["clients_completed"] for r in records] == [2, 2] and not any(r["refused"] for r in records), (
        text
    )
    networked = next(line.split()[-1] for line in text.splitlines() if line.startswith("model hash:"))
    data = iid(digits(), num_clients=2, seed=0)
    model = functools.partial(mlp, data.input_shape, data.num_classes, (16, 16))
    local = run_split(model, data, SplitConfig(cuts=tuple(int(c) for c in cuts), seed=0), rounds=2)
    assert networked == local.model_hash
    for net, sim in zip(records, local.records, strict=True):  # the same messages, and a device's polls
        assert net["bytes_up"] >= sim["bytes_up"] and net["bytes_down"] >= sim["bytes_down"]


def test_a_hostile_peer_loses_its_turn_and_the_run_goes_on(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"0 {token_digest('secret-0')}\n1 {token_digest('secret-1')}\n")
    address = f"127.0.0.1:{free_port()}"
    server = _proc(
        "server", *FLAGS, "--address", address, "--rounds", "2", "--min-clients", "2", "--insecure",
        "--tokens", str(tokens), "--idle-timeout", "3", log=tmp_path / "server.log",
    )  # fmt: skip
    honest: subprocess.Popen[bytes] | None = None
    channel = grpc.insecure_channel(address)
    call = channel.unary_unary(METHOD)

    def send(msg: Any, cid: str = "0", token: str = "secret-0") -> Any:
        meta = (("shoal-client-id", cid), ("shoal-token", token))
        return decode(call(encode(msg), timeout=10, metadata=meta), 1 << 24)

    try:
        wait_for(lambda: _reachable(call), 60, "the server to listen")
        with pytest.raises(grpc.RpcError) as stranger:
            send(Ready("0"), token="wrong")
        assert stranger.value.code() is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as huge:  # far above what this model's messages need
            call(
                b"x" * (4 << 20), timeout=10, metadata=(("shoal-client-id", "0"), ("shoal-token", "secret-0"))
            )
        assert huge.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        send(Ready("0"))  # "0" is now a live device, and first in turn order
        honest = _proc(
            "device", *FLAGS, "--server", address, "--client-id", "1", "--insecure", "--give-up", "60",
            log=tmp_path / "device1.log", env={"SHOAL_TOKEN": "secret-1"},
        )  # fmt: skip
        turn = _poll_turn(send)
        nan = np.full((4, 16), np.nan, np.float32)
        refusal = send(Activations(turn.round, "0", 0, nan, np.zeros(4, np.int64)))
        assert not refusal.accepted and "NaN" in refusal.reason
        assert server.wait(timeout=120) == 0, (tmp_path / "server.log").read_text()
        assert honest.wait(timeout=30) == 0, (tmp_path / "device1.log").read_text()
    finally:
        channel.close()
        stop(server, *([honest] if honest else []))
    records = _records(tmp_path / "server.log")
    assert "NaN" in records[0]["refused"]["0"] and records[0]["clients_completed"] == 1
    data = iid(digits(), num_clients=2, seed=0)
    assert [r["examples"] for r in records] == [len(data["1"].train)] * 2  # only the honest device's batches
    # the refused turn left no trace: the model is the one the honest device trains alone
    alone = FederatedDataset("alone", {"1": data["1"]}, data.num_classes, data.input_shape, data.test)
    model = functools.partial(mlp, data.input_shape, data.num_classes, (16, 16))
    text = (tmp_path / "server.log").read_text()
    networked = next(line.split()[-1] for line in text.splitlines() if line.startswith("model hash:"))
    assert networked == run_split(model, alone, SplitConfig(cuts=(2,), seed=0), rounds=2).model_hash


def _reachable(call: grpc.UnaryUnaryMultiCallable) -> bool:
    try:
        call(b"", timeout=1, metadata=(("shoal-client-id", "probe"),))
    except grpc.RpcError as exc:
        return bool(exc.code() is not grpc.StatusCode.UNAVAILABLE)
    return True


def _poll_turn(send: Any) -> Turn:
    turn: Any = None

    def got() -> bool:
        nonlocal turn
        turn = send(Ready("0"))
        return isinstance(turn, Turn)

    wait_for(got, 60, "a turn for the hostile peer")
    return turn
