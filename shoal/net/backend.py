"""The round loop's face of the network: a Backend whose clients are remote devices.

:class:`GrpcBackend` is what the round loop talks to, exactly like the in-process or Ray
backends: ``train(tasks)`` queues each task for its device, waits until every device has
answered or the round's deadline passes, and returns results and ``Failure(timeout)``s.
The gRPC service (:mod:`shoal.net.server`) is its other face and runs on its own thread
and event loop; the two meet only here, in a book of devices and pending tasks under one
lock. A task handed over by the loop thread wakes the device's waiting long poll through
``loop.call_soon_threadsafe``; an answer wakes the loop thread through a Condition. No
thread is ever held per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shoal.errors import ConfigError, WireFormatError
from shoal.fleet.policy import EligibilityPolicy
from shoal.messages import EvalResult, EvalTask, Failure, FailureKind, TrainResult, TrainTask, decode
from shoal.net.auth import Authenticator, printable
from shoal.net.proto import shoal_pb2 as pb
from shoal.net.registry import Registry
from shoal.net.uploads import (
    OVERHEAD_BYTES,
    UploadRules,
    refusal,
    secagg_answer_bytes,
    train_result_bytes,
)
from shoal.runtime.backend import Backend

log = logging.getLogger("shoal.server")


DEFAULT_POLICY = EligibilityPolicy()


@dataclass
class _Device:
    state: pb.DeviceState
    last_seen: float


@dataclass(eq=False)
class Pending:
    """One outstanding task (or secure-aggregation message, as bytes) of one device."""

    task: TrainTask | EvalTask | bytes
    limit: int  # bytes its answer may take
    sent: bool = False
    receiving: bool = False  # an upload for it is under way: a second one is refused
    outcome: TrainResult | EvalResult | Failure | bytes | None = None
    parked: float = 0.0  # time.monotonic() when the task was handed to the device's queue
    arrived: float = 0.0  # ... and when its outcome came

    @property
    def kind(self) -> str:
        return "secagg" if isinstance(self.task, bytes) else "result"


@dataclass
class NetworkChannel:
    """Secure aggregation's channel over the network: each call is one message to a device
    through :meth:`GrpcBackend.exchange`. Devices hold their own protocol halves."""

    backend: GrpcBackend
    timeout_s: float = 30.0

    def open_round(self, client_ids: Sequence[str]) -> None:
        pass  # every device makes its own keys when the setup message reaches it

    def gone(self, client_id: str, stage: Any) -> bool:
        return False

    def call(self, client_id: str, message: bytes) -> bytes | None:
        return self.backend.exchange(client_id, message, self.timeout_s)


class GrpcBackend(Backend):
    """A Backend whose clients are remote devices, served by :func:`~shoal.net.server.start_server`."""

    def __init__(
        self,
        *,
        round_timeout_s: float = 60.0,
        policy: EligibilityPolicy = DEFAULT_POLICY,
        tokens: Mapping[str, str] | None = None,  # client id -> sha256 hex of its token
        expected_clients: Iterable[str] | None = None,  # None: any authenticated client
        # None: check claims and sizes, not the vectors, which transforms may have rewritten
        # on the device (the round loop checks those after the server halves)
        rules: UploadRules | None = None,
        model_hash: str = "",
        run_id: str = "",
        registry: Registry | None = None,
        commit_fraction: float = 1.0,  # a round returns once this share of its tasks answered
        buffer_size: int | None = None,  # FedBuff: a round returns the next K results, whenever sent
        call_timeout_s: float | None = None,  # the server's deadline on any one call (default: a round's)
        calls_per_peer: int = 4,
    ) -> None:
        if not 0 < commit_fraction <= 1:
            raise ConfigError(f"commit_fraction must be in (0, 1], got {commit_fraction}")
        if round_timeout_s <= 0:
            raise ConfigError(f"round_timeout_s must be > 0, got {round_timeout_s}")
        enrolled = frozenset(expected_clients) if expected_clients is not None else None
        self.auth = Authenticator(dict(tokens) if tokens is not None else None, enrolled)
        self.registry, self.commit_fraction, self.buffer_size = registry, commit_fraction, buffer_size
        self.round_timeout_s, self.policy = round_timeout_s, policy
        self.rules = rules or UploadRules(check_payload=False)
        self.call_timeout_s = call_timeout_s if call_timeout_s is not None else max(round_timeout_s, 5.0)
        self.calls_per_peer = calls_per_peer
        self.model_hash, self.run_id = model_hash, run_id
        self._population = len(enrolled) if enrolled is not None else None
        self._train_bytes: dict[int, int] = {}  # num_params -> limit of a train result
        self._devices: dict[str, _Device] = {}
        self._pending: dict[str, Pending] = {}  # client id -> its one outstanding task
        self._told: set[str] = set()  # devices told the run is over
        self._cond = threading.Condition()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakers: dict[str, asyncio.Event] = {}  # touched on the server's loop only

    # -- the Backend face (the round loop's thread) --------------------------------------------
    def available(self) -> list[str]:
        """Devices that joined, are eligible by policy and heartbeat recently, in id order."""
        now = time.monotonic()
        with self._cond:
            return sorted(
                cid
                for cid, d in self._devices.items()
                if cid not in self._pending  # still busy with an earlier task (FedBuff)
                and now - d.last_seen <= self.policy.heartbeat_timeout_s
                and self.policy.eligible(d.state.charging, d.state.unmetered, d.state.idle, d.state.battery)
            )

    def wait_for_clients(self, count: int, timeout_s: float) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while len(self.available()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.available()

    def _limit(self, task: TrainTask | EvalTask | bytes) -> int:
        if isinstance(task, bytes):
            return secagg_answer_bytes(self._population or len(self._devices))
        if isinstance(task, EvalTask):
            return OVERHEAD_BYTES
        n = self.rules.params_of(task)
        if n not in self._train_bytes:
            self._train_bytes[n] = train_result_bytes(n, self.rules.payload_keys, self.rules.payload_bytes)
        return self._train_bytes[n]

    def _dispatch(self, tasks: Sequence[TrainTask | EvalTask]) -> list[Any]:
        with self._cond:
            for t in tasks:
                self._pending[t.client_id] = Pending(t, self._limit(t))
            self._cond.notify_all()
            self._wake([t.client_id for t in tasks])
            deadline = time.monotonic() + self.round_timeout_s
            enough = math.ceil(self.commit_fraction * len(tasks))  # over-selection: the first m answers
            while not self._closed and not self._settled([self._pending[t.client_id] for t in tasks], enough):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(timeout=min(left, 0.5))
            in_time = time.monotonic() < deadline and not self._closed
            out: list[Any] = []
            for t in tasks:
                p = self._pending.pop(t.client_id)
                if p.outcome is not None:
                    out.append(p.outcome)
                    continue
                if in_time:
                    why = "not needed: enough devices answered first (over-selection)"
                else:
                    why = (
                        "never fetched its task" if not p.sent else "did not answer"
                    ) + f" in {self.round_timeout_s:g} s"
                out.append(Failure(t.round, t.client_id, FailureKind.TIMEOUT, why))
            return out

    @staticmethod
    def _settled(pending: list[Pending], enough: int) -> bool:
        """Every task has an outcome, or ``enough`` have a result. Failures do not count
        toward ``enough``: a peer that answers junk at once must not end an over-selected
        round before the honest devices have answered."""
        if all(p.outcome is not None for p in pending):
            return True
        return sum(isinstance(p.outcome, TrainResult | EvalResult) for p in pending) >= enough

    def exchange(self, client_id: str, message: bytes, timeout_s: float) -> bytes | None:
        """Deliver one protocol message to a device and wait for its answer (secure
        aggregation's key and unmasking stages); None if it does not answer in time."""
        with self._cond:
            if client_id in self._pending or client_id not in self._devices:
                return None
            self._pending[client_id] = p = Pending(message, self._limit(message))
            self._wake([client_id])
            deadline = time.monotonic() + timeout_s
            while p.outcome is None and not self._closed and time.monotonic() < deadline:
                self._cond.wait(timeout=min(deadline - time.monotonic(), 0.5))
            self._pending.pop(client_id, None)
            return p.outcome if isinstance(p.outcome, bytes) else None

    def train(self, tasks: Sequence[TrainTask]) -> list[TrainResult | Failure]:
        if self.buffer_size is None:
            return self._dispatch(tasks)
        return self._buffer(tasks, self.buffer_size)

    def _buffer(self, tasks: Sequence[TrainTask], k: int) -> list[TrainResult | Failure]:
        """FedBuff on the wall clock: park ``tasks`` beside those still out from earlier
        rounds and return outcomes in the order they came, up to the ``k``-th result; a
        task unanswered ``round_timeout_s`` after it was parked times out."""
        with self._cond:
            now = time.monotonic()
            for t in tasks:
                self._pending[t.client_id] = Pending(t, self._limit(t), parked=now)
            self._cond.notify_all()
            self._wake([t.client_id for t in tasks])
            while True:
                now = time.monotonic()
                training = [(c, p) for c, p in self._pending.items() if isinstance(p.task, TrainTask)]
                for c, p in training:
                    if p.outcome is None and now - p.parked > self.round_timeout_s:
                        why = ("never fetched its task" if not p.sent else "did not answer") + (
                            f" in {self.round_timeout_s:g} s"
                        )
                        assert isinstance(p.task, TrainTask)
                        p.outcome, p.arrived = Failure(p.task.round, c, FailureKind.TIMEOUT, why), now
                came = sum(isinstance(p.outcome, TrainResult) for _, p in training)
                if self._closed or came >= k or all(p.outcome is not None for _, p in training):
                    break
                self._cond.wait(timeout=0.5)
            out: list[TrainResult | Failure] = []
            results = 0
            for c, p in sorted(
                ((c, p) for c, p in training if p.outcome is not None), key=lambda cp: cp[1].arrived
            ):
                if results >= k:
                    break  # the rest wait for the next step, in the order they came
                assert isinstance(p.outcome, TrainResult | Failure)
                out.append(p.outcome)
                results += isinstance(p.outcome, TrainResult)
                del self._pending[c]
            return out

    def in_flight(self) -> dict[str, int]:
        with self._cond:
            return {c: p.task.round for c, p in self._pending.items() if isinstance(p.task, TrainTask)}

    def evaluate(self, tasks: Sequence[EvalTask]) -> list[EvalResult | Failure]:
        return self._dispatch(tasks)

    def close(self) -> None:
        """End the run: every device that asks for work from now on is told it is done."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._wake(None)

    def wait_until_told(self, timeout_s: float) -> None:
        """After :meth:`close`, give devices (some may be in backoff) time to hear "done"."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._cond:
                if set(self._devices) <= self._told:
                    return
            time.sleep(0.1)

    def state_dict(self) -> dict[str, Any]:
        return {}  # devices keep their own state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    # -- waking long polls across threads ------------------------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The server's event loop, where waiting long polls live."""
        self._loop = loop

    def _wake(self, client_ids: list[str] | None) -> None:
        """Wake these devices' long polls (None: all); safe from any thread."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the server's loop has ended: nobody waits
                self._loop.call_soon_threadsafe(self._wake_now, client_ids)

    def _wake_now(self, client_ids: list[str] | None) -> None:
        for cid in self._wakers if client_ids is None else client_ids:
            if cid in self._wakers:
                self._wakers[cid].set()

    def waker(self, client_id: str) -> asyncio.Event:
        """The event a device's long poll waits on (the server's loop only)."""
        return self._wakers.setdefault(client_id, asyncio.Event())

    # -- the service's face (the server's event loop) ------------------------------------------
    def join(self, client_id: str, state: pb.DeviceState) -> None:
        with self._cond:
            self._devices[client_id] = _Device(state, time.monotonic())

    def heartbeat(self, client_id: str, state: pb.DeviceState | None = None) -> bool:
        """Note the device is alive (and its state, if given); False if it never joined."""
        with self._cond:
            device = self._devices.get(client_id)
            if device is None:
                return False
            device.last_seen = time.monotonic()
            if state is not None:
                device.state = state
            return True

    def take(self, client_id: str) -> tuple[str, TrainTask | EvalTask | bytes | None] | None:
        """("done", None) once the run is over, ("task"/"secagg", it) for work not yet sent,
        None while there is nothing for this device."""
        with self._cond:
            if self._closed:
                self._told.add(client_id)
                return "done", None
            p = self._pending.get(client_id)
            if p is None or p.sent:
                return None
            p.sent = True
            return ("secagg" if isinstance(p.task, bytes) else "task"), p.task

    def open_upload(self, client_id: str) -> Pending | str:
        """The task an upload from this device may answer, or why there is none. Called
        before a single byte of the upload is read."""
        with self._cond:
            p = self._pending.get(client_id)
            if p is None or not p.sent or p.outcome is not None:
                return "no outstanding task or protocol message for this client"
            if p.receiving:
                return "an upload for this task is already under way"
            p.receiving = True
            return p

    def end_upload(self, p: Pending) -> None:
        with self._cond:
            p.receiving = False

    def refuse(self, client_id: str, p: Pending, reason: str) -> pb.PutReply:
        """Count a broken upload as this device's rejected answer for the round."""
        round = p.task.round if not isinstance(p.task, bytes) else 0
        self._settle(client_id, p, Failure(round, client_id, FailureKind.REJECTED, reason))
        log.warning("refused the upload of client %s: %s", client_id, printable(reason))
        return pb.PutReply(accepted=False, reason=reason)

    def deliver(self, client_id: str, p: Pending, payload: bytes | bytearray) -> pb.PutReply:
        """Decode and judge a complete upload, then hand it to the waiting round. Runs on a
        worker thread: decoding and checking a large model must not stall the event loop."""
        if isinstance(p.task, bytes):  # the protocol validates its own messages
            return self._settle(client_id, p, bytes(payload))
        try:
            message = decode(payload, max_bytes=p.limit)
        except WireFormatError as exc:
            return self.refuse(client_id, p, f"malformed result: {exc}")
        reason = refusal(p.task, message, client_id, self.rules)
        if reason is not None or not isinstance(message, TrainResult | EvalResult | Failure):
            return self.refuse(client_id, p, reason or "the upload does not answer this client's task")
        return self._settle(client_id, p, message)

    def _settle(
        self, client_id: str, p: Pending, outcome: TrainResult | EvalResult | Failure | bytes
    ) -> pb.PutReply:
        with self._cond:
            if self._pending.get(client_id) is not p:
                return pb.PutReply(accepted=False, reason="the round ended before the upload was complete")
            p.outcome, p.arrived = outcome, time.monotonic()
            if client_id in self._devices:
                self._devices[client_id].last_seen = time.monotonic()
            self._cond.notify_all()
        if isinstance(outcome, Failure) and outcome.kind is FailureKind.REJECTED:
            return pb.PutReply(accepted=False, reason=outcome.reason)
        return pb.PutReply(accepted=True)
