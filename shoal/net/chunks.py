"""Messages as chunks on a gRPC stream, and the bounded, validated reader of them.

A message travels as ``count`` chunks of exactly :data:`CHUNK_BYTES` (the last one holds
the rest): far below gRPC's 4 MB message limit, so a model of any size crosses. Both ends
reassemble with :class:`ChunkReader`, which refuses a stream at the first chunk that
breaks the rules, before that chunk's bytes are kept: a size above the reader's limit
(the server derives it from the model), a kind it does not expect, an index out of order,
a count or size that changes mid-stream or does not match the announced total.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from shoal.errors import WireFormatError
from shoal.net.proto import shoal_pb2 as pb

CHUNK_BYTES = 1 << 20  # 1 MiB pieces: far below gRPC's 4 MB default message limit
# gRPC's per-message limit on both ends: one chunk and its few small fields, nothing more.
MAX_CHUNK_MESSAGE = CHUNK_BYTES + 4096


def chunk_count(total_bytes: int) -> int:
    """How many chunks a message of ``total_bytes`` travels in (one for an empty message)."""
    return max(1, -(-total_bytes // CHUNK_BYTES))


def chunk_stream(kind: str, payload: bytes | bytearray | memoryview) -> Iterator[pb.Chunk]:
    view = memoryview(payload).cast("B")
    count = chunk_count(len(view))
    for i in range(count):
        yield pb.Chunk(
            kind=kind,
            index=i,
            count=count,
            total_bytes=len(view),
            data=bytes(view[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES]),
        )


class ChunkReader:
    """One message from its chunks, at most ``limit`` bytes, of one of ``kinds``.

    Feed chunks in arrival order with :meth:`add` (raises :class:`WireFormatError` at the
    first bad one); :meth:`payload` returns the message once every chunk has arrived."""

    def __init__(self, kinds: Collection[str], limit: int) -> None:
        self.kinds, self.limit = kinds, limit
        self.kind = ""
        self.total = self.count = 0
        self._next = 0
        self._data = bytearray()

    def add(self, chunk: pb.Chunk) -> None:
        if self._next == 0:
            self._first(chunk)
        elif self._next >= self.count:
            raise WireFormatError(f"a chunk after the last of {self.count}")
        if (chunk.kind, chunk.index, chunk.count, chunk.total_bytes) != (
            self.kind,
            self._next,
            self.count,
            self.total,
        ):
            raise WireFormatError(
                f"chunk {chunk.index}/{chunk.count} ({chunk.kind!r}, {chunk.total_bytes} bytes) does not "
                f"continue chunk {self._next}/{self.count} ({self.kind!r}, {self.total} bytes)"
            )
        last = self._next == self.count - 1
        want = self.total - CHUNK_BYTES * (self.count - 1) if last else CHUNK_BYTES
        if len(chunk.data) != want:
            raise WireFormatError(f"chunk {self._next} holds {len(chunk.data)} bytes, expected {want}")
        self._data += chunk.data
        self._next += 1

    def _first(self, chunk: pb.Chunk) -> None:
        if chunk.kind not in self.kinds:
            raise WireFormatError(f"expected a {' or '.join(sorted(self.kinds))} message, got {chunk.kind!r}")
        if chunk.total_bytes > self.limit:
            raise WireFormatError(
                f"a message of {chunk.total_bytes} bytes exceeds the limit of {self.limit} for this model"
            )
        if chunk.count != chunk_count(chunk.total_bytes):
            raise WireFormatError(
                f"{chunk.count} chunks announced for {chunk.total_bytes} bytes; "
                f"expected {chunk_count(chunk.total_bytes)}"
            )
        self.kind, self.total, self.count = chunk.kind, chunk.total_bytes, chunk.count

    @property
    def complete(self) -> bool:
        return self.count > 0 and self._next == self.count

    def payload(self) -> bytearray:
        if not self.complete:
            got = f"{self._next} of {self.count} chunks" if self.count else "no chunk"
            raise WireFormatError(f"the message ended early: {got}")
        return self._data
