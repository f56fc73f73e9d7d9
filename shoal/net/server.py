"""The gRPC service devices call, served on an event loop (``grpc.aio``) of its own thread.

Every call goes the same way: the caller is identified from the call's metadata (or its
certificate) before any message is read, and refused at once if it does not authenticate;
it takes one of its peer's few slots (:class:`~shoal.net.auth.PeerLimiter`); and it runs
under the server's own deadline, whatever deadline the caller set. A waiting device costs
a suspended coroutine, not a thread, so the server holds thousands of long polls, and a
peer that opens many streams and sends nothing costs only its own slots.

An upload is checked against the device's outstanding task before its first chunk is
read, its size against a limit derived from the model on that first chunk, and every
chunk's place in the stream as it arrives (:mod:`shoal.net.chunks`); the decoded result is
judged against the task and the run's :class:`~shoal.runtime.validation.ResultLimits`
(:mod:`shoal.net.uploads`) and the device told at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from shoal.errors import ConfigError, WireFormatError
from shoal.messages import encode
from shoal.net.auth import PeerLimiter, Refused, printable
from shoal.net.backend import GrpcBackend
from shoal.net.chunks import MAX_CHUNK_MESSAGE, ChunkReader, chunk_stream
from shoal.net.proto import shoal_pb2 as pb
from shoal.net.proto import shoal_pb2_grpc as rpc
from shoal.net.tls import TLSFiles

log = logging.getLogger("shoal.server")
T = TypeVar("T")

MAX_POLL_S = 30.0  # the longest a long poll is held before "none, ask again"
HEARTBEAT_MS = 10_000


class Coordinator(rpc.CoordinatorServicer):  # type: ignore[misc]
    """The four RPCs, each authenticated, limited per peer and bounded in time."""

    def __init__(self, backend: GrpcBackend) -> None:
        self.backend = backend
        self.limiter = PeerLimiter(backend.calls_per_peer)

    async def _serve(self, context: grpc.aio.ServicerContext, body: Callable[[str], Awaitable[T]]) -> T:
        try:
            names = context.auth_context().get("x509_common_name")
            cid = self.backend.auth.identify(tuple(context.invocation_metadata() or ()), names)
            with self.limiter.slot(cid):
                async with asyncio.timeout(self.backend.call_timeout_s):
                    return await body(cid)
        except Refused as exc:
            # a flood of refused calls must not become a flood of log lines
            level = logging.DEBUG if exc.code is grpc.StatusCode.RESOURCE_EXHAUSTED else logging.WARNING
            log.log(level, "refused a call from %s: %s", context.peer(), printable(exc.reason))
            await context.abort(exc.code, exc.reason)
        except TimeoutError:
            limit = self.backend.call_timeout_s
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"the call ran past the server's {limit:g} s"
            )
        raise RuntimeError("context.abort returned")  # it raises; this keeps type checkers honest

    async def Join(self, request: pb.JoinRequest, context: grpc.aio.ServicerContext) -> pb.JoinReply:
        async def join(cid: str) -> pb.JoinReply:
            self.backend.join(cid, request.state)
            if self.backend.registry is not None:  # SQLite writes stay off the event loop
                await asyncio.to_thread(self.backend.registry.seen, cid, request.state, True)
            log.info("client %s joined from %s", cid, context.peer())
            b = self.backend
            return pb.JoinReply(run_id=b.run_id, model_hash=b.model_hash, heartbeat_ms=HEARTBEAT_MS)

        return await self._serve(context, join)

    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatReply:
        async def beat(cid: str) -> pb.HeartbeatReply:
            known = self.backend.heartbeat(cid, request.state)
            if known and self.backend.registry is not None:
                await asyncio.to_thread(self.backend.registry.seen, cid, request.state)
            return pb.HeartbeatReply(known=known)

        return await self._serve(context, beat)

    async def GetTask(self, request: pb.TaskRequest, context: grpc.aio.ServicerContext) -> None:
        async def send(cid: str) -> None:
            if not self.backend.heartbeat(cid):
                raise Refused(grpc.StatusCode.FAILED_PRECONDITION, "join first")
            got = await self._next(cid, request.wait_ms / 1000)
            if got is None or got[1] is None:
                kind = "none" if got is None else "done"
                await context.write(pb.Chunk(kind=kind, retry_after_ms=500))
                return
            kind, task = got
            payload = task if isinstance(task, bytes) else await asyncio.to_thread(encode, task)
            for chunk in chunk_stream(kind, payload):
                await context.write(chunk)

        await self._serve(context, send)

    async def _next(self, cid: str, wait_s: float) -> tuple[str, Any] | None:
        """Long poll: this device's next task, "done", or None once ``wait_s`` has passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait_s, MAX_POLL_S, self.backend.call_timeout_s / 2)
        waker = self.backend.waker(cid)
        while (got := self.backend.take(cid)) is None:
            left = deadline - loop.time()
            if left <= 0:
                return None
            # No await between take() and clear(): a wake-up from the round loop's thread is a
            # callback on this loop, so it runs after the clear and is never lost.
            waker.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waker.wait(), left)
        return got

    async def PutResult(
        self, request_iterator: AsyncIterator[pb.Chunk], context: grpc.aio.ServicerContext
    ) -> pb.PutReply:
        async def receive(cid: str) -> pb.PutReply:
            p = self.backend.open_upload(cid)  # before a single byte is read
            if isinstance(p, str):
                return pb.PutReply(accepted=False, reason=p)
            try:
                reader = ChunkReader({p.kind}, p.limit)
                try:
                    async for chunk in request_iterator:
                        reader.add(chunk)
                        if reader.complete:
                            break
                    payload = reader.payload()
                except WireFormatError as exc:
                    return self.backend.refuse(cid, p, f"upload refused: {exc}")
                return await asyncio.to_thread(self.backend.deliver, cid, p, payload)
            finally:
                self.backend.end_upload(p)

        return await self._serve(context, receive)


