"""The network path on 127.0.0.1 with real sockets and TLS: server, devices, attackers."""

from __future__ import annotations

import socket
import threading
import time

import grpc
import numpy as np
import pytest

import shoal
from shoal.client import TorchTrainer
from shoal.errors import ConfigError
from shoal.messages import Failure, TrainResult, TrainTask, encode
from shoal.net.backend import EligibilityPolicy, GrpcBackend
from shoal.net.certs import make_certs
from shoal.net.chunks import chunk_stream
from shoal.net.client import Device
from shoal.net.proto import shoal_pb2 as pb
from shoal.net.server import start_server
from shoal.net.tls import ClientTLS, TLSFiles

HP = TorchTrainer(lr=0.3, local_epochs=2, batch_size=16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(
        tmp_path_factory.mktemp("certs"), ["localhost", "127.0.0.1"], [str(i) for i in range(6)]
    )


@pytest.fixture()
def served(certs):
    backend = GrpcBackend(round_timeout_s=20)
    address = f"127.0.0.1:{free_port()}"
    server = start_server(
        backend, address, TLSFiles(certs / "server.pem", certs / "server.key", certs / "ca.pem")
    )
    yield backend, address
    backend.close()
    server.stop(grace=None)


def device(certs, address, cid, data, model, **kw):
    tls = ClientTLS(certs / "ca.pem", certs / f"client-{cid}.pem", certs / f"client-{cid}.key")
    return Device(address, cid, HP.build(model), data[cid], tls=tls, **kw)


def test_a_run_over_mutual_tls_equals_the_simulation(served, certs, fed_digits, small_mlp):
    backend, address = served
    ids = [str(i) for i in range(5)]
    data = shoal.data.FederatedDataset(
        "five", {c: fed_digits[c] for c in ids}, 10, fed_digits.input_shape, fed_digits.test
    )
    devices = [device(certs, address, cid, data, small_mlp) for cid in ids]
    threads = [threading.Thread(target=d.run, daemon=True) for d in devices]
    for t in threads:
        t.start()
    assert backend.wait_for_clients(5, timeout_s=20) == ids
    strategy = shoal.FedAvg(clients_per_round=3)
    sim = shoal.Simulation(small_mlp, data, strategy, HP, backend=backend, seed=4)
    networked = sim.run(3)
    for t in threads:
        t.join(timeout=20)
    local = shoal.simulate(small_mlp, data, shoal.FedAvg(clients_per_round=3), HP, rounds=3, seed=4)
    assert networked.model_hash == local.model_hash
    assert all(r["clients_completed"] == 3 for r in networked.records)
    assert sum(d.tasks_done for d in devices) == 9


def test_an_ineligible_device_is_never_picked(served, certs, fed_digits, small_mlp):
    backend, address = served
    from shoal.net.client import DeviceState

    busy = device(certs, address, "1", fed_digits, small_mlp, state=DeviceState(charging=False))
    ok = device(certs, address, "2", fed_digits, small_mlp)
    busy.join(), ok.join()
    assert backend.available() == ["2"]


def test_impostors_strangers_and_plaintext_are_refused(served, certs, tmp_path, fed_digits, small_mlp):
    _, address = served
    # a certificate for client 3 used to speak as client 4
    tls = ClientTLS(certs / "ca.pem", certs / "client-3.pem", certs / "client-3.key")
    impostor = Device(address, "4", HP.build(small_mlp), fed_digits["4"], tls=tls)
    with pytest.raises(grpc.RpcError) as err:
        impostor.join()
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    # a certificate from another CA: the TLS handshake fails
    other = make_certs(tmp_path / "other", ["localhost"], ["0"])
    foreign = ClientTLS(certs / "ca.pem", other / "client-0.pem", other / "client-0.key")
    stranger = Device(address, "0", HP.build(small_mlp), fed_digits["0"], tls=foreign, call_timeout_s=3)
    with pytest.raises(grpc.RpcError) as err:
        stranger.join()
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    # no certificate at all
    anonymous = Device(
        address, "0", HP.build(small_mlp), fed_digits["0"], tls=ClientTLS(certs / "ca.pem"), call_timeout_s=3
    )
    with pytest.raises(grpc.RpcError):
        anonymous.join()
    # plaintext to the TLS port
    plain = Device(address, "0", HP.build(small_mlp), fed_digits["0"], call_timeout_s=3)
    with pytest.raises(grpc.RpcError) as err:
        plain.join()
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE


def answer(backend, d, upload, params=None):
    """Give device ``d`` a task, let it fetch it, send ``upload`` in its place; the reply
    and what the round loop got."""
    params = np.zeros(4, np.float32) if params is None else params
    box = {}
    task = TrainTask(1, d.client_id, params, 1)
    round_ = threading.Thread(target=lambda: box.update(out=backend.train([task])))
    round_.start()
    fetched = d._fetch(5000)
    assert isinstance(fetched, TrainTask) and fetched.round == task.round
    reply = d.stub.PutResult(upload, timeout=10, metadata=d.metadata)
    round_.join(timeout=30)
    return reply, box["out"][0]


def test_bad_uploads_are_refused_and_the_server_keeps_serving(served, certs, fed_digits, small_mlp):
    backend, address = served
    d = device(certs, address, "0", fed_digits, small_mlp)
    d.join()
    forged = TrainResult(1, "0", 1, {"delta": np.zeros(4, np.float32)})
    reply = d.stub.PutResult(chunk_stream("result", encode(forged)), timeout=5, metadata=d.metadata)
    assert not reply.accepted and "no outstanding task" in reply.reason
    reply, out = answer(backend, d, chunk_stream("result", b"SHL1garbage"))
    assert not reply.accepted and "malformed" in reply.reason
    assert isinstance(out, Failure) and out.kind.value == "rejected" and "malformed" in out.reason
    huge = pb.Chunk(kind="result", index=0, count=1 << 20, total_bytes=1 << 40, data=b"x")
    reply, out = answer(backend, d, iter([huge]))
    assert not reply.accepted and "exceeds the limit" in reply.reason and out.kind.value == "rejected"
    # and an honest round still works
    threading.Thread(target=d.run, kwargs={"max_tasks": 1}, daemon=True).start()
    (out,) = backend.train([TrainTask(1, "0", shoal.params.from_module(small_mlp())[0], 7)])
    assert isinstance(out, TrainResult)


def test_a_silent_device_costs_a_timeout_not_a_hang(certs, fed_digits, small_mlp):
    backend = GrpcBackend(round_timeout_s=1.0, policy=EligibilityPolicy())
    address = f"127.0.0.1:{free_port()}"
    server = start_server(
        backend, address, TLSFiles(certs / "server.pem", certs / "server.key", certs / "ca.pem")
    )
    try:
        d = device(certs, address, "0", fed_digits, small_mlp)
        d.join()  # joins, then never asks for work
        start = time.monotonic()
        (out,) = backend.train([TrainTask(1, "0", np.zeros(4, np.float32), 1)])
        assert out.kind.value == "timeout" and time.monotonic() - start < 3
    finally:
        backend.close()
        server.stop(grace=None)


def test_the_server_will_not_start_in_plaintext_by_accident():
    with pytest.raises(ConfigError, match="needs TLS"):
        start_server(GrpcBackend(), "127.0.0.1:0", None)


def test_per_device_tokens(certs, fed_digits, small_mlp):
    import hashlib

    backend = GrpcBackend(tokens={"0": hashlib.sha256(b"s3cret").hexdigest()})
    address = f"127.0.0.1:{free_port()}"
    server_tls = TLSFiles(certs / "server.pem", certs / "server.key")  # no client certificates: tokens
    server = start_server(backend, address, server_tls)
    try:
        tls = ClientTLS(certs / "ca.pem")
        Device(address, "0", HP.build(small_mlp), fed_digits["0"], tls=tls, token="s3cret").join()
        for cid, token in (("0", "guess"), ("1", "s3cret"), ("0", None)):
            with pytest.raises(grpc.RpcError) as err:
                Device(address, cid, HP.build(small_mlp), fed_digits[cid], tls=tls, token=token).join()
            assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert backend.available() == ["0"]
    finally:
        server.stop(grace=None)


def test_over_selection_commits_with_the_first_answers(certs, fed_digits, small_mlp, tmp_path):
    from shoal.net.registry import Registry

    registry = Registry(tmp_path / "server.sqlite")
    backend = GrpcBackend(round_timeout_s=30, commit_fraction=0.5, registry=registry)
    address = f"127.0.0.1:{free_port()}"
    server = start_server(
        backend, address, TLSFiles(certs / "server.pem", certs / "server.key", certs / "ca.pem")
    )
    try:
        fast = [device(certs, address, c, fed_digits, small_mlp) for c in ("0", "1")]
        slow = [device(certs, address, c, fed_digits, small_mlp) for c in ("2", "3")]
        for d in fast + slow:
            d.join()  # the slow two join but never ask for work
        for d in fast:
            threading.Thread(target=d.run, kwargs={"max_tasks": 1}, daemon=True).start()
        params = shoal.params.from_module(small_mlp())[0]
        start = time.monotonic()
        out = backend.train([TrainTask(1, c, params, 9) for c in "0123"])
        assert time.monotonic() - start < 15  # far below the 30 s deadline
        assert [type(o).__name__ for o in out] == ["TrainResult", "TrainResult", "Failure", "Failure"]
        assert "over-selection" in out[2].reason
        assert sorted(registry.devices()) == ["0", "1", "2", "3"]
        registry.round_finished({"round": 1, "aborted": False, "clients_completed": 2})
        assert registry.rounds() == [(1, False, 2)]
    finally:
        backend.close()
        server.stop(grace=None)
        registry.close()


def test_fuzzed_and_type_confused_uploads_never_hurt_the_server(served, certs, fed_digits, small_mlp):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from shoal.messages import EvalTask

    backend, address = served
    d = device(certs, address, "0", fed_digits, small_mlp)
    d.join()

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.binary(max_size=2048), st.integers(0, 5000))
    def upload(blob, announced):
        first = pb.Chunk(kind="result", index=0, count=1, total_bytes=announced, data=blob)
        reply, out = answer(backend, d, iter([first]))
        assert not reply.accepted and reply.reason and out.kind.value == "rejected"

    upload()
    params = np.zeros(4, np.float32)
    for wrong in (TrainTask(1, "0", params, 1), EvalTask(1, "0", params)):  # tasks are not results
        reply, out = answer(backend, d, chunk_stream("result", encode(wrong)))
        assert not reply.accepted and out.kind.value == "rejected"
    threading.Thread(target=d.run, kwargs={"max_tasks": 1}, daemon=True).start()
    (out,) = backend.train([TrainTask(1, "0", shoal.params.from_module(small_mlp())[0], 3)])
    assert isinstance(out, TrainResult)  # and the server still serves an honest round


