"""What the benchmark measures: the cases, their sizes, and the targets they are held to.

Owns the case list (full and --quick), the rows of each case (which server, uploaded
how), and the targets (issue 3, and issue "Use every core" where it supersedes them)
expressed as data. Pure definitions: nothing here runs or measures.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    kind: str  # "single", "concurrent", "tus", "refusal" or "s3"
    size: int  # bytes per upload
    count: int = 1  # uploads at once ("concurrent")
    patch_size: int = 0  # tus PATCH size
    # The case whose targets apply; a --quick case stands in for a full-size one.
    target_key: str = ""

    @property
    def targets_from(self) -> str:
        return self.target_key or self.key


FULL_CASES = (
    Case("single-64M", "One upload of 64 MiB", "single", 64 * MiB),
    Case("single-256M", "One upload of 256 MiB", "single", 256 * MiB),
    Case("single-1G", "One upload of 1 GiB", "single", GiB),
    Case("single-4G", "One upload of 4 GiB", "single", 4 * GiB),
    Case("concurrent-8x256M", "8 concurrent uploads of 256 MiB", "concurrent", 256 * MiB, count=8),
    Case("tus-1G", "1 GiB in 16 MiB PATCHes (tus, one connection, sequential)", "tus", GiB,
         patch_size=16 * MiB),
    Case("refusal-1G", "Early refusal of a 1 GiB body", "refusal", GiB),
    Case("s3-1G", "1 GiB into S3 (SeaweedFS weed mini): one-shot and tus (16 and 64 MiB PATCHes) "
         "beside boto3 upload_file", "s3", GiB, patch_size=16 * MiB),
)

# --quick: the same kinds of case at sizes that finish in about two minutes. Targets are
# shown against their full-size counterparts for orientation only.
QUICK_CASES = (
    Case("single-64M", "One upload of 64 MiB", "single", 64 * MiB),
    Case("single-256M", "One upload of 256 MiB (stands in for 1 GiB)", "single", 256 * MiB,
         target_key="single-1G"),
    Case("concurrent-8x16M", "8 concurrent uploads of 16 MiB (stands in for 8 x 256 MiB)",
         "concurrent", 16 * MiB, count=8, target_key="concurrent-8x256M"),
    Case("tus-64M", "64 MiB in 4 MiB PATCHes (tus; stands in for 1 GiB)", "tus", 64 * MiB,
         patch_size=4 * MiB, target_key="tus-1G"),
    Case("refusal-256M", "Early refusal of a 256 MiB body", "refusal", 256 * MiB,
         target_key="refusal-1G"),
    # 16 MiB PATCHes as in s3-1G: on S3 a PATCH's size against the part size (whole
    # parts, or a tail object joined by the next PATCH) matters more than the file's.
    Case("s3-64M", "64 MiB into S3 (SeaweedFS weed mini): one-shot and tus (16 and 64 MiB PATCHes) "
         "beside boto3 upload_file (stands in for 1 GiB)", "s3", 64 * MiB, patch_size=16 * MiB,
         target_key="s3-1G"),
)

WARMUP_SIZE = 8 * MiB
# The over-size refusal runs against a second uploadsrv whose limit is below the body.
REFUSAL_LIMIT = "128MiB"
REFUSAL_LIMIT_BYTES = 128 * MiB


@dataclass(frozen=True)
class Row:
    """One line of a case's table: a server, uploaded one-shot (curl) or by tus."""
    key: str  # the records' key
    server: str  # the key of the server that serves it (servers.py)
    label: str
    tus: bool = False
    patch_size: int = 0  # tus PATCH size of this row, when not the case's

    def patch_size_in(self, case: Case) -> int:
        return self.patch_size or case.patch_size


RAW, RAW_FSYNC = "aiohttp_raw", "aiohttp_raw_fsync"
SEED, FASTAPI = "seed_pattern", "fastapi_default"
UPLOADSRV, UPLOADSRV_TUS = "uploadsrv", "uploadsrv_tus"
ONE_SHOT_ROWS = (Row(RAW, RAW, "aiohttp raw"), Row(RAW_FSYNC, RAW_FSYNC, "aiohttp raw + fsync"),
                 Row(SEED, SEED, "seed pattern"), Row(FASTAPI, FASTAPI, "FastAPI default"),
                 Row(UPLOADSRV, UPLOADSRV, "uploadsrv"))
# The tus case holds uploadsrv's tus upload against its own one-shot upload of the same
# file in the same rounds, with the two raw peers as the ceilings.
TUS_ROWS = (Row(RAW, RAW, "aiohttp raw"), Row(RAW_FSYNC, RAW_FSYNC, "aiohttp raw + fsync"),
            Row(UPLOADSRV, UPLOADSRV, "uploadsrv (one-shot)"),
            Row(UPLOADSRV_TUS, UPLOADSRV, "uploadsrv (tus)", tus=True))


