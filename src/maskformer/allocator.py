"""Keep freed memory in the process for reuse (glibc ``malloc``), so tensors do not page-fault on every call.

A forward or a training step allocates and frees the same large tensors again and again. glibc serves blocks above its
mmap threshold with fresh ``mmap`` pages and gives freed memory at the top of the heap back to the kernel once it
exceeds the trim threshold; either way the next call touches new pages and the kernel zeroes each one
(``benchmarks/bench_allocator.py``: 12,000-35,000 page faults per 512x512 forward, 260,000 per R50 training step,
which then takes 12-18 % longer). ``reuse_freed_memory()`` sets ``M_MMAP_MAX=0`` (every block comes from the heap,
where freed blocks are reused) and ``M_TRIM_THRESHOLD`` to 2 GiB (freed memory stays mapped): the process keeps its
peak memory instead of returning it between calls. Values are unchanged; only where the bytes live changes.

The setting is process-wide. The optimised ``Predictor`` (``inference.accelerate``) and ``maskformer train`` call it;
``MASKFORMER_MALLOC=0`` keeps glibc's defaults. Elsewhere (not Linux, not glibc) it does nothing.
Imports nothing of the package.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

__all__ = ["reuse_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc's malloc.h parameter numbers
_M_MMAP_MAX = -4
_TRIM_BYTES = 2**31 - 1  # the largest value mallopt's int takes


@functools.cache
def reuse_freed_memory() -> bool:
    """Tune glibc's malloc once per process (see the module docstring); True when the setting is in effect."""
    done = False
    if os.environ.get("MASKFORMER_MALLOC", "") != "0" and platform.system() == "Linux":
        if platform.libc_ver()[0] == "glibc":
            try:
                mallopt = ctypes.CDLL(None).mallopt  # the C library the process already runs on
                mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
                done = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES))
            except (OSError, AttributeError):  # pragma: no cover - a glibc without mallopt
                done = False
    return done
