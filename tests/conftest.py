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

# ---- app fixtures (uploadsrv on loopback) -------------------------------------------

from collections.abc import Awaitable, Callable  # noqa: E402
from typing import Any  # noqa: E402

from hostile_support import ServedLikeProduction  # noqa: E402
from support import Running, make_config  # noqa: E402

from uploadsrv.app import create_app  # noqa: E402


@pytest.fixture
async def start(aiohttp_client: Any, tmp_path: Path) -> Callable[..., Awaitable[Running]]:
    """Start the real app on loopback with config sections overridden, e.g. limits={...}."""

    async def factory(**sections: Any) -> Running:
        config = make_config(tmp_path, **sections)
        client = await aiohttp_client(ServedLikeProduction(create_app(config)))
        return Running(client, config)

    return factory


@pytest.fixture
def mp3(media_samples: dict[str, Path]) -> bytes:
    """A short real mp3 (ID3 tag + frames)."""
    return media_samples["mp3_id3"].read_bytes()