def top_k():
    from shoal.transforms import TopK

    return [TopK(0.05)]


@pytest.mark.parametrize(
    ("strategy", "transforms", "downlink"),
    [
        (lambda: shoal.Scaffold(clients_per_round=3), list, None),  # SCAFFOLD's c_i
        (lambda: shoal.FedAvg(clients_per_round=3), top_k, "quantize"),  # residuals; compressed both ways
    ],
    ids=["scaffold", "top-k-error-feedback"],
)
def test_client_state_lives_on_devices_and_survives_their_restart(
    served, certs, fed_digits, small_mlp, tmp_path, strategy, transforms, downlink
):
    backend, address = served
    ids = ["0", "1", "2"]
    data = shoal.data.FederatedDataset(
        "three", {c: fed_digits[c] for c in ids}, 10, fed_digits.input_shape, fed_digits.test
    )

    def start_devices():
        devs = [
            device(certs, address, c, data, small_mlp, transforms=transforms(),
                   state_file=tmp_path / f"{c}.safetensors")
            for c in ids
        ]  # fmt: skip
        threads = [threading.Thread(target=d.run, kwargs={"max_tasks": 2}, daemon=True) for d in devs]
        for t in threads:
            t.start()
        return threads

    first = start_devices()
    backend.wait_for_clients(3, 20)
    run = dict(seed=1, transforms=transforms(), downlink=downlink)
    sim = shoal.Simulation(small_mlp, data, strategy(), HP, backend=backend, **run)
    sim.step(4), sim.step(4)
    for t in first:  # the devices finish and go away; new ones pick up their state from disk
        t.join(timeout=20)
    assert all((tmp_path / f"{c}.safetensors").is_file() for c in ids)
    start_devices()
    sim.step(4), sim.step(4)
    local = shoal.simulate(small_mlp, data, strategy(), HP, rounds=4, **{**run, "transforms": transforms()})
    assert shoal.model_hash(sim.params) == local.model_hash
    if downlink is not None:
        assert sim.records[-1]["bytes_up"] < 3 * (0.1 * 4 * sim.spec.num_params + 1024)  # sparse uploads
        assert sim.records[-1]["bytes_down"] < 3 * (sim.spec.num_params + 1024)  # 8-bit models


