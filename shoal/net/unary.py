"""One gRPC method that carries bytes both ways, on a thread-pool server of its own: what the
split-learning service and the CKKS key holder serve. No generated protobuf is needed: the
payload is each service's own validated codec."""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures

import grpc

from shoal.errors import ConfigError
from shoal.net.tls import ClientTLS, TLSFiles


def raw(b: bytes) -> bytes:
    """The (de)serializer of a bytes method: the bytes themselves."""
    return b


def serve_unary(
    method: str,
    handler: Callable[[bytes, grpc.ServicerContext], bytes],
    address: str,
    tls: TLSFiles | None,
    *,
    receive_limit: int,
    send_limit: int,
    workers: int,
    max_concurrent: int,
    thread_prefix: str,
) -> tuple[grpc.Server, int]:
    """Serve ``handler`` as ``method`` ("/package.Service/Method") on ``address`` ("host:port"),
    over TLS when ``tls`` is given. Returns the started server and its port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=thread_prefix),
        options=[
            ("grpc.max_receive_message_length", receive_limit),  # refused before the handler runs
            ("grpc.max_send_message_length", send_limit),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=max_concurrent,  # beyond that, RESOURCE_EXHAUSTED instead of a queue
    )
    rpc = grpc.unary_unary_rpc_method_handler(handler, request_deserializer=raw, response_serializer=raw)
    service, name = method.strip("/").split("/")
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {name: rpc}),))
    try:
        port = (
            server.add_secure_port(address, tls.server_credentials())
            if tls
            else server.add_insecure_port(address)
        )
    except RuntimeError:
        port = 0
    if port == 0:
        raise ConfigError(f"cannot listen on {address}: in use, or not an address of this machine")
    server.start()
    return server, port


def unary_channel(
    address: str, method: str, tls: ClientTLS | None, options: list[tuple[str, int]]
) -> tuple[grpc.Channel, grpc.UnaryUnaryMultiCallable]:
    """A channel to ``address`` (TLS when ``tls`` is given) and the callable of ``method``."""
    channel = (
        grpc.secure_channel(address, tls.credentials(), options=options)
        if tls
        else grpc.insecure_channel(address, options=options)
    )
    return channel, channel.unary_unary(method, request_serializer=raw, response_deserializer=raw)
