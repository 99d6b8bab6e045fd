"""Process-wide settings that the ``maskformer`` command applies at start-up (never on import of the library).

``keep_freed_memory()``: glibc's malloc serves large blocks (activations of a few MB and up) with ``mmap`` and
returns them to the kernel when freed, so every forward pass page-faults its activations in again and the kernel
zeroes those pages. Raising the mmap and trim thresholds keeps freed blocks in the heap for reuse; the process
keeps its peak memory instead of returning it between passes. Effect on this project's machine: the run records
(``git show 3cea04c:benchmarks/RESULTS.md``; ``maskformer benchmark`` with and without
``MASKFORMER_DEFAULT_MALLOC=1``, which keeps the default behaviour).
Linux/glibc only. ``benchmarks/compare_transformers.py`` does not call it: both libraries are compared on the default
allocator.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["channels_last", "emulated_bf16", "keep_freed_memory", "set_tf32"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Apply the malloc settings above; True when applied (Linux with glibc, not disabled by the environment)."""
    if os.environ.get("MASKFORMER_DEFAULT_MALLOC") or os.environ.get("MASKFORMER_MALLOC") == "0":
        return False  # (MASKFORMER_MALLOC=0: maskformer/allocator.py's opt-out, which turns this off too)
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process runs on (find_library ran a subprocess)
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))


def set_tf32(enabled: bool) -> None:
    """TensorFloat-32 for CUDA matrix products and cuDNN convolutions (``train.tf32``). Off = exact fp32, as the
    original trained on V100s; PyTorch's own defaults differ between matmul (off) and cuDNN (on), so both are set.
    Called by training and evaluation; no effect on CPUs."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)


def emulated_bf16(device: str) -> bool:
    """Whether bfloat16 autocast on ``device`` would be emulated: a CPU without bf16 instructions (AVX-512 BF16 or
    AMX; e.g. an AVX2-only AMD EPYC), where torch runs it slower than fp32 (``train.amp=bf16`` says so in a note)."""
    import torch

    if torch.device(device).type != "cpu":
        return False
    try:
        return not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - a torch without the query
        return True


def channels_last(setting: bool | str, device: str) -> bool:
    """Whether training runs in channels-last (NHWC) memory (``train.channels_last``; same arithmetic either way).
    ``"auto"``: yes, except on a CPU with AVX2 but no AVX-512 (e.g. an AMD EPYC Zen 3), where oneDNN's NCHW kernels
    made the R50 step 4-8 % faster in three runs (docs/performance.md, run 19); on AVX-512 CPUs NHWC is the faster."""
    if setting != "auto":
        return bool(setting)
    import torch

    if torch.device(device).type != "cpu":
        return True
    return torch.backends.cpu.get_cpu_capability() != "AVX2"
