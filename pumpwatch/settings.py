"""Every setting, with its default built in, and the loader for ``config/config.yaml``.

`pumpwatch record` runs with no file at all: the dataclass defaults below are the defaults, and
``config/config.yaml`` repeats them with a comment each. A key in YAML named ``x`` fills the
field ``x_s`` when that field exists and takes a duration (``"500ms"``, ``"20s"``, ``"30m"``,
``"7d"`` or a number of seconds), so code keeps units in names while the file stays readable.
An unknown key, a wrong type or an unreadable file is a `ConfigError` (one line, exit 2).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pumpwatch.errors import ConfigError
from pumpwatch.streams import STREAMS
from pumpwatch.timeunits import MS_PER_S, US_PER_DAY, US_PER_HOUR, US_PER_MINUTE, US_PER_S

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {
    "ms": 1 / MS_PER_S,
    "s": 1.0,
    "m": US_PER_MINUTE / US_PER_S,
    "h": US_PER_HOUR / US_PER_S,
    "d": US_PER_DAY / US_PER_S,
    None: 1.0,
}
_DAY_S = US_PER_DAY / US_PER_S


def parse_duration(value: object, *, what: str = "duration") -> float:
    """``"500ms"`` -> 0.5, ``"7d"`` -> 604800.0, ``20`` -> 20.0 seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a duration like '20s', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(f"{what}: a duration cannot be negative ({value!r})")
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _UNIT_S[m.group(2)]
    raise ConfigError(f"{what}: expected a duration like '500ms', '20s', '30m', '7d', got {value!r}")


@dataclass
class StorageSettings:
    flush_interval_s: float = 1.0  # one zstd record batch per stream per flush
    flush_rows: int = 65_536  # flush sooner when this many rows are waiting
    retention_s: float = 7 * _DAY_S  # segments older than this are deleted, oldest first
    min_free_disk_mb: int = 2048  # below this free space the oldest segments are evicted
    compression_level: int = 3  # zstd level of record batches
    queue_warn_rows: int = 1_000_000  # log a warning when this many rows wait for the disk
    archive: bool = True  # `record` writes every sealed hour as Parquet to data/archive/ too
    archive_retention_s: float = 90 * _DAY_S  # archive files older than this are deleted; 0 = never


@dataclass
class FramesSettings:
    enabled: bool = True  # keep every raw frame (zstd NDJSON) for `pumpwatch reparse`
    retention_s: float = 3 * _DAY_S
    compression_level: int = 3


@dataclass
class ExtractSettings:
    before_s: float = 20.0  # window start = T - before
    after_s: float = 20.0  # window end = T + after


@dataclass
class PumpSettings:
    threshold_percent: float = 3.0  # minimum rise inside one sliding window
    window_s: float = 1.0  # sliding window length
    min_volume_ratio: float = 2.0  # window volume vs. the average pre-trigger window volume


@dataclass
class StreamSettings:
    enabled: bool = True
    ws_url: str = ""
    rest_url: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # adapter-specific knobs (channel choice…)


def _default_streams() -> dict[str, StreamSettings]:
    urls = {
        "binance_spot": ("wss://stream.binance.com:9443", "https://api.binance.com"),
        "binance_futures": ("wss://fstream.binance.com/market", "https://fapi.binance.com"),
        "bybit_spot": ("wss://stream.bybit.com/v5/public/spot", "https://api.bybit.com"),
        "bybit_futures": ("wss://stream.bybit.com/v5/public/linear", "https://api.bybit.com"),
        "okx_spot": ("wss://ws.okx.com:8443/ws/v5/business", "https://www.okx.com"),
        "okx_futures": ("wss://ws.okx.com:8443/ws/v5/business", "https://www.okx.com"),
        "kucoin_spot": ("", "https://api.kucoin.com"),  # the WS URL comes from bullet-public
        "kucoin_futures": ("", "https://api-futures.kucoin.com"),
        "gate_spot": ("wss://api.gateio.ws/ws/v4/", "https://api.gateio.ws"),
        "gate_futures": ("wss://fx-ws.gateio.ws/v4/ws/usdt", "https://api.gateio.ws"),
        "phemex_spot": ("wss://ws.phemex.com", "https://api.phemex.com"),
        "phemex_futures": ("wss://ws.phemex.com", "https://api.phemex.com"),
    }
    return {s: StreamSettings(ws_url=urls[s][0], rest_url=urls[s][1]) for s in STREAMS}


DEFAULT_SYMBOLS_FILE = "config/symbols.yaml"


