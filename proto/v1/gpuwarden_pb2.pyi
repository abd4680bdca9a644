from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProcessInfo(_message.Message):
    __slots__ = ("pid", "used_mem_bytes", "name")
    PID_FIELD_NUMBER: _ClassVar[int]
    USED_MEM_BYTES_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    pid: int
    used_mem_bytes: int
    name: str
    def __init__(self, pid: _Optional[int] = ..., used_mem_bytes: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class JobInfo(_message.Message):
    __slots__ = ("job_id", "step", "user", "account", "partition", "name", "qos", "batch", "requeue", "start_time", "dask_scheduler", "dask_worker", "source", "cpu_util_pct")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    QOS_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    REQUEUE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    DASK_SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    DASK_WORKER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CPU_UTIL_PCT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    step: str
    user: str
    account: str
    partition: str
    name: str
    qos: str
    batch: bool
    requeue: bool
    start_time: int
    dask_scheduler: str
    dask_worker: str
    source: str
    cpu_util_pct: float
    def __init__(self, job_id: _Optional[str] = ..., step: _Optional[str] = ..., user: _Optional[str] = ..., account: _Optional[str] = ..., partition: _Optional[str] = ..., name: _Optional[str] = ..., qos: _Optional[str] = ..., batch: _Optional[bool] = ..., requeue: _Optional[bool] = ..., start_time: _Optional[int] = ..., dask_scheduler: _Optional[str] = ..., dask_worker: _Optional[str] = ..., source: _Optional[str] = ..., cpu_util_pct: _Optional[float] = ...) -> None: ...

class GpuWindow(_message.Message):
    __slots__ = ("uuid", "index", "name", "parent_uuid", "samples", "util_mean", "util_max", "util_min", "zero_frac", "mem_util_mean", "mem_used_max_bytes", "mem_total_bytes", "power_mean_w", "temperature_c", "processes", "errors", "job", "allocated", "extra_mean", "extra_max", "minor_number", "gpu_instance_id", "mig_caps_minor")
    class ExtraMeanEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ExtraMaxEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    UUID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARENT_UUID_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    UTIL_MEAN_FIELD_NUMBER: _ClassVar[int]
    UTIL_MAX_FIELD_NUMBER: _ClassVar[int]
    UTIL_MIN_FIELD_NUMBER: _ClassVar[int]
    ZERO_FRAC_FIELD_NUMBER: _ClassVar[int]
    MEM_UTIL_MEAN_FIELD_NUMBER: _ClassVar[int]
    MEM_USED_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEM_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    POWER_MEAN_W_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_C_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    EXTRA_MEAN_FIELD_NUMBER: _ClassVar[int]
    EXTRA_MAX_FIELD_NUMBER: _ClassVar[int]
    MINOR_NUMBER_FIELD_NUMBER: _ClassVar[int]
    GPU_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    MIG_CAPS_MINOR_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    index: int
    name: str
    parent_uuid: str
    samples: int
    util_mean: float
    util_max: float
    util_min: float
    zero_frac: float
    mem_util_mean: float
    mem_used_max_bytes: int
    mem_total_bytes: int
    power_mean_w: float
    temperature_c: float
    processes: _containers.RepeatedCompositeFieldContainer[ProcessInfo]
    errors: _containers.RepeatedScalarFieldContainer[str]
    job: JobInfo
    allocated: bool
    extra_mean: _containers.ScalarMap[str, float]
    extra_max: _containers.ScalarMap[str, float]
    minor_number: int
    gpu_instance_id: int
    mig_caps_minor: int
    def __init__(self, uuid: _Optional[str] = ..., index: _Optional[int] = ..., name: _Optional[str] = ..., parent_uuid: _Optional[str] = ..., samples: _Optional[int] = ..., util_mean: _Optional[float] = ..., util_max: _Optional[float] = ..., util_min: _Optional[float] = ..., zero_frac: _Optional[float] = ..., mem_util_mean: _Optional[float] = ..., mem_used_max_bytes: _Optional[int] = ..., mem_total_bytes: _Optional[int] = ..., power_mean_w: _Optional[float] = ..., temperature_c: _Optional[float] = ..., processes: _Optional[_Iterable[_Union[ProcessInfo, _Mapping]]] = ..., errors: _Optional[_Iterable[str]] = ..., job: _Optional[_Union[JobInfo, _Mapping]] = ..., allocated: _Optional[bool] = ..., extra_mean: _Optional[_Mapping[str, float]] = ..., extra_max: _Optional[_Mapping[str, float]] = ..., minor_number: _Optional[int] = ..., gpu_instance_id: _Optional[int] = ..., mig_caps_minor: _Optional[int] = ...) -> None: ...

class SlurmStatus(_message.Message):
    __slots__ = ("available", "error")
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    available: bool
    error: str
    def __init__(self, available: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class NodeReport(_message.Message):
    __slots__ = ("node", "seq", "agent_id", "window_start", "window_end", "gpus", "slurm", "agent_version")
    NODE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    SLURM_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    node: str
    seq: int
    agent_id: str
    window_start: float
    window_end: float
    gpus: _containers.RepeatedCompositeFieldContainer[GpuWindow]
    slurm: SlurmStatus
    agent_version: str
    def __init__(self, node: _Optional[str] = ..., seq: _Optional[int] = ..., agent_id: _Optional[str] = ..., window_start: _Optional[float] = ..., window_end: _Optional[float] = ..., gpus: _Optional[_Iterable[_Union[GpuWindow, _Mapping]]] = ..., slurm: _Optional[_Union[SlurmStatus, _Mapping]] = ..., agent_version: _Optional[str] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("node", "seq", "duplicate", "cumulative")
    NODE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_FIELD_NUMBER: _ClassVar[int]
    node: str
    seq: int
    duplicate: bool
    cumulative: bool
    def __init__(self, node: _Optional[str] = ..., seq: _Optional[int] = ..., duplicate: _Optional[bool] = ..., cumulative: _Optional[bool] = ...) -> None: ...

class NodeReportBatch(_message.Message):
    __slots__ = ("node", "reports")
    NODE_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    node: str
    reports: _containers.RepeatedCompositeFieldContainer[NodeReport]
    def __init__(self, node: _Optional[str] = ..., reports: _Optional[_Iterable[_Union[NodeReport, _Mapping]]] = ...) -> None: ...

class GpuState(_message.Message):
    __slots__ = ("node", "latest", "window_end")
    NODE_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    node: str
    latest: GpuWindow
    window_end: float
    def __init__(self, node: _Optional[str] = ..., latest: _Optional[_Union[GpuWindow, _Mapping]] = ..., window_end: _Optional[float] = ...) -> None: ...

class NodeState(_message.Message):
    __slots__ = ("node", "last_seen", "connected", "slurm", "gpus", "last_seq")
    NODE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    SLURM_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    node: str
    last_seen: float
    connected: bool
    slurm: SlurmStatus
    gpus: _containers.RepeatedCompositeFieldContainer[GpuState]
    last_seq: int
    def __init__(self, node: _Optional[str] = ..., last_seen: _Optional[float] = ..., connected: _Optional[bool] = ..., slurm: _Optional[_Union[SlurmStatus, _Mapping]] = ..., gpus: _Optional[_Iterable[_Union[GpuState, _Mapping]]] = ..., last_seq: _Optional[int] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClusterSnapshot(_message.Message):
    __slots__ = ("now", "nodes", "windows_stored")
    NOW_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_STORED_FIELD_NUMBER: _ClassVar[int]
    now: float
    nodes: _containers.RepeatedCompositeFieldContainer[NodeState]
    windows_stored: int
    def __init__(self, now: _Optional[float] = ..., nodes: _Optional[_Iterable[_Union[NodeState, _Mapping]]] = ..., windows_stored: _Optional[int] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("include_snapshot",)
    INCLUDE_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    include_snapshot: bool
    def __init__(self, include_snapshot: _Optional[bool] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ("id", "ts", "job_id", "kind", "action", "outcome", "dry_run", "gpus", "detail", "evidence_json", "actor", "user", "account", "partition", "nodes")
    ID_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_JSON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    id: int
    ts: float
    job_id: str
    kind: str
    action: str
    outcome: str
    dry_run: bool
    gpus: _containers.RepeatedScalarFieldContainer[str]
    detail: str
    evidence_json: str
    actor: str
    user: str
    account: str
    partition: str
    nodes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[int] = ..., ts: _Optional[float] = ..., job_id: _Optional[str] = ..., kind: _Optional[str] = ..., action: _Optional[str] = ..., outcome: _Optional[str] = ..., dry_run: _Optional[bool] = ..., gpus: _Optional[_Iterable[str]] = ..., detail: _Optional[str] = ..., evidence_json: _Optional[str] = ..., actor: _Optional[str] = ..., user: _Optional[str] = ..., account: _Optional[str] = ..., partition: _Optional[str] = ..., nodes: _Optional[_Iterable[str]] = ...) -> None: ...

class ClusterEvent(_message.Message):
    __slots__ = ("node", "audit")
    NODE_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FIELD_NUMBER: _ClassVar[int]
    node: NodeState
    audit: AuditRecord
    def __init__(self, node: _Optional[_Union[NodeState, _Mapping]] = ..., audit: _Optional[_Union[AuditRecord, _Mapping]] = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("node", "uuid", "job_id", "since", "until", "limit")
    NODE_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    node: str
    uuid: str
    job_id: str
    since: float
    until: float
    limit: int
    def __init__(self, node: _Optional[str] = ..., uuid: _Optional[str] = ..., job_id: _Optional[str] = ..., since: _Optional[float] = ..., until: _Optional[float] = ..., limit: _Optional[int] = ...) -> None: ...

class WindowRecord(_message.Message):
    __slots__ = ("node", "window_start", "window_end", "gpu")
    NODE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    node: str
    window_start: float
    window_end: float
    gpu: GpuWindow
    def __init__(self, node: _Optional[str] = ..., window_start: _Optional[float] = ..., window_end: _Optional[float] = ..., gpu: _Optional[_Union[GpuWindow, _Mapping]] = ...) -> None: ...

class HistoryResponse(_message.Message):
    __slots__ = ("windows", "truncated")
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    windows: _containers.RepeatedCompositeFieldContainer[WindowRecord]
    truncated: bool
    def __init__(self, windows: _Optional[_Iterable[_Union[WindowRecord, _Mapping]]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class AuditRequest(_message.Message):
    __slots__ = ("job_id", "since", "limit")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    since: float
    limit: int
    def __init__(self, job_id: _Optional[str] = ..., since: _Optional[float] = ..., limit: _Optional[int] = ...) -> None: ...

class AuditResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[AuditRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[AuditRecord, _Mapping]]] = ...) -> None: ...

class WhoamiRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WhoamiResponse(_message.Message):
    __slots__ = ("name", "role", "via")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    VIA_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    via: str
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ..., via: _Optional[str] = ...) -> None: ...

class IdlePeriod(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: float
    end: float
    def __init__(self, start: _Optional[float] = ..., end: _Optional[float] = ...) -> None: ...

class GpuStats(_message.Message):
    __slots__ = ("node", "uuid", "index", "name", "reported_s", "active_s", "util_mean_pct", "util_max_pct", "mem_peak_bytes", "mem_total_bytes", "power_mean_w", "sm_active_mean_pct", "tensor_active_mean_pct", "idle_periods", "idle_periods_more")
    NODE_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPORTED_S_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_S_FIELD_NUMBER: _ClassVar[int]
    UTIL_MEAN_PCT_FIELD_NUMBER: _ClassVar[int]
    UTIL_MAX_PCT_FIELD_NUMBER: _ClassVar[int]
    MEM_PEAK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEM_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    POWER_MEAN_W_FIELD_NUMBER: _ClassVar[int]
    SM_ACTIVE_MEAN_PCT_FIELD_NUMBER: _ClassVar[int]
    TENSOR_ACTIVE_MEAN_PCT_FIELD_NUMBER: _ClassVar[int]
    IDLE_PERIODS_FIELD_NUMBER: _ClassVar[int]
    IDLE_PERIODS_MORE_FIELD_NUMBER: _ClassVar[int]
    node: str
    uuid: str
    index: int
    name: str
    reported_s: float
    active_s: float
    util_mean_pct: float
    util_max_pct: float
    mem_peak_bytes: int
    mem_total_bytes: int
    power_mean_w: float
    sm_active_mean_pct: float
    tensor_active_mean_pct: float
    idle_periods: _containers.RepeatedCompositeFieldContainer[IdlePeriod]
    idle_periods_more: int
    def __init__(self, node: _Optional[str] = ..., uuid: _Optional[str] = ..., index: _Optional[int] = ..., name: _Optional[str] = ..., reported_s: _Optional[float] = ..., active_s: _Optional[float] = ..., util_mean_pct: _Optional[float] = ..., util_max_pct: _Optional[float] = ..., mem_peak_bytes: _Optional[int] = ..., mem_total_bytes: _Optional[int] = ..., power_mean_w: _Optional[float] = ..., sm_active_mean_pct: _Optional[float] = ..., tensor_active_mean_pct: _Optional[float] = ..., idle_periods: _Optional[_Iterable[_Union[IdlePeriod, _Mapping]]] = ..., idle_periods_more: _Optional[int] = ...) -> None: ...

class JobStatsRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class JobStats(_message.Message):
    __slots__ = ("found", "job_id", "user", "account", "partition", "name", "state", "start", "end", "last_seen", "cpu_util_mean_pct", "gpus", "decisions", "source")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    CPU_UTIL_MEAN_PCT_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    found: bool
    job_id: str
    user: str
    account: str
    partition: str
    name: str
    state: str
    start: float
    end: float
    last_seen: float
    cpu_util_mean_pct: float
    gpus: _containers.RepeatedCompositeFieldContainer[GpuStats]
    decisions: _containers.RepeatedCompositeFieldContainer[AuditRecord]
    source: str
    def __init__(self, found: _Optional[bool] = ..., job_id: _Optional[str] = ..., user: _Optional[str] = ..., account: _Optional[str] = ..., partition: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[str] = ..., start: _Optional[float] = ..., end: _Optional[float] = ..., last_seen: _Optional[float] = ..., cpu_util_mean_pct: _Optional[float] = ..., gpus: _Optional[_Iterable[_Union[GpuStats, _Mapping]]] = ..., decisions: _Optional[_Iterable[_Union[AuditRecord, _Mapping]]] = ..., source: _Optional[str] = ...) -> None: ...

class WasteReportRequest(_message.Message):
    __slots__ = ("since",)
    SINCE_FIELD_NUMBER: _ClassVar[int]
    since: float
    def __init__(self, since: _Optional[float] = ...) -> None: ...

class WasteRow(_message.Message):
    __slots__ = ("by", "key", "jobs", "allocated_h", "active_h", "idle_h", "reclaimed_h")
    BY_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_H_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_H_FIELD_NUMBER: _ClassVar[int]
    IDLE_H_FIELD_NUMBER: _ClassVar[int]
    RECLAIMED_H_FIELD_NUMBER: _ClassVar[int]
    by: str
    key: str
    jobs: int
    allocated_h: float
    active_h: float
    idle_h: float
    reclaimed_h: float
    def __init__(self, by: _Optional[str] = ..., key: _Optional[str] = ..., jobs: _Optional[int] = ..., allocated_h: _Optional[float] = ..., active_h: _Optional[float] = ..., idle_h: _Optional[float] = ..., reclaimed_h: _Optional[float] = ...) -> None: ...

class WasteReport(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[WasteRow]
    def __init__(self, rows: _Optional[_Iterable[_Union[WasteRow, _Mapping]]] = ...) -> None: ...

class PolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PolicyResponse(_message.Message):
    __slots__ = ("policy_json",)
    POLICY_JSON_FIELD_NUMBER: _ClassVar[int]
    policy_json: str
    def __init__(self, policy_json: _Optional[str] = ...) -> None: ...

class ActionRequest(_message.Message):
    __slots__ = ("job_id", "action", "duration_s", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    action: str
    duration_s: float
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., action: _Optional[str] = ..., duration_s: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class ActionReply(_message.Message):
    __slots__ = ("ok", "outcome", "detail", "actor", "dry_run")
    OK_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    outcome: str
    detail: str
    actor: str
    dry_run: bool
    def __init__(self, ok: _Optional[bool] = ..., outcome: _Optional[str] = ..., detail: _Optional[str] = ..., actor: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...
