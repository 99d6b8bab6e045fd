"""Training losses (OFFICIAL_SPEC §3): the MaskFormer set criterion and the per-pixel baselines' cross-entropy.

MaskFormer: per decoder layer, match queries to targets, then
  loss_ce   = cross-entropy over all queries (unmatched ones target "no object", whose class weight is eos_coef),
  loss_mask = sigmoid focal loss of the matched masks, upsampled to the target size, mean over pixels,
  loss_dice = dice loss of the same masks,
the last two summed over masks and divided by the number of target masks in the batch (averaged over processes).
Returned terms are weighted (1 / 20 / 1 by default) and summed into "loss"; aux layers get the suffixes _0.._{L-2}.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from maskformer.criterion.fused_loss import upsampled_focal_dice_loss
from maskformer.criterion.matcher import HungarianMatcher, fixed_matching
from maskformer.criterion.point_sampling import sample_mask_points

__all__ = ["PerPixelCriterion", "SetCriterion", "average_num_masks", "dice_loss", "sigmoid_focal_loss"]

Match = tuple[Tensor, Tensor]
_BASE_TERMS = ("loss_ce", "loss_mask", "loss_dice")


def sigmoid_focal_loss(
    inputs: Tensor, targets: Tensor, num_masks: float, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Sigmoid focal loss (RetinaNet), averaged over pixels, summed over masks, divided by `num_masks`.

    Args:
        inputs: [M, P] logits. targets: [M, P] in [0, 1]. alpha < 0 disables the class balancing.

    Returns:
        Scalar tensor.
    """
    prob = inputs.sigmoid()
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1).sum() / num_masks


def dice_loss(inputs: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """Dice loss with +1 smoothing: sum over masks of 1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1), / `num_masks`.

    Args:
        inputs: [M, P] logits (sigmoid applied here). targets: [M, P] in [0, 1].
    """
    prob = inputs.sigmoid().flatten(1)
    numerator = 2 * (prob * targets).sum(-1)
    denominator = prob.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def average_num_masks(targets: Sequence[Mapping[str, Tensor]], device: torch.device) -> float:
    """Targets in the batch, summed over torch.distributed processes (if initialised), / world size, clamped >= 1."""
    total = torch.tensor(float(sum(int(t["labels"].shape[0]) for t in targets)), device=device)
    world_size = 1
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
        world_size = dist.get_world_size()
    return torch.clamp(total / world_size, min=1).item()


def _stack_matched_targets(
    targets: Sequence[Mapping[str, Tensor]], matches: Sequence[Match], dtype: torch.dtype
) -> Tensor:
    """Matched target masks of all images, zero-padded at bottom/right to the largest size: [M, H, W] of `dtype`."""
    height = max(int(t["masks"].shape[-2]) for t in targets)
    width = max(int(t["masks"].shape[-1]) for t in targets)
    device = targets[0]["masks"].device
    count = sum(int(tgt.numel()) for _, tgt in matches)
    out = torch.zeros(count, height, width, dtype=dtype, device=device)
    start = 0
    for target, (_, tgt) in zip(targets, matches):
        masks = target["masks"][tgt.to(target["masks"].device)]
        out[start : start + len(tgt), : masks.shape[-2], : masks.shape[-1]] = masks
        start += len(tgt)
    return out


def _check_labels(targets: Sequence[Mapping[str, Tensor]], num_classes: int) -> None:
    """Target classes must be 0..K-1: K is the "no object" slot (a target of it would be learnt as no object) and
    values beyond it fail deep inside the loss with an index error."""
    for i, t in enumerate(targets):
        missing = [k for k in ("labels", "masks") if k not in t]
        if missing:
            raise ValueError(f"targets[{i}] has no {' or '.join(repr(k) for k in missing)}")
        labels, masks = t["labels"], t["masks"]
        if labels.ndim != 1 or masks.ndim != 3 or len(labels) != len(masks):
            raise ValueError(f"targets[{i}]: labels [N] and masks [N, H, W] expected, got labels of shape "
                             f"{list(labels.shape)} and masks of shape {list(masks.shape)}")  # fmt: skip
        if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < num_classes):
            bad = sorted({v for v in labels.tolist() if not 0 <= v < num_classes})
            raise ValueError(f"targets[{i}]['labels'] holds {bad}: class ids 0..{num_classes - 1} expected (the model "
                             f"has {num_classes} classes; {num_classes} is its 'no object')")  # fmt: skip