@dataclass
class RecorderSettings:
    streams: list[str] = field(default_factory=lambda: list(STREAMS))  # the subset this machine records
    # A relative path is resolved once when the settings load (`resolve_symbols_file`), against
    # the config file's directory or the data directory, never the working directory.
    symbols_file: str = DEFAULT_SYMBOLS_FILE
    symbols_reload_s: float = 10.0  # check the subscription list this often (a stat when unchanged)
    status_interval_s: float = 60.0  # one status line per stream this often
    backoff_initial_s: float = 1.0  # reconnect backoff starts here …
    backoff_max_s: float = 30.0  # … doubles with jitter up to here
    worker_restart_max_s: float = 60.0  # cap of the backoff before restarting a dead worker
    heartbeat_s: float = 10.0  # journal an "alive" mark this often (bounds a crash's unknown span)
    redundancy: int = 1  # connections kept per shard at all times (2: a death loses nothing)
    # Worker processes carrying the streams: 1 = every exchange in one process (bench_memory, twelve
    # streams at 1 000 trades/s: 318 MB RSS in total vs 800 MB with 0), n = whole exchanges spread
    # over n, 0 = one per exchange (isolation: one exchange's crash or CPU spike touches no other).
    workers: int = 1


@dataclass
class RepairSettings:
    live: bool = True  # fill a gap from the exchange's REST trade history as soon as it closes
    at_extract: bool = True  # fill what is still missing in a window when extracting (--no-backfill)
    id_grace_s: float = 2.0  # a hole in contiguous trade ids is a gap once unfilled this long
    extract_deadline_s: float = 60.0  # extraction-time repair gives up (rate_limited) after this


@dataclass
class SymbolsSettings:
    policy: str = "exclude_upbit_krw"  # exclude_upbit_krw | all | list
    include: list[str] = field(default_factory=list)  # base assets when policy is "list"
    keep_after_krw_s: float = _DAY_S  # keep recording a coin this long after it joins Upbit KRW
    # `record` re-fetches the instrument lists this often (0 = never): one REST call per stream
    # (two for Bybit linear, plus pages), so a newly announced market is subscribed within about
    # refresh + recorder.symbols_reload.
    refresh_s: float = 60.0
    upbit_rest_url: str = "https://api.upbit.com"
    include_non_crypto: bool = False  # also stock, metal, forex… instruments (adapter option default)


@dataclass
class UpbitSettings:
    enabled: bool = True
    hosts: list[str] = field(
        default_factory=lambda: ["https://api-manager.upbit.com", "https://pub-info.upbit.com"]
    )
    category: str = "trade"
    per_page: int = 20
    poll_interval_s: float = 3.0
    jitter: float = 0.2  # each wait is poll_interval × (1 ± jitter)
    freshness_s: float = 1800.0  # fire only for notices first listed within this of now
    backoff_max_s: float = 300.0
    timeout_s: float = 10.0
    user_agent: str = "Mozilla/5.0 (X11; Linux x86_64) pumpwatch/0.1"
    settle_s: float = 0.5  # extract at T + extract.after + one flush + this (trades that arrive late)


@dataclass
class MetricsSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9464


@dataclass
class LoggingSettings:
    level: str = "INFO"
    file: bool = True  # also write rotated logs under <data_dir>/logs/
    max_bytes: int = 20_000_000
    backups: int = 5


@dataclass
class RemoteBlock:
    """The ``remote:`` block (issue 14): the shared object store. Same names and defaults as
    `pumpwatch.segments.remote.RemoteSettings`, which validates it (`remote_settings`)."""

    url: str = ""  # s3://bucket/prefix; empty = no remote store
    endpoint_url: str = ""  # http(s)://host:port of an S3-compatible store; empty = AWS
    region: str = "us-east-1"
    recorder_id: str = ""  # empty = this host's name
    upload_interval_s: float = 30.0
    max_files_per_round: int = 200
    max_bytes_per_round: int = 512 * 1024 * 1024
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    journal_grace_s: float = 60.0
    upload_segments: bool = False
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 60.0
    # the shared listing is written at T + after + this at the latest (missing parts named)
    listing_deadline_s: float = 300.0


