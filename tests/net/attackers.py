"""Hostile peers for tests: raw gRPC calls that a well-behaved device would never make."""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator
from types import TracebackType

import grpc

from shoal.net.proto import shoal_pb2 as pb
from shoal.net.proto import shoal_pb2_grpc as rpc


class IdleUploads:
    """``count`` PutResult streams from one client id that never send a byte; each one that
    ends is opened again, so the pressure lasts until the block exits. ``codes`` counts how
    the server ended them."""

    def __init__(self, address: str, client_id: str, count: int, token: str | None = None) -> None:
        self.address, self.count = address, count
        self.metadata: tuple[tuple[str, str], ...] = (("shoal-client-id", client_id),)
        if token is not None:
            self.metadata += (("shoal-token", token),)
        self.codes: collections.Counter[str] = collections.Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stop: asyncio.Event | None = None
        self._main: asyncio.Future[None] | None = None

    def __enter__(self) -> IdleUploads:
        self._thread.start()
        self._main = asyncio.run_coroutine_threadsafe(self._run(), self._loop)  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._main is not None:
            self._main.result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = rpc.CoordinatorStub(channel)
            streams = [asyncio.ensure_future(self._one(stub, self._stop)) for _ in range(self.count)]
            await asyncio.gather(*streams, return_exceptions=True)

    async def _one(self, stub: rpc.CoordinatorStub, stop: asyncio.Event) -> None:
        async def silence() -> AsyncIterator[pb.Chunk]:
            await stop.wait()  # sends nothing; at the end, closes its side without a byte
            return
            yield  # an async generator that yields nothing

        while not stop.is_set():
            try:
                reply = await stub.PutResult(silence(), metadata=self.metadata)
                self.codes["OK accepted" if reply.accepted else "OK refused"] += 1
            except grpc.aio.AioRpcError as exc:
                self.codes[exc.code().name] += 1
            await asyncio.sleep(0.2)


class ParkedDevices:
    """Devices that join and then keep long-polling GetTask, from one process, on
    ``connections`` connections (a device each in real life; here some share one)."""

    def __init__(self, address: str, ids: list[str], connections: int) -> None:
        self.address, self.ids, self.connections = address, ids, connections
        self.polling = 0
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self._run(),), daemon=True
        )

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        options = [("grpc.use_local_subchannel_pool", 1)]  # one TCP connection per channel
        channels = [grpc.aio.insecure_channel(self.address, options=options) for _ in range(self.connections)]
        stubs = [rpc.CoordinatorStub(c) for c in channels]
        await asyncio.gather(*(self._device(stubs[i % len(stubs)], cid) for i, cid in enumerate(self.ids)))
        for c in channels:
            await c.close()

    async def _device(self, stub: rpc.CoordinatorStub, cid: str) -> None:
        md = (("shoal-client-id", cid),)
        idle = pb.DeviceState(charging=False)  # never eligible: parked, never picked
        await stub.Join(pb.JoinRequest(state=idle), metadata=md)
        self.polling += 1
        assert self._stop is not None
        while not self._stop.is_set():
            async for chunk in stub.GetTask(pb.TaskRequest(wait_ms=30_000), metadata=md):
                if chunk.kind == "done":
                    return

    def __enter__(self) -> ParkedDevices:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=60)