# The S3 case: uploadsrv on the S3 backend, one-shot and tus, held to a plain boto3
# upload_file of the same file to the same engine (the engine's ceiling here).
# The second tus row sends 64 MiB PATCHes: each PATCH waits until S3 holds its parts, so
# the engine idles between PATCHes, less so the larger they are (tus-js-client and Uppy
# send the whole file in one PATCH unless told otherwise).
BOTO3, UPLOADSRV_S3, UPLOADSRV_S3_TUS = "boto3_s3", "uploadsrv_s3", "uploadsrv_s3_tus"
UPLOADSRV_S3_TUS_64M = "uploadsrv_s3_tus_64m"
S3_ROWS = (Row(BOTO3, BOTO3, "boto3 upload_file"),
           Row(UPLOADSRV_S3, UPLOADSRV_S3, "uploadsrv one-shot (S3)"),
           Row(UPLOADSRV_S3_TUS, UPLOADSRV_S3, "uploadsrv tus (S3)", tus=True),
           Row(UPLOADSRV_S3_TUS_64M, UPLOADSRV_S3, "uploadsrv tus (S3), 64 MiB PATCHes", tus=True,
               patch_size=64 * MiB))
# uploadsrv's [storage.s3] in the S3 case: its defaults but a smaller spool, which is the
# memory target too (parts are spooled on disk, so RSS should grow far less than this).
S3_PART_SIZE = 8 * MiB
S3_SPOOL_BUDGET = 64 * MiB


def rows_for(case: Case) -> tuple[Row, ...]:
    if case.kind == "s3":
        return S3_ROWS
    return TUS_ROWS if case.kind == "tus" else ONE_SHOT_ROWS


@dataclass(frozen=True)
class Target:
    case_key: str
    what: str  # "ratio", "rss", "p99", "max", "integrity"
    limit: float
    versus: str = ""  # for "ratio": the row the subject is compared with
    label: str = ""
    subject: str = UPLOADSRV  # the row held to the target


def _single_targets(key: str) -> tuple[Target, ...]:
    return (Target(key, "rss", 16, label="peak RSS - idle <= 16 MiB"),
            Target(key, "p99", 5, label="/health p99 <= 5 ms"),
            Target(key, "integrity", 1, label="every sha256 matches"))


# Issue "Use every core" superseded issue 3's 1 GiB ratios (0.60x raw, 1.3x seed) and its
# 8-upload ones (aggregate 0.90x raw, p99 <= 15 ms, RSS <= 64 MiB); benchmarks/README.md
# lists what replaced what.
TARGETS: tuple[Target, ...] = (
    Target("single-1G", "ratio", 0.95, RAW_FSYNC, ">= 0.95x aiohttp raw + fsync"),
    Target("single-1G", "ratio", 0.80, RAW, ">= 0.80x aiohttp raw"),
    Target("single-1G", "ratio", 2.0, SEED, ">= 2x seed pattern"),
    Target("single-1G", "ratio", 3.0, FASTAPI, ">= 3x FastAPI default"),
    Target("single-4G", "ratio", 0.95, RAW, ">= 0.95x aiohttp raw"),
    Target("concurrent-8x256M", "ratio", 1.5, RAW,
           "aggregate >= 1.5x aiohttp raw (a single process)"),
    *_single_targets("single-64M"),
    *_single_targets("single-256M"),
    *_single_targets("single-1G"),
    *_single_targets("single-4G"),
    Target("concurrent-8x256M", "rss", 16 * 8,
           label="peak RSS - idle <= 16 MiB per upload (128 MiB)"),
    Target("concurrent-8x256M", "p99", 5, label="/health p99 <= 5 ms"),
    Target("concurrent-8x256M", "max", 50, label="/health max <= 50 ms"),
    Target("concurrent-8x256M", "integrity", 1, label="every sha256 matches"),
    Target("tus-1G", "ratio", 0.80, UPLOADSRV, ">= 0.80x uploadsrv one-shot",
           subject=UPLOADSRV_TUS),
    Target("tus-1G", "rss", 16, label="peak RSS - idle <= 16 MiB", subject=UPLOADSRV_TUS),
    Target("tus-1G", "integrity", 1, label="every sha256 matches", subject=UPLOADSRV_TUS),
    *(target for subject in (UPLOADSRV_S3, UPLOADSRV_S3_TUS, UPLOADSRV_S3_TUS_64M) for target in (
        Target("s3-1G", "ratio", 0.80, BOTO3, ">= 0.80x boto3 upload_file", subject=subject),
        Target("s3-1G", "rss", S3_SPOOL_BUDGET / MiB,
               label=f"peak RSS - idle <= the spool budget ({S3_SPOOL_BUDGET // MiB} MiB)", subject=subject),
        Target("s3-1G", "integrity", 1, label="every sha256 matches (record and S3 object)",
               subject=subject))),
)

# Early refusal, per refusal run: the response within 50 ms, the client sent < 1 MiB.
REFUSAL_SECONDS = 0.050
REFUSAL_BYTES = MiB


def select(cases: tuple[Case, ...], keys: list[str] | None) -> list[Case]:
    """The cases named by --cases (by key or by kind), in the suite's order."""
    if not keys:
        return list(cases)
    wanted = set(keys)
    chosen = [case for case in cases if case.key in wanted or case.kind in wanted]
    unknown = wanted - {case.key for case in chosen} - {case.kind for case in chosen}
    if unknown:
        known = ", ".join(case.key for case in cases)
        raise SystemExit(f"bench: unknown case(s) {', '.join(sorted(unknown))}; known: {known}")
    return chosen


def targets_for(case: Case) -> list[Target]:
    return [target for target in TARGETS if target.case_key == case.targets_from]
