from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamCall(_message.Message):
    __slots__ = ("call_id", "request", "timeout", "context", "chain", "trace_context")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    request: InvokeRequest
    timeout: float
    context: _containers.ScalarMap[str, str]
    chain: _containers.RepeatedScalarFieldContainer[str]
    trace_context: _containers.ScalarMap[str, str]
    def __init__(self, call_id: _Optional[int] = ..., request: _Optional[_Union[InvokeRequest, _Mapping]] = ..., timeout: _Optional[float] = ..., context: _Optional[_Mapping[str, str]] = ..., chain: _Optional[_Iterable[str]] = ..., trace_context: _Optional[_Mapping[str, str]] = ...) -> None: ...

class InvokeFrame(_message.Message):
    __slots__ = ("calls",)
    CALLS_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[StreamCall]
    def __init__(self, calls: _Optional[_Iterable[_Union[StreamCall, _Mapping]]] = ...) -> None: ...

class StreamResult(_message.Message):
    __slots__ = ("call_id", "response", "status_code", "status_message", "error_kind", "retry_safe", "error_type")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_KIND_FIELD_NUMBER: _ClassVar[int]
    RETRY_SAFE_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    response: InvokeResponse
    status_code: int
    status_message: str
    error_kind: str
    retry_safe: bool
    error_type: str
    def __init__(self, call_id: _Optional[int] = ..., response: _Optional[_Union[InvokeResponse, _Mapping]] = ..., status_code: _Optional[int] = ..., status_message: _Optional[str] = ..., error_kind: _Optional[str] = ..., retry_safe: bool = ..., error_type: _Optional[str] = ...) -> None: ...

