"""Run under ``torchrun --nproc_per_node 2``: checks DDP semantics of the criterion and the optimizer step.

1. ``average_num_masks`` on each rank equals (global number of masks) / world size.
2. The focal + dice gradient of 2 processes x batch b (DDP averages) equals 1 process x batch 2b.
3. After optimizer steps, parameters are identical on every rank.
Prints one JSON line per rank; exits non-zero on failure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import maskformer
from maskformer.build import build_criterion
from maskformer.criterion.losses import average_num_masks

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def mask_loss(criterion, outputs, targets):
    losses = criterion(outputs, targets)
    mask_terms = sum(v for k, v in losses.items() if k.startswith(("loss_mask", "loss_dice")))
    # keep the class head in the graph (with zero weight) so DDP sees every parameter used
    return mask_terms + 0.0 * sum(o["pred_logits"].sum() for o in [outputs, *outputs["aux_outputs"]])


def main() -> int:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    # FrozenBN as the original (BatchNorm statistics would depend on the per-process batch)
    cfg = maskformer.load_config(
        CONFIGS / "demo.yaml", ["model.dropout=0.0", "model.num_queries=6", "model.backbone.norm=FrozenBN"]
    )
    model = maskformer.build_model(cfg).train()
    ref = maskformer.build_model(cfg).train()
    ref.load_state_dict(model.state_dict())
    criterion = build_criterion(cfg)
    b = 2
    g = torch.Generator().manual_seed(1)
    images = torch.randn(world * b, 3, 64, 64, generator=g)
    targets = []
    for i in range(world * b):
        n = 1 + i  # unequal mask counts per rank: the normalisation must use the global count
        labels = torch.randint(0, cfg.model.num_classes, (n,), generator=g)
        masks = torch.rand(n, 64, 64, generator=g) > 0.6
        targets.append({"labels": labels, "masks": masks})
    mine = slice(rank * b, (rank + 1) * b)
    global_masks = sum(len(t["labels"]) for t in targets)
    ok = {"num_masks": average_num_masks(targets[mine], torch.device("cpu")) == global_masks / world}

    ddp = torch.nn.parallel.DistributedDataParallel(model)
    mask_loss(criterion, ddp(images[mine]), targets[mine]).backward()
    # reference: one process, the whole batch, no process group involved in the loss normalisation
    dist_state = dist.is_initialized
    dist.is_initialized = lambda: False  # make average_num_masks see a single process
    try:
        mask_loss(criterion, ref(images), targets).backward()
    finally:
        dist.is_initialized = dist_state
    worst = 0.0
    for p, q in zip(model.parameters(), ref.parameters()):
        if p.grad is None and q.grad is None:
            continue
        worst = max(worst, (p.grad - q.grad).abs().max().item() / (q.grad.abs().max().item() + 1e-12))
    ok["grad_rel_err"] = worst < 1e-4

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        losses = criterion(ddp(images[mine]), targets[mine])
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)
        opt.step()
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        ok.setdefault("params_equal", True)
        ok["params_equal"] &= all(torch.equal(gathered[0], x) for x in gathered)
    # one write per line: the ranks share the pipe, and print() writes the text and the newline separately
    sys.stdout.write(json.dumps({"rank": rank, "worst_grad_rel_err": worst, **ok}) + "\n")
    sys.stdout.flush()
    dist.destroy_process_group()
    return 0 if all(v for k, v in ok.items()) else 1


if __name__ == "__main__":
    sys.exit(main())
