"""Host memory: peak resident set size, and handing memory freed by the compiler back to the OS."""

from __future__ import annotations

import ctypes
import resource
import sys


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def current_rss_mib() -> float:
    """Current resident set size in MiB (Linux; the peak elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mib()


def release_freed_memory() -> None:
    """Return the allocator's free pages to the OS (glibc `malloc_trim`; a no-op elsewhere).

    XLA's compiler frees over a gigabyte of working memory after compiling a generation, but
    glibc keeps it mapped; trimming once after compilation drops the run's resident size to
    what the program actually holds.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
