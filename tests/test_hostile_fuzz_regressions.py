"""Every input the fuzzers found (fuzz/regressions/) and every seed (fuzz/corpus/),
replayed through its target in the default suite: none may fail again."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"


def _targets() -> dict[str, Callable[[bytes], None]]:
    spec = importlib.util.spec_from_file_location("uploadsrv_fuzz_targets", FUZZ / "targets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.TARGETS)


TARGETS = _targets()
INPUTS = sorted((kind, path.parent.name, path) for kind in ("regressions", "corpus")
                for path in (FUZZ / kind).glob("*/*") if path.is_file())


def test_every_kept_input_belongs_to_a_target() -> None:
    assert INPUTS, "no fuzz inputs found"
    assert {target for _, target, _ in INPUTS} <= set(TARGETS)
    assert {target for kind, target, _ in INPUTS if kind == "corpus"} == set(TARGETS)


@pytest.mark.parametrize("kind, target, path", INPUTS, ids=[f"{k}/{t}/{p.name}" for k, t, p in INPUTS])
def test_a_kept_fuzz_input_passes_its_target(kind: str, target: str, path: Path) -> None:
    TARGETS[target](path.read_bytes())
