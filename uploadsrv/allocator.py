"""The C allocator's settings for the server process (glibc malloc), set once at start-up.

Every body byte passes through buffers of 256 KiB to 2 MiB on the event loop (socket
reads, aiohttp's joins, parser slices, batches). glibc serves such blocks with fresh
mmaps once a larger block has moved its adaptive threshold, and hands free heap back
to the kernel as soon as 2x that threshold sits free at the top, so an upload re-faulted
~160 MB of zeroed pages per GiB (~40,000 page faults, counted in the loop's socket
reads). Serving blocks up to 4 MiB from the heap and keeping up to 64 MiB free cut that
to a few hundred faults; curl -F 1 GiB, 10 interleaved pairs: 520 -> 582 MB/s median,
2.46 -> 2.18 CPU-s/GiB. The price is that the process may hold up to 64 MiB of freed
heap after a burst of uploads instead of returning it at once.
"""

from __future__ import annotations

import ctypes

# From glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 64 << 20


def tune_for_streaming() -> bool:
    """Apply the settings; False where the C library has no glibc `mallopt` (musl, macOS)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; setting either also fixes the thresholds for good
    # (glibc stops adapting them), which is the point.
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
