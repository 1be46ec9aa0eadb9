"""config.toml: defaults, units, paths, and the one-line refusal of a bad file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from uploadsrv.config import Config, ConfigError, load_config
from uploadsrv.config_values import parse_duration, parse_size

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_shipped_config_toml_holds_exactly_the_defaults(tmp_path: Path) -> None:
    shipped = load_config(REPO / "config.toml")
    defaults = load_config(None, cwd=tmp_path)
    assert shipped.server == defaults.server
    assert shipped.limits == defaults.limits
    assert shipped.types == defaults.types
    assert shipped.cleanup == defaults.cleanup
    assert shipped.auth == defaults.auth
    assert shipped.storage.dir == REPO / "data" / "files"
    assert defaults.storage.dir == tmp_path / "data" / "files"


def test_defaults_follow_the_contract(tmp_path: Path) -> None:
    config = load_config(None, cwd=tmp_path)
    assert (config.server.host, config.server.port, config.server.shutdown_timeout) == ("127.0.0.1", 8080, 30)
    assert config.storage.min_free_space == 1 << 30
    assert config.limits.max_file_size == 5 << 30
    assert config.limits.max_files_per_request == 20
    assert config.limits.max_field_size == 64 << 10
    assert config.limits.max_concurrent_uploads == 64
    assert config.limits.idle_timeout == 60
    assert config.types.allowed == ("mp3", "wav", "mp4", "m4a", "flac", "ogg", "webm", "mov")
    assert (config.cleanup.partial_expiry, config.cleanup.interval) == (600, 60)
    assert config.auth.tokens == ()


def test_config_toml_in_the_working_folder_is_used_without_config_flag(tmp_path: Path) -> None:
    write(tmp_path, "[server]\nport = 9999\n")
    assert load_config(None, cwd=tmp_path).server.port == 9999


@pytest.mark.parametrize("text, expected", [
    (1048576, 1048576), ("512KiB", 512 << 10), ("5GiB", 5 << 30), ("10MB", 10_000_000), ("1.5 KiB", 1536),
    ("7", 7), ("2k", 2048),
])
def test_sizes_take_units(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text, expected", [(30, 30.0), (0.5, 0.5), ("90s", 90.0), ("10m", 600.0), ("1h", 3600.0),
                                            ("250ms", 0.25)])
def test_durations_take_units(text: object, expected: float) -> None:
    assert parse_duration(text) == expected


def test_relative_paths_resolve_against_the_config_files_folder(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = write(tmp_path / "etc", '[storage]\ndir = "../srv/files"\ntmp_dir = "/var/tmp/up"\n')
    config = load_config(path, cwd=Path("/"))
    assert config.storage.dir == tmp_path / "srv" / "files"
    assert config.storage.tmp_dir == Path("/var/tmp/up")


@pytest.mark.parametrize("text, key", [
    ("[limits]\nmax_file_size = \"5 parsecs\"\n", "limits.max_file_size"),
    ("[limits]\nmax_filesize = 1\n", "limits.max_filesize"),
    ("[server]\nport = \"eighty\"\n", "server.port"),
    ("[server]\nport = 70000\n", "server.port"),
    ("[types]\nallowed = [\"mp3\", \"exe\"]\n", "types.allowed"),
    ("[cleanup]\ninterval = \"-1s\"\n", "cleanup.interval"),
    ("[cleanup]\ninterval = 0\n", "cleanup.interval"),
    ("[auth]\ntokens = \"one\"\n", "auth.tokens"),
    ("[nonsense]\nx = 1\n", "nonsense"),
    ("[server]\npublic_url = \"uploads.example.com\"\n", "server.public_url"),
    ("[server]\ntrust_forwarded = \"yes\"\n", "server.trust_forwarded"),
    ("[limits]\nstale_after = 0\n", "limits.stale_after"),
    ("[cors]\norigins = [\"app.example.com\"]\n", "cors.origins"),
])
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text))
    assert raised.value.key == key
    assert key in str(raised.value)


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(None, cwd=tmp_path)
    assert isinstance(config, Config)
    with pytest.raises(AttributeError):
        config.server.port = 1  # type: ignore[misc]


@pytest.mark.parametrize("text", ["[limits]\nmax_file_size = \"lots\"\n", "not toml at all ["])
def test_cli_refuses_a_bad_config_with_one_line_and_status_2(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    result = subprocess.run([sys.executable, "-m", "uploadsrv", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("config: ")
    assert result.stdout == ""