class SetCriterion(nn.Module):
    """The MaskFormer loss with deep supervision.

    Args:
        num_classes: K (logits have K+1 entries; index K = no object).
        matcher: assigns queries to targets (used when matching="hungarian"); default
            HungarianMatcher(cost_class=1, cost_mask=mask_weight, cost_dice=dice_weight), as the original builds it.
        weight_dict: weights by term name; must hold loss_ce/loss_mask/loss_dice, per-layer keys (loss_ce_0, ...)
            override them for one layer. Default: {loss_ce: class_weight, loss_mask: mask_weight,
            loss_dice: dice_weight}.
        eos_coef: cross-entropy weight of the no-object class.
        deep_supervision: also supervise every entry of outputs["aux_outputs"], each matched separately.
        matching: "hungarian", or "fixed" (the paper's MaskFormer-fixed ablation: target of class c <-> query c; Q = K).
        point_sample: evaluate focal/dice on `num_points` importance-sampled points per mask instead of every pixel of
            the full-resolution target (memory-light, an approximation; see criterion.point_sampling). Off by default.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        matcher: HungarianMatcher | None = None,
        weight_dict: Mapping[str, float] | None = None,
        class_weight: float = 1.0,
        mask_weight: float = 20.0,
        dice_weight: float = 1.0,
        eos_coef: float = 0.1,
        deep_supervision: bool = True,
        matching: str = "hungarian",
        point_sample: bool = False,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
    ) -> None:
        super().__init__()
        if matching not in ("hungarian", "fixed"):
            raise ValueError(f"matching must be 'hungarian' or 'fixed', got {matching!r}")
        if weight_dict is None:
            weight_dict = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
        missing = [k for k in _BASE_TERMS if k not in weight_dict]
        if missing:
            raise ValueError(f"weight_dict lacks {missing}")
        self.num_classes = num_classes
        self.matcher = (
            matcher if matcher is not None else HungarianMatcher(cost_mask=mask_weight, cost_dice=dice_weight)
        )
        self.weight_dict = dict(weight_dict)
        self.eos_coef = eos_coef
        self.deep_supervision = deep_supervision
        self.matching = matching
        self.point_sample = point_sample
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        # Not persistent: the released checkpoints carry no criterion state and the value follows from eos_coef.
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    def weight(self, name: str) -> float:
        """Weight of a term: its own entry in weight_dict, else that of its base name (loss_ce_3 -> loss_ce)."""
        if name in self.weight_dict:
            return self.weight_dict[name]
        return self.weight_dict[name.rsplit("_", 1)[0]]

    def forward(self, outputs: Mapping[str, object], targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """Weighted loss terms.

        Args:
            outputs: {"pred_logits": [B, Q, K+1], "pred_masks": [B, Q, h, w], "aux_outputs": [{same two keys}, ...]}.
            targets: B dicts {"labels": int64 [N_b], "masks": bool [N_b, H, W]} at the padded input size.

        Returns:
            {"loss_ce", "loss_mask", "loss_dice", "loss_ce_0", ..., "loss_dice_{L-2}"} (each already multiplied by its
            weight; 18 terms with 5 aux layers) and "loss" = their sum.
        """
        unweighted, _ = self.compute(outputs, targets)
        losses = {name: value * self.weight(name) for name, value in unweighted.items()}
        losses["loss"] = torch.stack(list(losses.values())).sum()
        return losses

    def compute(
        self, outputs: Mapping[str, object], targets: Sequence[Mapping[str, Tensor]]
    ) -> tuple[dict[str, Tensor], list[list[Match]]]:
        """Unweighted terms and the matchings (for parity checks and logging).

        Returns:
            (terms {name: scalar}, matches per layer [final, aux_0, ...], each a list over images of
            (query_indices, target_indices)).
        """
        layers: list[tuple[str, Mapping[str, Tensor]]] = [("", outputs)]  # type: ignore[list-item]
        if self.deep_supervision:
            aux = outputs.get("aux_outputs") or []
            layers += [(f"_{i}", layer) for i, layer in enumerate(aux)]  # type: ignore[arg-type]
        _check_labels(targets, outputs["pred_logits"].shape[-1] - 1)  # type: ignore[union-attr]
        num_masks = average_num_masks(targets, outputs["pred_logits"].device)  # type: ignore[union-attr]
        terms: dict[str, Tensor] = {}
        all_matches: list[list[Match]] = []
        for suffix, layer in layers:
            matches = self.match(layer, targets)
            all_matches.append(matches)
            terms["loss_ce" + suffix] = self.loss_labels(layer["pred_logits"], targets, matches)
            loss_mask, loss_dice = self.loss_masks(layer["pred_masks"], targets, matches, num_masks)
            terms["loss_mask" + suffix] = loss_mask
            terms["loss_dice" + suffix] = loss_dice
        return terms, all_matches

    def match(self, layer: Mapping[str, Tensor], targets: Sequence[Mapping[str, Tensor]]) -> list[Match]:
        """Query/target pairs per image for one decoder layer."""
        if self.matching == "fixed":
            num_queries = layer["pred_logits"].shape[1]
            return [fixed_matching(t["labels"], num_queries) for t in targets]
        return self.matcher(layer, targets)

    def loss_labels(self, logits: Tensor, targets: Sequence[Mapping[str, Tensor]], matches: Sequence[Match]) -> Tensor:
        """Weighted-mean cross-entropy over all B*Q queries; logits [B, Q, K+1]."""
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.long, device=logits.device)
        for b, (target, (src, tgt)) in enumerate(zip(targets, matches)):
            target_classes[b, src.to(logits.device)] = target["labels"].to(logits.device)[tgt.to(logits.device)]
        weight = self.empty_weight.to(device=logits.device, dtype=logits.dtype)
        return F.cross_entropy(logits.transpose(1, 2), target_classes, weight=weight)

    def loss_masks(
        self, pred_masks: Tensor, targets: Sequence[Mapping[str, Tensor]], matches: Sequence[Match], num_masks: float
    ) -> tuple[Tensor, Tensor]:
        """(focal, dice) of the matched masks; pred_masks [B, Q, h, w] logits, target masks [N_b, H, W]."""
        batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(matches)])
        query_idx = torch.cat([src for src, _ in matches])
        if query_idx.numel() == 0:
            zero = pred_masks.sum() * 0.0  # keeps the graph connected (DDP) when no image has a target
            return zero, zero
        src_masks = pred_masks[batch_idx.to(pred_masks.device), query_idx.to(pred_masks.device)]  # [M, h, w]
        # bool for the fused full-resolution loss (a quarter of the memory), float for point sampling
        dtype = src_masks.dtype if self.point_sample else torch.bool
        tgt_masks = _stack_matched_targets(targets, matches, dtype).to(src_masks.device)  # [M, H, W]
        if self.point_sample:
            logits, labels = sample_mask_points(
                src_masks,
                tgt_masks,
                num_points=self.num_points,
                oversample_ratio=self.oversample_ratio,
                importance_sample_ratio=self.importance_sample_ratio,
            )
        else:
            # Predictions are UPsampled to the targets' (padded input) size, as in the original; binary targets: the
            # fused upsampling + focal + dice (same values, closed-form gradient, no full-resolution float tensor)
            return upsampled_focal_dice_loss(src_masks, tgt_masks, num_masks)
        return sigmoid_focal_loss(logits, labels, num_masks), dice_loss(logits, labels, num_masks)


class PerPixelCriterion(nn.Module):
    """Cross-entropy of the per-pixel baselines (OFFICIAL_SPEC §2.7).

    Logits are bilinearly upsampled (align_corners=False) from stride 4 to the label size, then
    F.cross_entropy(reduction="mean", ignore_index=ignore_label).

    Args:
        ignore_label: label value excluded from the loss (e.g. 255).
        deep_supervision: also supervise outputs["aux_outputs"][i]["sem_logits"] (PerPixelBaseline+).
        loss_weight: multiplies every term (the original's SEM_SEG_HEAD.LOSS_WEIGHT, 1.0).
    """

    def __init__(self, *, ignore_label: int, deep_supervision: bool = True, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.ignore_label = ignore_label
        self.deep_supervision = deep_supervision
        self.loss_weight = loss_weight

    def forward(self, outputs: Mapping[str, object], targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """Loss terms.

        Args:
            outputs: {"sem_logits": [B, K, h, w], "aux_outputs": [{"sem_logits": ...}, ...] (may be empty)}.
            targets: B dicts {"sem_seg": int64 [H, W]} (same size for all images, ignore_label where unlabelled).

        Returns:
            {"loss_sem_seg", "loss_sem_seg_0", ... (weighted), "loss": their sum}.
        """
        missing = [i for i, t in enumerate(targets) if "sem_seg" not in t]
        if missing:  # (a MaskFormer's {"labels", "masks"} targets given to a per-pixel baseline's loss)
            raise ValueError(f"targets[{missing[0]}] has no 'sem_seg': the per-pixel baselines' loss takes "
                             "{'sem_seg': int64 [H, W]} targets (the label map), not labels and masks")  # fmt: skip
        shapes = {tuple(t["sem_seg"].shape) for t in targets}
        if len(shapes) != 1:
            raise ValueError(f"all sem_seg targets of a batch must have one size, got {sorted(shapes)}")
        logits = outputs["sem_logits"]
        labels = torch.stack([t["sem_seg"] for t in targets]).to(logits.device).long()  # type: ignore[union-attr]
        losses = {"loss_sem_seg": self._cross_entropy(logits, labels)}  # type: ignore[arg-type]
        if self.deep_supervision:
            for i, aux in enumerate(outputs.get("aux_outputs") or []):  # type: ignore[union-attr]
                losses[f"loss_sem_seg_{i}"] = self._cross_entropy(aux["sem_logits"], labels)
        losses["loss"] = torch.stack(list(losses.values())).sum()
        return losses

    def _cross_entropy(self, logits: Tensor, labels: Tensor) -> Tensor:
        up = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        if not bool((labels != self.ignore_label).any()):
            return up.sum() * 0.0  # mean over zero pixels would be NaN; nothing to learn from this batch
        return F.cross_entropy(up, labels, ignore_index=self.ignore_label) * self.loss_weight