class RunningServer:
    """A started server: its event loop runs on a thread of its own. :meth:`stop` ends it."""

    def __init__(self, backend: GrpcBackend, address: str, tls: TLSFiles | None) -> None:
        self.backend, self.address, self.tls = backend, address, tls
        self.port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._grace: float | None = None
        self._thread = threading.Thread(target=self._main, name="shoal-grpc-server", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaces in the starting thread
            self._error = self._error or exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_CHUNK_MESSAGE),
                ("grpc.max_send_message_length", MAX_CHUNK_MESSAGE),
                ("grpc.max_concurrent_streams", 100),  # per connection; a device uses one at a time
                ("grpc.max_connection_idle_ms", 5 * 60_000),  # a connection without calls is closed
                ("grpc.so_reuseport", 0),  # a port in use is an error, not a silent second server
            ]
        )
        rpc.add_CoordinatorServicer_to_server(Coordinator(self.backend), server)
        try:
            if self.tls is not None:
                self.port = server.add_secure_port(self.address, self.tls.server_credentials())
            else:
                self.port = server.add_insecure_port(self.address)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            self._error = ConfigError(
                f"cannot listen on {self.address}: in use, or not an address of this machine"
            )
            self._ready.set()
            return
        await server.start()
        self.backend.attach(self._loop)
        self._ready.set()
        await self._stop.wait()
        await server.stop(self._grace)

    def stop(self, grace: float | None = None) -> None:
        """Stop serving; calls in flight get ``grace`` seconds to finish (None: none)."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._grace = grace
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=(grace or 0) + 10)


def _raise_descriptor_limit() -> None:
    """Every connected device holds a file descriptor: lift the soft limit (often 1024) to
    the hard one, so ten thousand devices fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def start_server(
    backend: GrpcBackend, address: str, tls: TLSFiles | None, insecure: bool = False
) -> RunningServer:
    """Serve ``backend`` on ``address`` ("host:port"); TLS unless ``insecure`` is set explicitly."""
    if tls is None and not insecure:
        raise ConfigError(
            "the server needs TLS (--cert/--key, and --ca for client certificates) or --insecure"
        )
    _raise_descriptor_limit()
    return RunningServer(backend, address, tls)
