"""The configured storage backend, built and opened for the app's lifetime.

Owns the choice between backends (`storage.backend`) and the reading of S3 credentials
(the environment or `storage.s3.credentials_file`; config.py reads neither). Credentials
never reach a log line or an error message: only the names of what is missing do.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Config, S3Config
from .base import Storage
from .filesystem import FilesystemStorage

if TYPE_CHECKING:  # aiobotocore takes a quarter of a second to import: only for "s3"
    from .s3 import S3Storage
    from .s3_bucket import Credentials


class StorageSetupError(RuntimeError):
    """The backend cannot be set up (missing credentials, unreadable file, bucket out of
    reach); one line, which the CLI prints as a start-up fault (exit status 1)."""


def s3_credentials(s3: S3Config, environ: Mapping[str, str]) -> Credentials:
    """From `credentials_file` when set, else AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY."""
    from .s3_bucket import Credentials

    if s3.credentials_file is not None:
        return _credentials_from_file(s3.credentials_file)
    key, secret = environ.get("AWS_ACCESS_KEY_ID", ""), environ.get("AWS_SECRET_ACCESS_KEY", "")
    if not key or not secret:
        raise StorageSetupError("storage.backend = \"s3\" needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                                "in the environment, or storage.s3.credentials_file")
    return Credentials(key, secret, environ.get("AWS_SESSION_TOKEN") or None)


def _credentials_from_file(path: Path) -> Credentials:
    """An AWS-style credentials file: [default] with aws_access_key_id, aws_secret_access_key
    (and optionally aws_session_token)."""
    from .s3_bucket import Credentials

    parser = configparser.ConfigParser(interpolation=None)
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, UnicodeDecodeError, configparser.Error) as error:
        problem = type(error).__name__
        raise StorageSetupError(f"storage.s3.credentials_file {path}: cannot read it ({problem})") from None
    section = parser["default"] if parser.has_section("default") else None
    key = section.get("aws_access_key_id", "") if section else ""
    secret = section.get("aws_secret_access_key", "") if section else ""
    if not key or not secret:
        raise StorageSetupError(f"storage.s3.credentials_file {path}: needs [default] with "
                                "aws_access_key_id and aws_secret_access_key")
    return Credentials(key, secret, (section.get("aws_session_token") if section else None) or None)


def storage_from_config(config: Config, environ: Mapping[str, str] | None = None) -> FilesystemStorage | S3Storage:
    """The backend `config.storage.backend` names, not yet opened (see `open_storage`)."""
    storage = config.storage
    if storage.backend == "filesystem":
        return FilesystemStorage(storage.dir, storage.tmp_dir)
    from .s3 import S3Storage

    s3 = storage.s3
    assert s3.spool_dir is not None, "config resolves spool_dir"
    return S3Storage(
        bucket=s3.bucket, endpoint=s3.endpoint, region=s3.region,
        credentials=s3_credentials(s3, os.environ if environ is None else environ),
        prefix=s3.prefix, spool_dir=s3.spool_dir, part_size=s3.part_size, spool_budget=s3.spool_budget,
    )


@contextlib.asynccontextmanager
async def open_storage(config: Config, environ: Mapping[str, str] | None = None) -> AsyncIterator[Storage]:
    """The configured backend, ready (folders made, bucket reached) and closed on exit."""
    backend = storage_from_config(config, environ)
    if isinstance(backend, FilesystemStorage):
        await asyncio.get_running_loop().run_in_executor(None, backend.prepare)
        try:
            yield backend
        finally:
            await asyncio.get_running_loop().run_in_executor(None, backend.close)
        return
    try:
        try:
            await backend.start()
        except Exception as error:  # botocore's errors name the bucket and the endpoint, never keys
            raise StorageSetupError(f"the S3 bucket {config.storage.s3.bucket!r} cannot be used: "
                                    f"{type(error).__name__}: {str(error)[:200]}") from None
        yield backend
    finally:
        await backend.close()
