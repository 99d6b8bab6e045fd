"""One collective the evaluators need: an element-wise sum over all torch.distributed processes.

Works when torch.distributed is unavailable or not initialised (then it is a copy), so evaluators call it
unconditionally in ``synchronize()``.
"""

from __future__ import annotations

import numpy as np


def world_size() -> int:
    """Number of processes in the default group, 1 when torch.distributed is not initialised."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return int(dist.get_world_size())


def all_reduce_sum(array: np.ndarray) -> np.ndarray:
    """Sum ``array`` (any shape, int64 or float64) over all processes; every process receives the total.

    Returns a new array; the input is never modified. With the NCCL backend the data travels through the
    current CUDA device, as NCCL cannot reduce CPU tensors.
    """
    if world_size() == 1:
        return np.array(array, copy=True)
    import torch
    import torch.distributed as dist

    tensor = torch.from_numpy(np.array(array, copy=True))
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().numpy()
