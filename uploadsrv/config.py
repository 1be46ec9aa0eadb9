"""Configuration: `config.toml` read once into frozen dataclasses.

Owns the keys, their defaults (each value's parser is in `config_values`) and the resolution of
relative paths against the config file's folder. It must not read the environment or
touch the filesystem beyond reading the one file it is given. A bad file raises
`ConfigError`, whose text is the single line the CLI prints before exiting with 2.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config_values as values


class ConfigError(Exception):
    """A config file that cannot be used; `str()` names the key and the problem."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config: {key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    shutdown_timeout: float = 30.0
    # Where clients reach us (e.g. "https://uploads.example.com" behind a TLS proxy), for
    # the tus Location header; "" takes it from the request.
    public_url: str = ""
    # Take scheme and host from X-Forwarded-Proto / X-Forwarded-Host (only behind a proxy
    # that sets them).
    trust_forwarded: bool = False
    # Worker processes accepting on the one listening socket; 0 = one per usable core, at
    # most 8 (resolved at start-up by workers.worker_count: this module reads no system
    # state); 1 = a single process, no supervisor.
    workers: int = 0


@dataclass(frozen=True)
class S3Config:
    """[storage.s3]: used when storage.backend = "s3". Credentials are not kept here: they
    come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or from
    `credentials_file` (read at start-up by storage.factory, never logged)."""

    endpoint: str = ""  # "" = AWS for the region
    region: str = "us-east-1"
    bucket: str = ""
    prefix: str = ""
    credentials_file: Path | None = None
    part_size: int = 8 << 20
    spool_dir: Path | None = None  # None = <storage.tmp_dir>/spool
    spool_budget: int = 256 << 20


@dataclass(frozen=True)
class StorageConfig:
    dir: Path = Path("data/files")
    tmp_dir: Path = Path("data/tmp")
    min_free_space: int = 1 << 30
    backend: str = "filesystem"  # or "s3" ([storage.s3])
    s3: S3Config = field(default_factory=S3Config)


@dataclass(frozen=True)
class LimitsConfig:
    max_file_size: int = 5 << 30
    max_files_per_request: int = 20
    max_field_size: int = 64 << 10
    max_fields: int = 32
    max_concurrent_uploads: int = 64
    idle_timeout: float = 60.0
    stale_after: float = 3.0


@dataclass(frozen=True)
class TypesConfig:
    allowed: tuple[str, ...] = ("mp3", "wav", "mp4", "m4a", "flac", "ogg", "webm", "mov")


@dataclass(frozen=True)
class CleanupConfig:
    partial_expiry: float = 600.0
    interval: float = 60.0


@dataclass(frozen=True)
class AuthConfig:
    tokens: tuple[str, ...] = ()


@dataclass(frozen=True)
class HooksConfig:
    command: str = ""
    url: str = ""
    timeout: float = 30.0
    retries: int = 5


@dataclass(frozen=True)
class LoggingConfig:
    format: str = "text"
    level: str = "info"


@dataclass(frozen=True)
class MetricsConfig:
    token: str = ""


@dataclass(frozen=True)
class CorsConfig:
    origins: tuple[str, ...] = ()