def test_models_larger_than_grpc_messages_cross_in_chunks(served, certs, fed_digits):
    backend, address = served
    big = lambda: shoal.models.mlp((1, 8, 8), 10, (20_000,))  # noqa: E731  1.5M parameters, 5.9 MB
    params = shoal.params.from_module(big())[0]
    assert params.nbytes > 4 * 2**20
    d = Device(address, "0", TorchTrainer(local_steps=1, batch_size=8).build(big), fed_digits["0"],
               tls=ClientTLS(certs / "ca.pem", certs / "client-0.pem", certs / "client-0.key"))  # fmt: skip
    d.join()
    threading.Thread(target=d.run, kwargs={"max_tasks": 1}, daemon=True).start()
    (out,) = backend.train([TrainTask(1, "0", params, 2)])
    assert isinstance(out, TrainResult) and out.payload["delta"].shape == params.shape


def test_secure_aggregation_over_the_network(served, certs, fed_digits, small_mlp):
    from shoal.net.backend import NetworkChannel
    from shoal.secagg import SecureAggregation
    from shoal.strategy import mean

    backend, address = served
    ids = ["0", "1", "2", "3"]
    data = shoal.data.FederatedDataset(
        "four", {c: fed_digits[c] for c in ids}, 10, fed_digits.input_shape, fed_digits.test
    )
    devices = [
        device(certs, address, c, data, small_mlp, transforms=[SecureAggregation(bound=4.0)]) for c in ids
    ]
    threads = [threading.Thread(target=d.run, daemon=True) for d in devices]
    for t in threads:
        t.start()
    backend.wait_for_clients(4, 20)
    on_server = SecureAggregation(bound=4.0, channel=NetworkChannel(backend, timeout_s=10))
    sim = shoal.Simulation(small_mlp, data, shoal.FedAvg(clients_per_round=4, aggregator=mean), HP,
                           backend=backend, seed=2, transforms=[on_server])  # fmt: skip
    networked = sim.run(2)
    for t in threads:
        t.join(timeout=20)
    assert all(r["clients_completed"] == 4 and not r["aborted"] for r in networked.records)
    plain = shoal.simulate(
        small_mlp, data, shoal.FedAvg(clients_per_round=4, aggregator=mean), HP, rounds=2, seed=2
    )
    np.testing.assert_allclose(networked.params, plain.params, atol=1e-5)