@dataclass
class Settings:
    data_dir: str = "./data"
    storage: StorageSettings = field(default_factory=StorageSettings)
    frames: FramesSettings = field(default_factory=FramesSettings)
    extract: ExtractSettings = field(default_factory=ExtractSettings)
    pump: PumpSettings = field(default_factory=PumpSettings)
    recorder: RecorderSettings = field(default_factory=RecorderSettings)
    repair: RepairSettings = field(default_factory=RepairSettings)
    symbols: SymbolsSettings = field(default_factory=SymbolsSettings)
    streams: dict[str, StreamSettings] = field(default_factory=_default_streams)
    upbit: UpbitSettings = field(default_factory=UpbitSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    remote: RemoteBlock = field(default_factory=RemoteBlock)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, where)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return {str(k): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        return value
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported setting type {_type_name(tp)}")  # pragma: no cover


def _build(cls: type, raw: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    obj = cls()
    for key, value in raw.items():
        key = str(key)
        path = f"{where}.{key}" if where else key
        if key in names and not key.endswith("_s"):
            if cls is Settings and key == "streams":
                setattr(obj, key, _merge_streams(obj.streams, value, path))
            else:
                setattr(obj, key, _coerce(value, hints[key], path))
        elif f"{key}_s" in names:
            setattr(obj, f"{key}_s", parse_duration(value, what=path))
        else:
            known = sorted(n[:-2] if n.endswith("_s") else n for n in names)
            raise ConfigError(f"{path}: unknown setting (known here: {', '.join(known)})")
    return obj


def _merge_streams(defaults: dict[str, StreamSettings], raw: Any, where: str) -> dict[str, StreamSettings]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of stream id to settings")
    merged = dict(defaults)
    for stream, value in raw.items():
        if stream not in STREAMS:
            raise ConfigError(f"{where}.{stream}: unknown stream (known: {', '.join(STREAMS)})")
        if not isinstance(value, dict):
            raise ConfigError(f"{where}.{stream}: expected a mapping")
        base = dataclasses.asdict(defaults[stream])
        base.update(value)
        merged[stream] = _build(StreamSettings, base, f"{where}.{stream}")
    return merged


# The lowest value of each setting that keeps the processes sane: a zero heartbeat or status
# interval spins a loop (300,000 journal lines in 10 s), a zero flush_rows kills the writer.
# (key as written in YAML, field, minimum, unit shown in the message). config/config.yaml
# repeats these next to each key.
_MINIMUMS: tuple[tuple[str, str, float, str], ...] = (
    ("storage.flush_interval", "storage.flush_interval_s", 0.01, "10ms"),
    ("storage.flush_rows", "storage.flush_rows", 1, "1"),
    ("storage.min_free_disk_mb", "storage.min_free_disk_mb", 0, "0"),
    ("storage.compression_level", "storage.compression_level", 1, "1"),
    ("storage.queue_warn_rows", "storage.queue_warn_rows", 1, "1"),
    ("frames.compression_level", "frames.compression_level", 1, "1"),
    ("pump.threshold_percent", "pump.threshold_percent", 0.0, "0"),
    ("pump.window", "pump.window_s", 0.001, "1ms"),
    ("pump.min_volume_ratio", "pump.min_volume_ratio", 0.0, "0"),
    ("recorder.symbols_reload", "recorder.symbols_reload_s", 1.0, "1s"),
    ("recorder.status_interval", "recorder.status_interval_s", 1.0, "1s"),
    ("recorder.backoff_initial", "recorder.backoff_initial_s", 0.01, "10ms"),
    ("recorder.worker_restart_max", "recorder.worker_restart_max_s", 0.1, "100ms"),
    ("recorder.heartbeat", "recorder.heartbeat_s", 1.0, "1s"),
    ("recorder.redundancy", "recorder.redundancy", 1, "1"),
    ("recorder.workers", "recorder.workers", 0, "0"),
    ("repair.id_grace", "repair.id_grace_s", 0.0, "0"),
    ("repair.extract_deadline", "repair.extract_deadline_s", 1.0, "1s"),
    ("upbit.per_page", "upbit.per_page", 1, "1"),
    ("upbit.poll_interval", "upbit.poll_interval_s", 0.1, "100ms"),
    ("upbit.jitter", "upbit.jitter", 0.0, "0"),
    ("upbit.freshness", "upbit.freshness_s", 1.0, "1s"),
    ("upbit.timeout", "upbit.timeout_s", 0.1, "100ms"),
    ("metrics.port", "metrics.port", 1, "1"),
    ("logging.max_bytes", "logging.max_bytes", 0, "0"),
    ("logging.backups", "logging.backups", 0, "0"),
)
_MAXIMUMS: tuple[tuple[str, str, float, str], ...] = (
    ("storage.compression_level", "storage.compression_level", 22, "22"),
    ("frames.compression_level", "frames.compression_level", 22, "22"),
    ("upbit.per_page", "upbit.per_page", 100, "100"),
    ("upbit.jitter", "upbit.jitter", 0.9, "0.9"),
    ("metrics.port", "metrics.port", 65535, "65535"),
    ("recorder.redundancy", "recorder.redundancy", 2, "2"),
)
SYMBOLS_REFRESH_MIN_S = 60.0  # symbols.refresh: 0 (never) or at least a minute of REST calls apart


def _field(settings: Settings, dotted: str) -> Any:
    obj: Any = settings
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def validate(settings: Settings) -> Settings:
    """Checks a type alone does not catch: known names, and every bound that keeps a loop from
    spinning or a worker from dying on a value it only meets later. One line per fault."""
    for stream in settings.recorder.streams:
        if stream not in STREAMS:
            raise ConfigError(f"recorder.streams: unknown stream {stream!r}")
    if settings.symbols.policy not in ("exclude_upbit_krw", "all", "list"):
        raise ConfigError("symbols.policy: expected exclude_upbit_krw, all or list")
    if settings.storage.flush_interval_s <= 0:
        raise ConfigError("storage.flush_interval: must be positive")
    if settings.pump.window_s <= 0:
        raise ConfigError("pump.window: must be positive")
    for key, name, low, shown in _MINIMUMS:
        if _field(settings, name) < low:
            raise ConfigError(f"{key}: must be at least {shown}, got {_field(settings, name)!r}")
    for key, name, high, shown in _MAXIMUMS:
        if _field(settings, name) > high:
            raise ConfigError(f"{key}: must be at most {shown}, got {_field(settings, name)!r}")
    rec = settings.recorder
    if rec.backoff_max_s < rec.backoff_initial_s:
        raise ConfigError("recorder.backoff_max: must be at least recorder.backoff_initial")
    if settings.upbit.backoff_max_s < settings.upbit.poll_interval_s:
        raise ConfigError("upbit.backoff_max: must be at least upbit.poll_interval")
    if 0 < settings.symbols.refresh_s < SYMBOLS_REFRESH_MIN_S:
        raise ConfigError(
            f"symbols.refresh: must be 0 (never) or at least 1m, got {settings.symbols.refresh_s:g} s"
        )
    if not rec.symbols_file:
        raise ConfigError("recorder.symbols_file: must name a file")
    if not isinstance(logging.getLevelName(settings.logging.level.upper()), int):
        raise ConfigError(f"logging.level: unknown level {settings.logging.level!r}")
    if 0 < settings.storage.archive_retention_s < US_PER_HOUR / US_PER_S:
        raise ConfigError(
            "storage.archive_retention: must be 0 (keep forever) or at least 1h, "
            f"got {settings.storage.archive_retention_s:g} s"
        )
    if settings.metrics.enabled and not settings.metrics.host:
        raise ConfigError("metrics.host: must name an address to listen on")
    return settings


def resolve_symbols_file(symbols_file: str, config_file: str | os.PathLike[str] | None, data_dir: str) -> str:
    """The absolute path of ``recorder.symbols_file``; the working directory never matters.

    An absolute path stays as it is. A relative one is read against the config file's
    directory when settings come from a file, else against the directory holding the data
    directory (the repository, for the default ``./data``). The default
    ``config/symbols.yaml`` is ``symbols.yaml`` beside the config file, or ``config/symbols.yaml``
    beside the data directory; an explicit relative path whose first part is the config
    directory's own name (``config/symbols.yaml`` in ``config/config.yaml``, written relative to
    the repository before this rule) is read against that directory's parent, i.e. the same file.
    """
    path = Path(symbols_file).expanduser()
    if path.is_absolute():
        return str(path)
    if config_file is not None:
        config_dir = Path(config_file).expanduser().absolute().parent
        if symbols_file == DEFAULT_SYMBOLS_FILE:
            return str(config_dir / "symbols.yaml")
        base = config_dir.parent if path.parts[0] == config_dir.name else config_dir
    else:
        base = Path(data_dir).expanduser().absolute().parent
    return os.path.normpath(base / path)


def load_settings(config_file: str | os.PathLike[str] | None = None, data_dir: str | None = None) -> Settings:
    """Built-in defaults, overlaid by `config_file` (or $PUMPWATCH_CONFIG), then `data_dir`
    (or $PUMPWATCH_DATA_DIR). No file at all is fine; a named file that cannot be read is not."""
    import yaml

    config_file = config_file or os.environ.get("PUMPWATCH_CONFIG") or None
    settings = Settings()
    if config_file is not None:
        path = Path(config_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config {path} is not UTF-8 text (byte {exc.start})") from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"config {path} is not valid YAML{at}") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"config {path}: the top level must be a mapping")
        settings = _build(Settings, raw, "")
    data_dir = data_dir or os.environ.get("PUMPWATCH_DATA_DIR") or None
    if data_dir:
        settings.data_dir = data_dir
    settings = validate(settings)
    settings.recorder.symbols_file = resolve_symbols_file(
        settings.recorder.symbols_file, config_file, settings.data_dir
    )
    return settings
