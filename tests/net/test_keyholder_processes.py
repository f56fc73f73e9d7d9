"""CKKS over the network: `shoal keyholder` is its own process, holding the secret key and
decrypting only the server's sums; five hospital sites train through `shoal server`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from safetensors.numpy import load_file

from shoal.config import from_dict
from shoal.he.ckks import frame
from shoal.he.keyholder import _HEADER, METHOD, REQUEST_MAGIC, SERVER_ID, read_public
from shoal.net.auth import ID_HEADER, TOKEN_HEADER
from tests.net.procs import free_port, records, shoal, stop, wait_for

pytestmark = pytest.mark.slow
tenseal = pytest.importorskip("tenseal")

SITES = ("university", "regional", "community", "screening", "rural")


def _config(keyholder: str, public: Path, he: bool = True) -> str:
    lines = [
        "rounds = 3",
        "seed = 4",
        "[data]",
        'dataset = "hospitals"',
        "num_clients = 5",
        "[model]",
        'name = "mlp"',
        "hidden = [8]",
        "[strategy]",
        "clients_per_round = 5",
        "[trainer]",
        "lr = 0.05",
        "local_epochs = 1",
        "batch_size = 16",
    ]
    if he:
        lines += ["[he]", "enabled = true", f'keyholder = "{keyholder}"', f'public_key = "{public}"']
    return "\n".join(lines) + "\n"


def _start_keyholder(
    tmp_path: Path, keys: Path, config: Path, *extra: str, address: str = ""
) -> tuple[object, str]:
    address = address or f"127.0.0.1:{free_port()}"
    log = tmp_path / f"keyholder-{len(list(tmp_path.glob('keyholder-*.log')))}.log"
    args = ["keyholder", "--config", str(config), "--out", str(keys), "--address", address, "--insecure"]
    proc = shoal(*args, *extra, log=log)
    wait_for(lambda: "shoal keyholder on" in log.read_text() or proc.poll() is not None, 60, "the key holder")
    assert proc.poll() is None, log.read_text()
    return proc, address


def test_sites_train_under_ckks_with_the_key_holder_as_its_own_process(tmp_path):
    keys = tmp_path / "keys"
    config = tmp_path / "hospitals.toml"
    keyholder_address = f"127.0.0.1:{free_port()}"
    config.write_text(_config(keyholder_address, keys / "public.ckks"))
    address, out = f"127.0.0.1:{free_port()}", tmp_path / "out"
    holder, _ = _start_keyholder(tmp_path, keys, config, address=keyholder_address)
    procs = [holder]
    try:
        server = shoal(
            "server", "--config", str(config), "--address", address, "--out", str(out), "--quiet",
            "--insecure", "--experiment", "--keyholder-token", str(keys / "server.token"),
            log=tmp_path / "server.log",
        )  # fmt: skip
        procs.append(server)
        for site in SITES:
            procs.append(
                shoal(
                    "client",
                    "--server",
                    address,
                    "--config",
                    str(config),
                    "--client-id",
                    site,
                    "--experiment",
                    "--insecure",
                    log=tmp_path / f"{site}.log",
                )
            )
        assert server.wait(timeout=240) == 0, (tmp_path / "server.log").read_text()
    finally:
        stop(*procs)
    recs = records(out / "metrics.jsonl")
    assert [r["round"] for r in recs] == [1, 2, 3]
    assert all(not r["aborted"] and r["clients_completed"] == 5 for r in recs)
    assert all(r["he_ciphertext_bytes"] > 100_000 for r in recs)  # what each site sent: ciphertexts
    assert json.loads((keys / "rounds.json").read_text()) == {"last": 3}  # one decryption a round
    assert (keys / "secret.ckks").stat().st_mode & 0o077 == 0  # the secret key is the holder's alone

    # The key holder's sums are the real ones: the same run simulated in one process, its
    # key authority in process too, ends on the same weights up to CKKS's rounding.
    from shoal import experiment

    simulated = {**_plain_dict(), "backend": "inprocess", "he": {"enabled": True}}
    experiment.run(from_dict(simulated), tmp_path / "plain")
    got, want = (load_file(str(d / "model.safetensors")) for d in (out, tmp_path / "plain"))
    assert got.keys() == want.keys()
    assert max(float(np.abs(got[k] - want[k]).max()) for k in got) < 1e-4
    assert any(not np.array_equal(got[k], want[k]) for k in got)  # CKKS is approximate: it went through it


def _plain_dict() -> dict[str, Any]:
    import tomllib

    return tomllib.loads(_config("", Path("unused"), he=False))


def _call(address: str, request: bytes, token: str | None) -> bytes:
    metadata = [(ID_HEADER, SERVER_ID)] + ([(TOKEN_HEADER, token)] if token is not None else [])
    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1)]) as channel:
        call = channel.unary_unary(METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        return call(request, timeout=30, metadata=metadata)


def _code(address: str, request: bytes, token: str | None) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        _call(address, request, token)
    return info.value.code()


def test_the_key_holder_refuses_hostile_calls_and_keeps_serving(tmp_path):
    keys = tmp_path / "keys"
    config = tmp_path / "he.toml"
    config.write_text(_config("127.0.0.1:1", keys / "public.ckks"))
    holder, address = _start_keyholder(tmp_path, keys, config, "--max-values", "5000")
    try:
        token = (keys / "server.token").read_text().strip()
        params, context = read_public(keys / "public.ckks")
        public = tenseal.context_from(context)
        values = np.linspace(-1, 1, 100)
        ciphertext = frame([tenseal.ckks_vector(public, values).serialize()])

        def request(rnd: int, body: bytes = ciphertext, length: int = 100) -> bytes:
            return _HEADER.pack(REQUEST_MAGIC, rnd, length) + body

        assert _code(address, request(1), None) == grpc.StatusCode.UNAUTHENTICATED
        assert _code(address, request(1), "0" * 64) == grpc.StatusCode.UNAUTHENTICATED
        assert (
            _code(address, request(1, b"\x01\x00\x00\x00garbage"), token) == grpc.StatusCode.INVALID_ARGUMENT
        )
        assert _code(address, request(1, length=10_000), token) == grpc.StatusCode.INVALID_ARGUMENT
        assert _code(address, b"short", token) == grpc.StatusCode.INVALID_ARGUMENT
        huge = request(1, b"\x00" * (2 * math.ceil(5000 / params.slots) * 700_000 + 1_000_000))
        assert _code(address, huge, token) == grpc.StatusCode.RESOURCE_EXHAUSTED  # before the handler
        # after all that, an honest sum still decrypts, once a round
        got = np.frombuffer(_call(address, request(1), token), dtype="<f8")
        assert np.abs(got - values).max() < 1e-6
        assert _code(address, request(1), token) == grpc.StatusCode.FAILED_PRECONDITION
        assert _code(address, request(0), token) == grpc.StatusCode.FAILED_PRECONDITION
        assert len(_call(address, request(2), token)) == 800
    finally:
        stop(holder)
    public_before = (keys / "public.ckks").read_bytes()
    holder, address = _start_keyholder(tmp_path, keys, config)  # restarted: same keys, same record
    try:
        token = (keys / "server.token").read_text().strip()
        assert (keys / "public.ckks").read_bytes() == public_before
        assert _code(address, request(2), token) == grpc.StatusCode.FAILED_PRECONDITION
        got = np.frombuffer(_call(address, request(3), token), dtype="<f8")
        assert np.abs(got - values).max() < 1e-6
    finally:
        stop(holder)
