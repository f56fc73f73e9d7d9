"""The chunk reader both ends use: it rebuilds exactly what was chunked, and refuses a
stream at the first chunk that breaks the rules, before keeping that chunk's bytes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.errors import WireFormatError
from shoal.net.chunks import CHUNK_BYTES, ChunkReader, chunk_count, chunk_stream
from shoal.net.proto import shoal_pb2 as pb

SIZES = st.sampled_from([0, 1, 1000, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 2 * CHUNK_BYTES + 7])


@settings(max_examples=20, deadline=None)
@given(SIZES, st.integers(0, 2**32 - 1))
def test_a_chunked_message_comes_back_whole(size, seed):
    payload = np.random.default_rng(seed).bytes(size)
    reader = ChunkReader({"result"}, limit=size)
    chunks = list(chunk_stream("result", payload))
    assert len(chunks) == chunk_count(size) == max(1, -(-size // CHUNK_BYTES))
    for c in chunks:
        assert not reader.complete
        reader.add(c)
    assert reader.complete and bytes(reader.payload()) == payload


@settings(max_examples=60, deadline=None)
@given(
    SIZES.filter(lambda n: n > 0),
    st.sampled_from(["index", "count", "total_bytes", "kind", "data"]),
    st.integers(0, 2),
    st.integers(1, 5),
)
def test_any_tampered_chunk_is_refused(size, field, which, delta):
    chunks = list(chunk_stream("result", b"\1" * size))
    c = chunks[which % len(chunks)]
    if field == "kind":
        c.kind = "secagg"
    elif field == "data":
        c.data = c.data[:-1] if c.data else b"x"
    else:
        setattr(c, field, getattr(c, field) + delta)
    reader = ChunkReader({"result"}, limit=3 * CHUNK_BYTES)
    with pytest.raises(WireFormatError):
        for chunk in chunks:
            reader.add(chunk)
        reader.payload()


def test_the_limit_and_the_kind_are_checked_on_the_first_chunk_before_its_bytes_are_kept():
    reader = ChunkReader({"result"}, limit=100)
    with pytest.raises(WireFormatError, match="exceeds the limit of 100"):
        reader.add(pb.Chunk(kind="result", index=0, count=1, total_bytes=101, data=b"x" * 101))
    assert bytes(reader._data) == b""
    with pytest.raises(WireFormatError, match="expected a result message"):
        ChunkReader({"result"}, 100).add(pb.Chunk(kind="task", index=0, count=1, total_bytes=1, data=b"x"))
    with pytest.raises(WireFormatError, match="ended early"):
        ChunkReader({"result"}, 100).payload()
