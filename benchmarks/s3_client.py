#!/usr/bin/env python3
"""The S3 case's ceiling: a plain boto3 `upload_file` of the source file, as its own process.

    python3 s3_client.py --endpoint URL --bucket B --key K --source FILE --max-seconds S

Credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. `upload_file` with boto3's
default TransferConfig (multipart above 8 MiB, 8 MiB parts, 10 threads): what anyone
would write to put a file into S3, neither tuned nor hobbled. The time is that call's
alone (the client is made first). Prints one JSON object like tus_client.py's: status
(200 or 0), seconds, bytes_sent, body (None: S3 keeps no record of ours), error, plus
cpu_seconds (this process, all threads, during the call) and rss_growth (its peak RSS
during the call over its RSS before, bytes): the boto3 row's CPU and memory columns are
the client's, since the work uploadsrv does is done here. Starts no server.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path


def _rss_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def upload(endpoint: str, bucket: str, key: str, source: Path, max_seconds: float) -> dict:
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          config=Config(connect_timeout=10, read_timeout=max_seconds,
                                        retries={"max_attempts": 1}))
    # Resetting VmHWM needs clear_refs on ourselves; RSS before the call is the baseline.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    rss_before = _rss_kib("VmRSS")
    cpu_before = time.process_time()
    started = time.perf_counter()
    try:
        client.upload_file(str(source), bucket, key)
    except Exception as problem:  # noqa: BLE001 - reported, not raised: the harness reads our JSON
        return {"status": 0, "seconds": time.perf_counter() - started, "bytes_sent": 0, "body": None,
                "error": repr(problem)[:300], "cpu_seconds": 0.0, "rss_growth": 0}
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    # VmHWM: the peak since the reset above (since start, where the kernel refused it).
    peak = _rss_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"status": 200, "seconds": seconds, "bytes_sent": source.stat().st_size, "body": None, "error": "",
            "cpu_seconds": cpu, "rss_growth": max(0, peak - rss_before) * 1024}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--max-seconds", type=float, default=600)
    args = parser.parse_args(argv)
    print(json.dumps(upload(args.endpoint, args.bucket, args.key, args.source, args.max_seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