class ResultFrame(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[StreamResult]
    def __init__(self, results: _Optional[_Iterable[_Union[StreamResult, _Mapping]]] = ...) -> None: ...

class InvokeRequest(_message.Message):
    __slots__ = ("grain_type", "grain_key", "method", "args_json", "hops", "kwargs_json", "system")
    GRAIN_TYPE_FIELD_NUMBER: _ClassVar[int]
    GRAIN_KEY_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    KWARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    grain_type: str
    grain_key: str
    method: str
    args_json: str
    hops: int
    kwargs_json: str
    system: bool
    def __init__(self, grain_type: _Optional[str] = ..., grain_key: _Optional[str] = ..., method: _Optional[str] = ..., args_json: _Optional[str] = ..., hops: _Optional[int] = ..., kwargs_json: _Optional[str] = ..., system: bool = ...) -> None: ...

class InvokeResponse(_message.Message):
    __slots__ = ("result_json", "silo_id", "address", "membership_version", "stateless_worker")
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    SILO_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATELESS_WORKER_FIELD_NUMBER: _ClassVar[int]
    result_json: str
    silo_id: str
    address: str
    membership_version: int
    stateless_worker: bool
    def __init__(self, result_json: _Optional[str] = ..., silo_id: _Optional[str] = ..., address: _Optional[str] = ..., membership_version: _Optional[int] = ..., stateless_worker: bool = ...) -> None: ...

class LocateRequest(_message.Message):
    __slots__ = ("grain_type", "grain_key")
    GRAIN_TYPE_FIELD_NUMBER: _ClassVar[int]
    GRAIN_KEY_FIELD_NUMBER: _ClassVar[int]
    grain_type: str
    grain_key: str
    def __init__(self, grain_type: _Optional[str] = ..., grain_key: _Optional[str] = ...) -> None: ...

class LocateResponse(_message.Message):
    __slots__ = ("silo_id", "address", "active")
    SILO_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    silo_id: str
    address: str
    active: bool
    def __init__(self, silo_id: _Optional[str] = ..., address: _Optional[str] = ..., active: bool = ...) -> None: ...

class MembersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Member(_message.Message):
    __slots__ = ("silo_id", "address", "state", "started_at", "incarnation")
    SILO_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    silo_id: str
    address: str
    state: str
    started_at: float
    incarnation: str
    def __init__(self, silo_id: _Optional[str] = ..., address: _Optional[str] = ..., state: _Optional[str] = ..., started_at: _Optional[float] = ..., incarnation: _Optional[str] = ...) -> None: ...

class MembersResponse(_message.Message):
    __slots__ = ("members", "version", "cluster")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[Member]
    version: int
    cluster: str
    def __init__(self, members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., version: _Optional[int] = ..., cluster: _Optional[str] = ...) -> None: ...

class SiloStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TypeCount(_message.Message):
    __slots__ = ("grain_type", "activations")
    GRAIN_TYPE_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    grain_type: str
    activations: int
    def __init__(self, grain_type: _Optional[str] = ..., activations: _Optional[int] = ...) -> None: ...

class SiloStatsResponse(_message.Message):
    __slots__ = ("silo_id", "address", "state", "activations", "calls_in_flight", "membership_version", "tasks")
    SILO_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    CALLS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_VERSION_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    silo_id: str
    address: str
    state: str
    activations: _containers.RepeatedCompositeFieldContainer[TypeCount]
    calls_in_flight: int
    membership_version: int
    tasks: int
    def __init__(self, silo_id: _Optional[str] = ..., address: _Optional[str] = ..., state: _Optional[str] = ..., activations: _Optional[_Iterable[_Union[TypeCount, _Mapping]]] = ..., calls_in_flight: _Optional[int] = ..., membership_version: _Optional[int] = ..., tasks: _Optional[int] = ...) -> None: ...

class ReminderEntry(_message.Message):
    __slots__ = ("name", "period_seconds", "next_due", "delivering", "failures", "disabled")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PERIOD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_DUE_FIELD_NUMBER: _ClassVar[int]
    DELIVERING_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    name: str
    period_seconds: float
    next_due: float
    delivering: bool
    failures: int
    disabled: str
    def __init__(self, name: _Optional[str] = ..., period_seconds: _Optional[float] = ..., next_due: _Optional[float] = ..., delivering: bool = ..., failures: _Optional[int] = ..., disabled: _Optional[str] = ...) -> None: ...

class ListRemindersRequest(_message.Message):
    __slots__ = ("grain_type", "grain_key", "include_runtime")
    GRAIN_TYPE_FIELD_NUMBER: _ClassVar[int]
    GRAIN_KEY_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RUNTIME_FIELD_NUMBER: _ClassVar[int]
    grain_type: str
    grain_key: str
    include_runtime: bool
    def __init__(self, grain_type: _Optional[str] = ..., grain_key: _Optional[str] = ..., include_runtime: bool = ...) -> None: ...

class ListRemindersResponse(_message.Message):
    __slots__ = ("reminders",)
    REMINDERS_FIELD_NUMBER: _ClassVar[int]
    reminders: _containers.RepeatedCompositeFieldContainer[ReminderEntry]
    def __init__(self, reminders: _Optional[_Iterable[_Union[ReminderEntry, _Mapping]]] = ...) -> None: ...

class RegisterReminderRequest(_message.Message):
    __slots__ = ("grain_type", "grain_key", "name", "due_seconds", "period_seconds")
    GRAIN_TYPE_FIELD_NUMBER: _ClassVar[int]
    GRAIN_KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DUE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    grain_type: str
    grain_key: str
    name: str
    due_seconds: float
    period_seconds: float
    def __init__(self, grain_type: _Optional[str] = ..., grain_key: _Optional[str] = ..., name: _Optional[str] = ..., due_seconds: _Optional[float] = ..., period_seconds: _Optional[float] = ...) -> None: ...

class RegisterReminderResponse(_message.Message):
    __slots__ = ("first_due",)
    FIRST_DUE_FIELD_NUMBER: _ClassVar[int]
    first_due: float
    def __init__(self, first_due: _Optional[float] = ...) -> None: ...

class UnregisterReminderRequest(_message.Message):
    __slots__ = ("grain_type", "grain_key", "name")
    GRAIN_TYPE_FIELD_NUMBER: _ClassVar[int]
    GRAIN_KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    grain_type: str
    grain_key: str
    name: str
    def __init__(self, grain_type: _Optional[str] = ..., grain_key: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class UnregisterReminderResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: bool
    def __init__(self, removed: bool = ...) -> None: ...

class JournalRequest(_message.Message):
    __slots__ = ("grain_type", "grain_key", "after", "limit")
    GRAIN_TYPE_FIELD_NUMBER: _ClassVar[int]
    GRAIN_KEY_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    grain_type: str
    grain_key: str
    after: int
    limit: int
    def __init__(self, grain_type: _Optional[str] = ..., grain_key: _Optional[str] = ..., after: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class JournalEntry(_message.Message):
    __slots__ = ("seq", "kind", "data_json", "time_ms")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    kind: str
    data_json: str
    time_ms: int
    def __init__(self, seq: _Optional[int] = ..., kind: _Optional[str] = ..., data_json: _Optional[str] = ..., time_ms: _Optional[int] = ...) -> None: ...

class JournalResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[JournalEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[JournalEntry, _Mapping]]] = ...) -> None: ...

class SignalRequest(_message.Message):
    __slots__ = ("grain_type", "grain_key", "name", "payload_json", "signal_id")
    GRAIN_TYPE_FIELD_NUMBER: _ClassVar[int]
    GRAIN_KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    grain_type: str
    grain_key: str
    name: str
    payload_json: str
    signal_id: str
    def __init__(self, grain_type: _Optional[str] = ..., grain_key: _Optional[str] = ..., name: _Optional[str] = ..., payload_json: _Optional[str] = ..., signal_id: _Optional[str] = ...) -> None: ...

class SignalResponse(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("grain_type", "grain_key", "run", "wait", "reason")
    GRAIN_TYPE_FIELD_NUMBER: _ClassVar[int]
    GRAIN_KEY_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    grain_type: str
    grain_key: str
    run: int
    wait: float
    reason: str
    def __init__(self, grain_type: _Optional[str] = ..., grain_key: _Optional[str] = ..., run: _Optional[int] = ..., wait: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class RunResponse(_message.Message):
    __slots__ = ("status_json",)
    STATUS_JSON_FIELD_NUMBER: _ClassVar[int]
    status_json: str
    def __init__(self, status_json: _Optional[str] = ...) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("namespace", "key", "event_json")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    EVENT_JSON_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    key: str
    event_json: str
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., event_json: _Optional[str] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("namespace", "key", "from_token", "announce_start")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    FROM_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ANNOUNCE_START_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    key: str
    from_token: str
    announce_start: bool
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., from_token: _Optional[str] = ..., announce_start: bool = ...) -> None: ...

class StreamEvent(_message.Message):
    __slots__ = ("token", "event_json")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EVENT_JSON_FIELD_NUMBER: _ClassVar[int]
    token: str
    event_json: str
    def __init__(self, token: _Optional[str] = ..., event_json: _Optional[str] = ...) -> None: ...

class PublishBatchRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[PublishRequest]
    def __init__(self, events: _Optional[_Iterable[_Union[PublishRequest, _Mapping]]] = ...) -> None: ...

class PublishBatchResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tokens: _Optional[_Iterable[str]] = ...) -> None: ...

class SiloReportRequest(_message.Message):
    __slots__ = ("history_seconds", "top")
    HISTORY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    history_seconds: int
    top: int
    def __init__(self, history_seconds: _Optional[int] = ..., top: _Optional[int] = ...) -> None: ...

class MetricsPoint(_message.Message):
    __slots__ = ("time", "interval", "calls", "errors", "latency_buckets", "calls_in_flight", "activations", "reminder_ticks", "reminder_failures", "reminder_lateness_buckets", "reminder_partitions", "stream_published", "stream_delivered", "stream_redelivered", "stream_dead_lettered", "stream_lag_buckets", "stream_partitions", "events")
    class EventsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TIME_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    CALLS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    REMINDER_TICKS_FIELD_NUMBER: _ClassVar[int]
    REMINDER_FAILURES_FIELD_NUMBER: _ClassVar[int]
    REMINDER_LATENESS_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    REMINDER_PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    STREAM_PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    STREAM_DELIVERED_FIELD_NUMBER: _ClassVar[int]
    STREAM_REDELIVERED_FIELD_NUMBER: _ClassVar[int]
    STREAM_DEAD_LETTERED_FIELD_NUMBER: _ClassVar[int]
    STREAM_LAG_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    STREAM_PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    time: int
    interval: float
    calls: int
    errors: int
    latency_buckets: _containers.RepeatedScalarFieldContainer[int]
    calls_in_flight: int
    activations: int
    reminder_ticks: int
    reminder_failures: int
    reminder_lateness_buckets: _containers.RepeatedScalarFieldContainer[int]
    reminder_partitions: int
    stream_published: int
    stream_delivered: int
    stream_redelivered: int
    stream_dead_lettered: int
    stream_lag_buckets: _containers.RepeatedScalarFieldContainer[int]
    stream_partitions: int
    events: _containers.ScalarMap[str, int]
    def __init__(self, time: _Optional[int] = ..., interval: _Optional[float] = ..., calls: _Optional[int] = ..., errors: _Optional[int] = ..., latency_buckets: _Optional[_Iterable[int]] = ..., calls_in_flight: _Optional[int] = ..., activations: _Optional[int] = ..., reminder_ticks: _Optional[int] = ..., reminder_failures: _Optional[int] = ..., reminder_lateness_buckets: _Optional[_Iterable[int]] = ..., reminder_partitions: _Optional[int] = ..., stream_published: _Optional[int] = ..., stream_delivered: _Optional[int] = ..., stream_redelivered: _Optional[int] = ..., stream_dead_lettered: _Optional[int] = ..., stream_lag_buckets: _Optional[_Iterable[int]] = ..., stream_partitions: _Optional[int] = ..., events: _Optional[_Mapping[str, int]] = ...) -> None: ...

class GrainActivity(_message.Message):
    __slots__ = ("grain_type", "grain_key", "calls", "total_seconds", "slowest_seconds")
    GRAIN_TYPE_FIELD_NUMBER: _ClassVar[int]
    GRAIN_KEY_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SLOWEST_SECONDS_FIELD_NUMBER: _ClassVar[int]
    grain_type: str
    grain_key: str
    calls: int
    total_seconds: float
    slowest_seconds: float
    def __init__(self, grain_type: _Optional[str] = ..., grain_key: _Optional[str] = ..., calls: _Optional[int] = ..., total_seconds: _Optional[float] = ..., slowest_seconds: _Optional[float] = ...) -> None: ...

class SiloReportResponse(_message.Message):
    __slots__ = ("stats", "latency_bounds", "points", "busiest", "slowest", "activity_window", "reminder_lateness_bounds", "stream_lag_bounds")
    STATS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    BUSIEST_FIELD_NUMBER: _ClassVar[int]
    SLOWEST_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_WINDOW_FIELD_NUMBER: _ClassVar[int]
    REMINDER_LATENESS_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    STREAM_LAG_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    stats: SiloStatsResponse
    latency_bounds: _containers.RepeatedScalarFieldContainer[float]
    points: _containers.RepeatedCompositeFieldContainer[MetricsPoint]
    busiest: _containers.RepeatedCompositeFieldContainer[GrainActivity]
    slowest: _containers.RepeatedCompositeFieldContainer[GrainActivity]
    activity_window: float
    reminder_lateness_bounds: _containers.RepeatedScalarFieldContainer[float]
    stream_lag_bounds: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, stats: _Optional[_Union[SiloStatsResponse, _Mapping]] = ..., latency_bounds: _Optional[_Iterable[float]] = ..., points: _Optional[_Iterable[_Union[MetricsPoint, _Mapping]]] = ..., busiest: _Optional[_Iterable[_Union[GrainActivity, _Mapping]]] = ..., slowest: _Optional[_Iterable[_Union[GrainActivity, _Mapping]]] = ..., activity_window: _Optional[float] = ..., reminder_lateness_bounds: _Optional[_Iterable[float]] = ..., stream_lag_bounds: _Optional[_Iterable[float]] = ...) -> None: ...

class InspectGrainRequest(_message.Message):
    __slots__ = ("grain_type", "grain_key")
    GRAIN_TYPE_FIELD_NUMBER: _ClassVar[int]
    GRAIN_KEY_FIELD_NUMBER: _ClassVar[int]
    grain_type: str
    grain_key: str
    def __init__(self, grain_type: _Optional[str] = ..., grain_key: _Optional[str] = ...) -> None: ...

class InspectGrainResponse(_message.Message):
    __slots__ = ("active", "phase", "queued", "turns", "idle_seconds", "recent", "activity_window", "workers")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    IDLE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_WINDOW_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    active: bool
    phase: str
    queued: int
    turns: int
    idle_seconds: float
    recent: GrainActivity
    activity_window: float
    workers: int
    def __init__(self, active: bool = ..., phase: _Optional[str] = ..., queued: _Optional[int] = ..., turns: _Optional[int] = ..., idle_seconds: _Optional[float] = ..., recent: _Optional[_Union[GrainActivity, _Mapping]] = ..., activity_window: _Optional[float] = ..., workers: _Optional[int] = ...) -> None: ...
