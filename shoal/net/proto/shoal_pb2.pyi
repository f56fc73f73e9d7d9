from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Caller(_message.Message):
    __slots__ = ("client_id", "nonce", "timestamp_ms")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    nonce: int
    timestamp_ms: int
    def __init__(self, client_id: _Optional[str] = ..., nonce: _Optional[int] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...

class DeviceState(_message.Message):
    __slots__ = ("charging", "unmetered", "idle", "battery")
    CHARGING_FIELD_NUMBER: _ClassVar[int]
    UNMETERED_FIELD_NUMBER: _ClassVar[int]
    IDLE_FIELD_NUMBER: _ClassVar[int]
    BATTERY_FIELD_NUMBER: _ClassVar[int]
    charging: bool
    unmetered: bool
    idle: bool
    battery: float
    def __init__(self, charging: _Optional[bool] = ..., unmetered: _Optional[bool] = ..., idle: _Optional[bool] = ..., battery: _Optional[float] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("caller", "state")
    CALLER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    caller: Caller
    state: DeviceState
    def __init__(self, caller: _Optional[_Union[Caller, _Mapping]] = ..., state: _Optional[_Union[DeviceState, _Mapping]] = ...) -> None: ...

class JoinReply(_message.Message):
    __slots__ = ("run_id", "model_hash", "heartbeat_ms")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_HASH_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_MS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    model_hash: str
    heartbeat_ms: int
    def __init__(self, run_id: _Optional[str] = ..., model_hash: _Optional[str] = ..., heartbeat_ms: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("caller", "state")
    CALLER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    caller: Caller
    state: DeviceState
    def __init__(self, caller: _Optional[_Union[Caller, _Mapping]] = ..., state: _Optional[_Union[DeviceState, _Mapping]] = ...) -> None: ...

class HeartbeatReply(_message.Message):
    __slots__ = ("known",)
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    known: bool
    def __init__(self, known: _Optional[bool] = ...) -> None: ...

class TaskRequest(_message.Message):
    __slots__ = ("caller", "wait_ms")
    CALLER_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    caller: Caller
    wait_ms: int
    def __init__(self, caller: _Optional[_Union[Caller, _Mapping]] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("kind", "index", "count", "total_bytes", "data", "retry_after_ms", "caller")
    KIND_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    kind: str
    index: int
    count: int
    total_bytes: int
    data: bytes
    retry_after_ms: int
    caller: Caller
    def __init__(self, kind: _Optional[str] = ..., index: _Optional[int] = ..., count: _Optional[int] = ..., total_bytes: _Optional[int] = ..., data: _Optional[bytes] = ..., retry_after_ms: _Optional[int] = ..., caller: _Optional[_Union[Caller, _Mapping]] = ...) -> None: ...

class PutReply(_message.Message):
    __slots__ = ("accepted", "reason")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...
