"""A device: joins a shoal server, trains the tasks it is given, sends the results back.

The same :class:`~shoal.client.ClientApp` and update transforms as in simulation run
here, through :func:`~shoal.client.run_train`, so a model trained over the network equals
the simulated one for the same seed. The device keeps its own client state (SCAFFOLD's
control variate) across rounds. Every call has a deadline; a lost connection is retried
with exponential backoff and jitter, so a restarted server finds its devices again.

A device never dies of its own work: diverged training (a non-finite loss or update), an
exception in the app, a transform or the protocol half, or a result the wire cannot carry
is reported to the server as a ``Failure(error)`` with the reason, and the device goes on
serving. It identifies itself in each call's metadata and never imports the server.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from shoal import config as cfgmod
from shoal import experiment
from shoal.client import ClientApp, run_evaluate, run_train
from shoal.client.state import ClientStateStore
from shoal.data.datasets import ClientData, FederatedDataset, ServerData
from shoal.errors import ConfigError, WireFormatError
from shoal.messages import EvalTask, Failure, FailureKind, Message, TrainResult, TrainTask, decode, encode
from shoal.net.auth import ID_HEADER, TOKEN_HEADER, check_client_id
from shoal.net.chunks import MAX_CHUNK_MESSAGE, ChunkReader, chunk_stream
from shoal.net.proto import shoal_pb2 as pb
from shoal.net.proto import shoal_pb2_grpc as rpc
from shoal.net.tls import ClientTLS
from shoal.net.uploads import secagg_answer_bytes, train_result_bytes
from shoal.params import ParamSpec
from shoal.secagg import SecAggClient, SecureAggregation
from shoal.transforms.base import UpdateTransform

log = logging.getLogger("shoal.client")

__all__ = ["ClientTLS", "Device", "DeviceState", "device_for"]

MAX_REASON = 2000  # characters of a failure's reason sent to the server


@dataclass
class DeviceState:
    charging: bool = True
    unmetered: bool = True
    idle: bool = True
    battery: float = 1.0

    def message(self) -> pb.DeviceState:
        return pb.DeviceState(
            charging=self.charging, unmetered=self.unmetered, idle=self.idle, battery=self.battery
        )


def diverged(result: TrainResult) -> str | None:
    """Why a result of training is not worth sending (a non-finite metric or vector)."""
    for name, value in result.metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            return f"training diverged: metric {name!r} is {value}"
    for key, array in result.payload.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            return f"training diverged: {key!r} holds non-finite values"
    return None


class Device:
    def __init__(
        self,
        address: str,
        client_id: str,
        app: ClientApp,
        data: ClientData,
        *,
        transforms: Sequence[UpdateTransform] = (),
        run_seed: int = 0,
        tls: ClientTLS | None = None,
        token: str | None = None,
        state: DeviceState | None = None,
        call_timeout_s: float = 60.0,
        model_digest: str = "",  # ParamSpec.digest() of the local model; checked against the server's
        state_file: Path | None = None,  # where this device keeps its client state across restarts
        max_task_bytes: int = 1 << 30,  # the largest task this device accepts from the server
    ) -> None:
        self.client_id = check_client_id(client_id)
        self.model_digest, self.state_file = model_digest, state_file
        self.app, self.data = app, data
        self.transforms, self.run_seed = list(transforms), run_seed
        self.state = state or DeviceState()
        self.call_timeout_s, self.max_task_bytes = call_timeout_s, max_task_bytes
        self.metadata: tuple[tuple[str, str], ...] = ((ID_HEADER, client_id),)
        if token:
            self.metadata += ((TOKEN_HEADER, token),)
        opts = [
            ("grpc.max_receive_message_length", MAX_CHUNK_MESSAGE),
            ("grpc.max_send_message_length", MAX_CHUNK_MESSAGE),
        ]
        if tls is None:
            self.channel = grpc.insecure_channel(address, options=opts)
        else:
            self.channel = grpc.secure_channel(address, tls.credentials(), options=opts)
        self.stub = rpc.CoordinatorStub(self.channel)
        self.client_states = ClientStateStore()  # this device's own state, across rounds
        if state_file is not None:
            self.client_states.load(state_file, client_id)
        self.tasks_done = 0

    def join(self) -> pb.JoinReply:
        request = pb.JoinRequest(state=self.state.message())
        reply: pb.JoinReply = self.stub.Join(request, timeout=self.call_timeout_s, metadata=self.metadata)
        if self.model_digest and reply.model_hash and reply.model_hash != self.model_digest:
            raise ConfigError(
                f"the server trains a different model (layout {reply.model_hash}, ours {self.model_digest}); "
                "use the server's config"
            )
        return reply

    def _fetch(self, wait_ms: int) -> TrainTask | EvalTask | bytes | str:
        """The next task, a secure-aggregation message (bytes), or "none" / "done"."""
        stream = self.stub.GetTask(
            pb.TaskRequest(wait_ms=wait_ms),
            timeout=self.call_timeout_s + wait_ms / 1000,
            metadata=self.metadata,
        )
        reader = ChunkReader({"task", "secagg"}, self.max_task_bytes)
        try:
            for chunk in stream:
                if chunk.kind in ("none", "done") and chunk.index == 0 and not reader.count:
                    return str(chunk.kind)
                reader.add(chunk)
            payload = reader.payload()
            if reader.kind == "secagg":
                return bytes(payload)
            task = decode(payload, max_bytes=self.max_task_bytes)
        except WireFormatError as exc:  # a broken stream costs this task, not the device
            log.warning("the server sent a task this device cannot read: %s", exc)
            return "none"
        if isinstance(task, TrainTask | EvalTask) and task.client_id == self.client_id:
            return task
        log.warning("the server sent something other than a task for this device; ignored")
        return "none"

    def _put(self, payload: bytes, kind: str = "result") -> pb.PutReply:
        reply: pb.PutReply = self.stub.PutResult(
            chunk_stream(kind, payload), timeout=self.call_timeout_s, metadata=self.metadata
        )
        return reply

    def _answer(self, task: TrainTask | EvalTask, work: Callable[[], Message]) -> tuple[Message, bytes]:
        """What to send for ``task``: the work's outcome, or a Failure that says why not."""
        try:
            outcome = work()
            reason = diverged(outcome) if isinstance(outcome, TrainResult) else None
            if reason is None:
                return outcome, encode(outcome)
        except Exception as exc:  # a device must never die of its own training
            reason = f"{type(exc).__name__}: {exc}"
        log.warning("round %d: sending a failure: %s", task.round, reason)
        failure = Failure(task.round, self.client_id, FailureKind.ERROR, reason[:MAX_REASON])
        return failure, encode(failure)

    def step(self, wait_ms: int = 5000) -> str:
        """Ask for one task and answer it; returns "trained", "evaluated", "failed",
        "protocol", "none" or "done"."""
        task = self._fetch(wait_ms)
        if isinstance(task, str):
            return task
        if isinstance(task, bytes):  # a secure-aggregation stage: this device's protocol half answers
            try:
                answer = self._secagg_half().handle(task)
            except Exception as exc:
                log.warning("secure aggregation message refused: %s", exc)
                answer = b""  # the server counts us out of this round
            self._put(answer, "secagg")
            return "protocol"
        state = self.client_states.get(self.client_id)
        if isinstance(task, TrainTask):
            train_task = task
            outcome, payload = self._answer(
                task,
                lambda: run_train(self.app, train_task, self.data, self.transforms, self.run_seed, state),
            )
        else:
            eval_task = task
            outcome, payload = self._answer(task, lambda: run_evaluate(self.app, eval_task, self.data, state))
        reply = self._put(payload)
        if reply.accepted and isinstance(outcome, TrainResult):  # kept only if the server took it
            self.client_states.put(self.client_id, state)
            if self.state_file is not None:
                self.client_states.save(self.state_file, self.client_id)
        if not reply.accepted:
            log.warning("server refused our answer for round %d: %s", task.round, reply.reason)
        self.tasks_done += 1
        if isinstance(outcome, Failure):
            return "failed"
        return "trained" if isinstance(task, TrainTask) else "evaluated"

    def _secagg_half(self) -> SecAggClient:
        for t in self.transforms:
            if isinstance(t, SecureAggregation):
                halves: dict[str, SecAggClient] = t.channel.devices
                if self.client_id not in halves:
                    halves[self.client_id] = SecAggClient()
                return halves[self.client_id]
        raise ValueError("the server runs secure aggregation but this device was not configured for it")

    def run(self, max_tasks: int | None = None, give_up_s: float = 600.0) -> int:
        """Serve tasks until the server says the run is done (or ``max_tasks``); reconnect
        with backoff, giving up after ``give_up_s`` without contact. Returns tasks done."""
        backoff, last_contact, joined = 0.2, time.monotonic(), False
        while max_tasks is None or self.tasks_done < max_tasks:
            try:
                if not joined:
                    self.join()
                    joined = True
                if self.step() == "done":
                    break
                backoff, last_contact = 0.2, time.monotonic()
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    raise ConfigError(
                        f"the server refused this device: {exc.details() if hasattr(exc, 'details') else exc}"
                    ) from None
                if code is grpc.StatusCode.FAILED_PRECONDITION:
                    joined = False  # the server restarted and forgot us: join again
                if time.monotonic() - last_contact > give_up_s:
                    raise ConnectionError(f"no contact with the server for {give_up_s:g} s") from None
                time.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 10.0)
        self.channel.close()
        return self.tasks_done