@dataclass(frozen=True)
class LocksConfig:
    # "file": flock'ed files in storage.tmp_dir (the processes of one machine);
    # "redis": leases in one Redis shared by several instances.
    backend: str = "file"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # A lease its instance stopped renewing (a crash) frees itself after this.
    lease: float = 10.0


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    types: TypesConfig = field(default_factory=TypesConfig)
    cleanup: CleanupConfig = field(default_factory=CleanupConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    cors: CorsConfig = field(default_factory=CorsConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    locks: LocksConfig = field(default_factory=LocksConfig)


S3_MIN_PART = 5 << 20  # S3's smallest part (but the last)
S3_MAX_PART = 5 << 30


def _s3_table(value: object) -> S3Config:
    """[storage.s3] as a table of its own keys; errors name the key inside it."""
    if not isinstance(value, dict):
        raise ValueError("expected a table ([storage.s3])")
    schema: Mapping[str, Callable[[object], Any]] = {
        "endpoint": values.base_url, "region": values.text, "bucket": values.optional_text, "prefix": values.optional_text,
        "credentials_file": values.optional_text, "part_size": values.parse_size, "spool_dir": values.optional_text,
        "spool_budget": values.parse_size,
    }
    parsed: dict[str, Any] = {}
    for key, raw in value.items():
        if key not in schema:
            raise ValueError(f"{key}: unknown key")
        try:
            parsed[key] = schema[key](raw)
        except ValueError as error:
            raise ValueError(f"{key}: {error}") from None
    for key in ("credentials_file", "spool_dir"):
        parsed[key] = Path(parsed[key]) if parsed.get(key) else None
    config = S3Config(**parsed)
    if not S3_MIN_PART <= config.part_size <= S3_MAX_PART:
        raise ValueError("part_size: must be from 5MiB to 5GiB (S3's part sizes)")
    if config.spool_budget < config.part_size:
        raise ValueError("spool_budget: must hold at least one part (part_size)")
    return config


# section -> key -> parser; the dataclass field of the same name receives the result.
_SCHEMA: Mapping[str, Mapping[str, Callable[[object], Any]]] = {
    "server": {"host": values.text, "port": values.port, "shutdown_timeout": values.parse_duration,
               "public_url": values.base_url, "trust_forwarded": values.boolean, "workers": values.workers},
    "storage": {"dir": values.text, "tmp_dir": values.text, "min_free_space": values.parse_size,
                "backend": values.one_of("filesystem", "s3"), "s3": _s3_table},
    "limits": {
        "max_file_size": values.positive(values.parse_size),
        "max_files_per_request": values.positive(values.integer),
        "max_field_size": values.positive(values.parse_size),
        "max_fields": values.positive(values.integer),
        "max_concurrent_uploads": values.positive(values.integer),
        "idle_timeout": values.positive(values.parse_duration),
        "stale_after": values.positive(values.parse_duration),
    },
    "types": {"allowed": values.media_types},
    "cleanup": {"partial_expiry": values.positive(values.parse_duration), "interval": values.positive(values.parse_duration)},
    "auth": {"tokens": values.texts},
    "cors": {"origins": values.origins},
    "hooks": {"command": values.optional_text, "url": values.base_url, "timeout": values.positive(values.parse_duration),
              "retries": values.count},
    "metrics": {"token": values.optional_text},
    "logging": {"format": values.one_of("text", "json"), "level": values.one_of("debug", "info", "warning", "error")},
    "locks": {"backend": values.one_of("file", "redis"), "redis_url": values.redis_url, "lease": values.positive(values.parse_duration)},
}
_SECTIONS = {
    "server": ServerConfig, "storage": StorageConfig, "limits": LimitsConfig,
    "types": TypesConfig, "cleanup": CleanupConfig, "auth": AuthConfig, "cors": CorsConfig,
    "hooks": HooksConfig, "metrics": MetricsConfig, "logging": LoggingConfig, "locks": LocksConfig,
}


def config_from_mapping(data: Mapping[str, Any], base_dir: Path) -> Config:
    """Validate a parsed TOML document; relative paths resolve against `base_dir`."""
    sections: dict[str, Any] = {}
    for section_name, table in data.items():
        if section_name not in _SCHEMA:
            raise ConfigError(section_name, f"unknown section; known: {', '.join(_SCHEMA)}")
        if not isinstance(table, dict):
            raise ConfigError(section_name, "expected a table ([section])")
        parsed: dict[str, Any] = {}
        for key, raw in table.items():
            parser = _SCHEMA[section_name].get(key)
            if parser is None:
                raise ConfigError(f"{section_name}.{key}", "unknown key")
            try:
                parsed[key] = parser(raw)
            except ValueError as error:
                raise ConfigError(f"{section_name}.{key}", str(error)) from None
        sections[section_name] = _SECTIONS[section_name](**parsed)
    config = Config(**sections)
    return _resolve_paths(config, base_dir)


def _resolve_paths(config: Config, base_dir: Path) -> Config:
    storage = config.storage
    tmp_dir = (base_dir / storage.tmp_dir).resolve()
    s3 = storage.s3
    if storage.backend == "s3" and not s3.bucket:
        raise ConfigError("storage.s3.bucket", "required when storage.backend = \"s3\"")
    s3 = dataclasses.replace(
        s3,
        spool_dir=(base_dir / s3.spool_dir).resolve() if s3.spool_dir else tmp_dir / "spool",
        credentials_file=(base_dir / s3.credentials_file).resolve() if s3.credentials_file else None,
    )
    resolved = dataclasses.replace(storage, dir=(base_dir / storage.dir).resolve(), tmp_dir=tmp_dir, s3=s3)
    return dataclasses.replace(config, storage=resolved)


def load_config(path: Path | None, *, cwd: Path | None = None) -> Config:
    """Read `path`; without one, `./config.toml` if present, else the defaults."""
    here = cwd or Path.cwd()
    if path is None:
        candidate = here / "config.toml"
        if not candidate.is_file():
            return _resolve_paths(Config(), here)
        path = candidate
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), "no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(str(path), f"cannot read: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(str(path), f"not valid TOML: {error}") from None
    return config_from_mapping(data, Path(path).resolve().parent)
