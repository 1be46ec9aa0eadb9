"""Run the fuzz targets (fuzz/targets.py) under atheris for a bounded time, on demand.

    python fuzz/run.py --seconds 300                 # every target, one after another
    python fuzz/run.py --seconds 600 --target scanner --target tus_headers --jobs 2

Each target runs in its own process, niced, with libFuzzer's corpus in a work folder
outside the checkout (--workdir, a temp folder by default), seeded from
fuzz/corpus/<target>/. An input that fails a target is copied into
fuzz/regressions/<target>/, which tests/test_hostile_fuzz_regressions.py replays in the
default suite. Needs atheris (`pip install atheris`; not in the test extra).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60, help="time per target (default 60)")
    parser.add_argument("--target", action="append", help="a target (default: all); repeatable")
    parser.add_argument("--jobs", type=int, default=1, help="targets run at once (default 1)")
    parser.add_argument("--workdir", type=Path, help="libFuzzer corpora and crash files (default: a temp folder)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        return _fuzz(args.child, rest)
    sys.path.insert(0, str(ROOT))
    from fuzz.targets import TARGETS

    names = args.target or sorted(TARGETS)
    unknown = set(names) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; known: {sorted(TARGETS)}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="uploadsrv-fuzz-"))
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda name: _run(name, args.seconds, workdir), names))
    for name, (code, kept) in zip(names, results):
        print(f"{name}: {'ok' if code == 0 else f'FOUND (exit {code})'}; {kept} new regression input(s)")
    print(f"corpora and logs in {workdir}")
    return max(code for code, _ in results)


def _run(name: str, seconds: int, workdir: Path) -> tuple[int, int]:
    corpus = workdir / name / "corpus"
    crashes = workdir / name / "crashes"
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    seeds = HERE / "corpus" / name
    command = ["nice", "-n", "19", sys.executable, str(Path(__file__).resolve()), "--child", name,
               str(corpus), *([str(seeds)] if seeds.is_dir() else []),
               f"-max_total_time={seconds}", f"-artifact_prefix={crashes}/", "-timeout=10", "-rss_limit_mb=2048",
               "-max_len=4096", "-print_final_stats=1"]
    with open(workdir / name / "log.txt", "wb") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    kept = 0
    regressions = HERE / "regressions" / name
    for found in sorted(crashes.iterdir()):
        regressions.mkdir(parents=True, exist_ok=True)
        shutil.copy(found, regressions / found.name)
        kept += 1
    return code, kept


def _fuzz(name: str, libfuzzer_args: list[str]) -> int:
    import atheris

    sys.path.insert(0, str(ROOT))
    with atheris.instrument_imports(include=["uploadsrv", "fuzz"]):
        from fuzz.targets import TARGETS
    target = TARGETS[name]
    atheris.Setup([sys.argv[0], *libfuzzer_args], target)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