def refuse_unsupported(cfg: cfgmod.RunConfig) -> None:
    """What the network cannot run yet, refused alike by the server and its devices."""
    if cfg.he.enabled and cfg.he.keyholder is None:
        raise ConfigError(
            "homomorphic aggregation over the network needs the key holder as its own party: start "
            "`shoal keyholder --config FILE --out KEYDIR`, then set he.keyholder = 'HOST:PORT' and "
            "he.public_key = 'KEYDIR/public.ckks' (a copy on the server and on every device)"
        )
    if cfg.strategy.straggler_fraction > 0:
        # Simulated stragglers would train on real devices, which keep their new state once
        # the server accepts the upload, and then be dropped: SCAFFOLD's c would drift.
        raise ConfigError(
            "strategy.straggler_fraction simulates slow devices; real devices are slow on their "
            "own and the round deadline (--round-timeout) drops them: set straggler_fraction = 0"
        )


MAX_DEPLOYED_COHORT = 10_000  # peers a deployed device's secure-aggregation messages may name


def device_for(
    cfg: cfgmod.RunConfig,
    client_id: str,
    address: str,
    tls: ClientTLS | None,
    token: str | None = None,
    data: ClientData | None = None,
    state_dir: Path | None = None,
) -> Device:
    """A device for ``client_id`` training on ``data``, its own (a deployment: the model's
    shapes come from the config, see :func:`shoal.experiment.device_data`); or, when
    ``data`` is None, on its shard of the config's dataset cut into clients (an experiment)."""
    refuse_unsupported(cfg)
    check_client_id(client_id)
    view: FederatedDataset | ServerData
    if data is None:
        view = experiment.load_data(cfg)
        if client_id not in view.clients:
            raise ConfigError(
                f"client {client_id!r} is not in this config's data ({len(view)} clients); an "
                "experiment's devices are its client ids: 0..num_clients-1"
            )
        data, cohort = view[client_id], len(view)
    else:
        view, cohort = experiment.server_data(cfg, load_test=False), MAX_DEPLOYED_COHORT
    model = experiment.model_factory(cfg, view)
    transforms = experiment.build_transforms(cfg, experiment.population(view), model)
    spec = ParamSpec.from_module(model())
    # a task carries the model and at most one more vector of its size (SCAFFOLD's control);
    # a secure-aggregation message, a share or key per peer
    biggest = 2 * train_result_bytes(spec.num_params, ("params",)) + secagg_answer_bytes(cohort)
    return Device(
        address,
        client_id,
        experiment.app_builder(cfg).build(model),
        data,
        transforms=transforms,
        run_seed=cfg.seed,
        tls=tls,
        token=token,
        model_digest=spec.digest(),
        state_file=state_dir / f"client-{client_id}.state.safetensors" if state_dir else None,
        max_task_bytes=biggest,
    )