def test_the_service_implements_every_rpc_the_generated_base_leaves_unimplemented():
    from shoal.net.proto import shoal_pb2, shoal_pb2_grpc
    from shoal.net.server import Coordinator

    rpcs = shoal_pb2.DESCRIPTOR.services_by_name["Coordinator"].methods_by_name
    for name in rpcs:  # the generated servicer raises NotImplementedError for each of these
        assert getattr(Coordinator, name) is not getattr(shoal_pb2_grpc.CoordinatorServicer, name), name


def test_a_device_never_imports_the_server():
    import subprocess
    import sys

    probe = "import sys, shoal.cli.client, shoal.net.client; print(sorted(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert "'shoal.net.client'" in loaded.stdout
    for server_side in ("shoal.net.server", "shoal.net.backend", "shoal.net.run", "shoal.net.registry"):
        assert f"'{server_side}'" not in loaded.stdout, server_side


def test_the_server_checks_vectors_at_upload_unless_a_transform_rewrites_them():
    from shoal import config as cfgmod
    from shoal.net.run import upload_rules
    from shoal.privacy import CentralDP, LocalDP
    from shoal.secagg import SecureAggregation
    from shoal.transforms.half_precision import HalfPrecision

    cfg = cfgmod.from_dict({"strategy": {"name": "scaffold", "max_num_examples": 50}})
    strategy = cfg.strategy.build()
    rules = upload_rules(cfg, strategy, [], [10, 20], 100)
    assert rules.check_payload and rules.payload_keys == ("delta", "control_delta")
    assert rules.limits.max_num_examples == 50 and rules.num_params == 100
    dp = [CentralDP(noise_multiplier=1.0), LocalDP(clip_norm=1.0, noise_multiplier=1.0)]
    assert upload_rules(cfg, strategy, dp, [10], 100).check_payload
    for rewrites in (HalfPrecision(), SecureAggregation(bound=4.0)):
        assert not upload_rules(cfg, strategy, [*dp, rewrites], [10], 100).check_payload
