"""One S3 bucket through an aiobotocore client: the calls the S3 backend makes, paginated,
with "no such key" and "no such upload" turned into `NotFound`.

Owns the client's life (created on first use, closed by `close`) and its settings. It
knows nothing of uploads or files, and never logs or shows credentials (`Credentials`
hides the secret from repr).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, BinaryIO

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import ClientError
from botocore.utils import parse_timestamp

from ..errors import NotFound
from .s3_layout import Part

READ_CHUNK = 1 << 20
_MISSING = {"NoSuchKey", "NoSuchUpload", "404", "NotFound"}
# Several uploads each with a part or two in flight, plus metadata calls beside them.
MAX_CONNECTIONS = 64


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Listed:
    key: str
    size: int
    modified: datetime


def _etag(value: object) -> str:
    """ETags without their quotes: engines quote them in some answers and not in others
    (SeaweedFS's UploadPartCopy), and parts are compared by them."""
    return str(value).strip('"')


def _timestamp(value: str) -> datetime:
    """botocore's timestamps, ISO 8601 ones (every XML listing's) without dateutil: its
    parser took half of a 128-part ListParts answer's time on the event loop."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return parse_timestamp(value)  # type: ignore[no-any-return]  # RFC 1123 headers, epoch seconds
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def is_missing(error: ClientError) -> bool:
    return str(error.response.get("Error", {}).get("Code")) in _MISSING


class Bucket:
    """The bucket's objects and multipart uploads."""

    def __init__(self, name: str, *, endpoint: str, region: str, credentials: Credentials,
                 session: AioSession | None = None) -> None:
        self.name = name
        self._endpoint = endpoint or None
        self._region = region
        self._credentials = credentials
        self._session = session or get_session()
        self._session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_timestamp)
        self._client: Any = None
        self._opening = asyncio.Lock()
        self._stack = contextlib.AsyncExitStack()

    async def client(self) -> Any:
        if self._client is None:
            async with self._opening:
                if self._client is None:
                    config = AioConfig(
                        # Over plain http botocore would SHA-256 every part on the event loop;
                        # TLS (or the loopback) carries the bytes, as boto3 does over https.
                        s3={"payload_signing_enabled": False, "addressing_style": "path"},
                        request_checksum_calculation="when_required",
                        response_checksum_validation="when_required",
                        retries={"max_attempts": 4, "mode": "standard"},
                        max_pool_connections=MAX_CONNECTIONS, connect_timeout=10, read_timeout=120,
                    )
                    self._client = await self._stack.enter_async_context(self._session.create_client(
                        "s3", endpoint_url=self._endpoint, region_name=self._region, config=config,
                        aws_access_key_id=self._credentials.access_key_id,
                        aws_secret_access_key=self._credentials.secret_access_key,
                        aws_session_token=self._credentials.session_token))
        return self._client

    async def close(self) -> None:
        self._client = None
        await self._stack.aclose()

    async def check(self) -> None:
        """Fail early (ClientError) when the bucket cannot be reached with these credentials."""
        await (await self.client()).head_bucket(Bucket=self.name)

    # -- objects ------------------------------------------------------------------------

    async def put(self, key: str, body: bytes) -> None:
        await (await self.client()).put_object(Bucket=self.name, Key=key, Body=body)

    async def put_json(self, key: str, data: dict[str, Any]) -> None:
        await self.put(key, json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode())

    async def get_bytes(self, key: str, missing: str) -> bytes:
        try:
            response = await (await self.client()).get_object(Bucket=self.name, Key=key)
        except ClientError as error:
            if is_missing(error):
                raise NotFound(missing) from None
            raise
        async with response["Body"] as body:
            return bytes(await body.read())

    async def get_json(self, key: str, missing: str) -> dict[str, Any]:
        try:
            data = json.loads(await self.get_bytes(key, missing))
        except ValueError:
            raise NotFound(missing) from None
        if not isinstance(data, dict):
            raise NotFound(missing)
        return data

    async def size(self, key: str) -> int | None:
        """An object's size, or None when there is none."""
        try:
            response = await (await self.client()).head_object(Bucket=self.name, Key=key)
        except ClientError as error:
            if is_missing(error):
                return None
            raise
        return int(response["ContentLength"])

    async def exists(self, key: str) -> bool:
        return await self.size(key) is not None

    async def read(self, key: str, start: int, end: int, missing: str) -> AsyncIterator[bytes]:
        """Bytes [start, end) of an object, in chunks of about READ_CHUNK."""
        if start >= end:
            return
        try:
            response = await (await self.client()).get_object(
                Bucket=self.name, Key=key, Range=f"bytes={start}-{end - 1}")
        except ClientError as error:
            if is_missing(error):
                raise NotFound(missing) from None
            raise
        async with response["Body"] as body:
            while chunk := await body.read(READ_CHUNK):
                yield bytes(chunk)

    async def copy(self, source: str, key: str) -> None:
        await (await self.client()).copy_object(Bucket=self.name, Key=key,
                                                CopySource={"Bucket": self.name, "Key": source})

    async def delete(self, *keys: str) -> None:
        """Remove objects; no error for one already gone."""
        client = await self.client()
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            if len(batch) == 1:
                await client.delete_object(Bucket=self.name, Key=batch[0])
                continue
            response = await client.delete_objects(
                Bucket=self.name, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True})
            if response.get("Errors"):
                error = response["Errors"][0]
                raise RuntimeError(f"S3 could not delete {error.get('Key')!r}: {error.get('Code')}")

    async def pages(self, prefix: str, *, start_after: str = "", page: int = 1000) -> AsyncIterator[list[Listed]]:
        """Pages of the objects under `prefix`, in key order, after `start_after`."""
        client = await self.client()
        token: str | None = None
        while True:
            arguments: dict[str, Any] = {"Bucket": self.name, "Prefix": prefix, "MaxKeys": page}
            if token:
                arguments["ContinuationToken"] = token
            elif start_after:
                arguments["StartAfter"] = start_after
            response = await client.list_objects_v2(**arguments)
            yield [Listed(item["Key"], int(item["Size"]), item["LastModified"])
                   for item in response.get("Contents", ())]
            token = response.get("NextContinuationToken")
            if not response.get("IsTruncated") or not token:
                return

    # -- multipart uploads --------------------------------------------------------------

    async def start_multipart(self, key: str) -> str:
        return str((await (await self.client()).create_multipart_upload(Bucket=self.name, Key=key))["UploadId"])

    async def upload_part(self, key: str, multipart: str, number: int, body: BinaryIO, size: int) -> Part:
        """Send `size` bytes from an open file as one part; aiohttp reads it in chunks on an
        executor, so the part is never whole in memory (botocore rewinds it to retry)."""
        response = await (await self.client()).upload_part(
            Bucket=self.name, Key=key, UploadId=multipart, PartNumber=number, Body=body, ContentLength=size)
        return Part(number, size, _etag(response["ETag"]))

    async def copy_part(self, key: str, multipart: str, number: int, source: str, start: int, end: int) -> Part:
        response = await (await self.client()).upload_part_copy(
            Bucket=self.name, Key=key, UploadId=multipart, PartNumber=number,
            CopySource={"Bucket": self.name, "Key": source}, CopySourceRange=f"bytes={start}-{end - 1}")
        return Part(number, end - start, _etag(response["CopyPartResult"]["ETag"]))

    async def list_parts(self, key: str, multipart: str, *, after: int = 0) -> dict[int, Part]:
        """The parts S3 holds with numbers above `after` (all by default)."""
        client = await self.client()
        parts: dict[int, Part] = {}
        marker = after
        while True:
            try:
                response = await client.list_parts(Bucket=self.name, Key=key, UploadId=multipart,
                                                   PartNumberMarker=marker)
            except ClientError as error:
                if is_missing(error):
                    raise NotFound(f"the multipart upload of {key!r} is gone") from None
                raise
            for item in response.get("Parts", ()):
                parts[int(item["PartNumber"])] = Part(int(item["PartNumber"]), int(item["Size"]), _etag(item["ETag"]))
            marker = int(response.get("NextPartNumberMarker") or 0)
            if not response.get("IsTruncated") or marker <= after:
                return parts

    async def complete(self, key: str, multipart: str, parts: Sequence[Part]) -> None:
        await (await self.client()).complete_multipart_upload(
            Bucket=self.name, Key=key, UploadId=multipart,
            MultipartUpload={"Parts": [{"PartNumber": part.number, "ETag": f'"{part.etag}"'} for part in parts]})

    async def abort(self, key: str, multipart: str) -> None:
        """Abort a multipart upload; no error if it is gone already."""
        try:
            await (await self.client()).abort_multipart_upload(Bucket=self.name, Key=key, UploadId=multipart)
        except ClientError as error:
            if not is_missing(error):
                raise

    async def multiparts(self, prefix: str) -> list[tuple[str, str, datetime]]:
        """(key, UploadId, initiated) of every multipart upload in progress under `prefix`."""
        client = await self.client()
        found: list[tuple[str, str, datetime]] = []
        arguments: dict[str, Any] = {"Bucket": self.name, "Prefix": prefix}
        while True:
            response = await client.list_multipart_uploads(**arguments)
            found += [(item["Key"], item["UploadId"], item["Initiated"]) for item in response.get("Uploads", ())]
            if not response.get("IsTruncated"):
                return found
            arguments.update(KeyMarker=response.get("NextKeyMarker", ""),
                             UploadIdMarker=response.get("NextUploadIdMarker", ""))
