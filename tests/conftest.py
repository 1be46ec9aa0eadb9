"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from media_samples import generate_samples

# --- media samples (tests/media_samples.py) ------------------------------------------
# Real files from the bundled ffmpeg plus impostors, made once per test session.


@pytest.fixture(scope="session")
def media_samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{sample name: path}; see media_samples.EXPECTED for what each must be detected as."""
    return generate_samples(tmp_path_factory.mktemp("media"))


# --- end of media samples --------------------------------------------------------------
