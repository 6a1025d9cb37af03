"""Hungarian matching and the multi-task DETR loss.

Conventions (the detector's, :mod:`mammotrain.detr`): predicted and target boxes are
normalised ``(cx, cy, w, h)`` in [0, 1] of the model input; the loader's boxes are pixel
``xyxy`` at the model input (:func:`targets_from_batch` converts them, with torchvision's
``box_convert``: the one place this conversion happens on tensors).

Loss = ``cls`` (sigmoid focal loss of the image-level malignancy logit) + ``lambda`` x the
detection loss summed over the decoder's last and auxiliary layers, each
``5 L1 + 2 (1 - GIoU)`` over matched queries plus ``1 x`` objectness BCE over all queries
(matched = 1). Images without lesions are valid: every query is unmatched (objectness 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss


@dataclass(frozen=True)
class LossWeights:
    """Paper defaults: bbox (L1) 5.0, GIoU 2.0, objectness 1.0; ``det`` = lambda;
    focal loss ``gamma`` and ``alpha`` (None = no class balancing) of the classification."""

    bbox: float = 5.0
    giou: float = 2.0
    obj: float = 1.0
    cls: float = 1.0
    det: float = 1.0
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    max_targets: int = 3


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    return box_convert(b, "cxcywh", "xyxy")


def targets_from_batch(boxes: list, size: int, max_targets: int = 3,
                       device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """Loader boxes -> detector targets.

    boxes: per example a list of per-view float ``[N, 4]`` pixel xyxy arrays (the loader's
    ``batch['boxes']``; the detector is single-view, so view 0); size: model input pixels.
    Returns per example float32 ``[T, 4]`` normalised cxcywh, ``T <= max_targets`` (the largest
    boxes first), boxes with no area after clipping dropped.
    """
    out = []
    for per_view in boxes:
        b = torch.as_tensor(np.asarray(per_view[0], np.float32).reshape(-1, 4))
        b = b.clamp(0, size) / size
        wh = (b[:, 2:] - b[:, :2])
        keep = (wh > 1e-4).all(1)
        b, wh = b[keep], wh[keep]
        order = torch.argsort(wh.prod(1), descending=True, stable=True)[:max_targets]
        out.append(box_convert(b[order], "xyxy", "cxcywh").to(device))
    return out


def match_cost(pred_boxes: torch.Tensor, pred_obj: torch.Tensor, tgt: torch.Tensor,
               w: LossWeights) -> torch.Tensor:
    """Cost ``[N, T]`` of assigning N predictions (boxes ``[N, 4]`` cxcywh, objectness logits
    ``[N]``) to T targets ``[T, 4]``: ``bbox * L1 - giou * GIoU - obj * sigmoid(obj)``."""
    l1 = torch.cdist(pred_boxes, tgt, p=1)
    giou = generalized_box_iou(cxcywh_to_xyxy(pred_boxes), cxcywh_to_xyxy(tgt))
    return w.bbox * l1 - w.giou * giou - w.obj * pred_obj.sigmoid()[:, None]


class HungarianMatcher:
    """Optimal one-to-one assignment of queries to targets per image (scipy
    ``linear_sum_assignment`` on :func:`match_cost`).

    ``batched`` computes one cost matrix for the whole batch and slices it per image (as
    DETR does); unbatched computes it per image. Both give the same assignment.
    Returns per image ``(query_idx int64 [k], target_idx int64 [k])``, ``k = min(Q, T)``,
    sorted by query.
    """

    def __init__(self, weights: LossWeights = LossWeights(), batched: bool = True):
        self.w, self.batched = weights, batched

    @torch.no_grad()
    def __call__(self, pred_boxes: torch.Tensor, pred_obj: torch.Tensor,
                 targets: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        b, q = pred_obj.shape
        empty = (torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))
        if self.batched:
            sizes = [len(t) for t in targets]
            if sum(sizes) == 0:
                return [empty] * b
            cost = match_cost(pred_boxes.flatten(0, 1).float(), pred_obj.flatten().float(),
                              torch.cat(targets).float(), self.w).view(b, q, -1).cpu()
            blocks = [c[i] for i, c in enumerate(cost.split(sizes, -1))]
        else:
            blocks = [match_cost(pred_boxes[i].float(), pred_obj[i].float(), t.float(),
                                 self.w).cpu() if len(t) else None
                      for i, t in enumerate(targets)]
        out = []
        for c in blocks:
            if c is None or c.shape[1] == 0:
                out.append(empty)
                continue
            qi, ti = linear_sum_assignment(c.numpy())
            out.append((torch.as_tensor(qi, dtype=torch.int64),
                        torch.as_tensor(ti, dtype=torch.int64)))
        return out


class DetrCriterion:
    """Named losses of the multi-task DETR; ``__call__(outputs, batch, size)`` returns
    ``{'loss', 'cls', 'bbox', 'giou', 'obj'}`` (``loss`` is the weighted total; the parts
    are unweighted and summed over decoder layers)."""

    def __init__(self, weights: LossWeights = LossWeights(), batched: bool = True):
        self.w = weights
        self.matcher = HungarianMatcher(weights, batched)

    def layer_losses(self, pred_boxes: torch.Tensor, pred_obj: torch.Tensor,
                     targets: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """L1, 1 - GIoU (sums over matched pairs / number of targets) and objectness BCE
        (mean over all queries) of one decoder layer."""
        idx = self.matcher(pred_boxes, pred_obj, targets)
        n = max(sum(len(t) for t in targets), 1)
        bi = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(idx)]).to(
            pred_boxes.device)
        qi = torch.cat([q for q, _ in idx]).to(pred_boxes.device)
        src = pred_boxes[bi, qi].float()
        tgt = torch.cat([t[j.to(t.device)] for t, (_, j) in zip(targets, idx)]).float() \
            if len(qi) else src.new_zeros((0, 4))
        obj_target = torch.zeros_like(pred_obj, dtype=torch.float32)
        obj_target[bi, qi] = 1.0
        obj = F.binary_cross_entropy_with_logits(pred_obj.float(), obj_target)
        if len(qi) == 0:
            zero = pred_boxes.sum() * 0.0
            return {"bbox": zero, "giou": zero, "obj": obj}
        l1 = F.l1_loss(src, tgt, reduction="sum") / n
        giou = torch.diag(generalized_box_iou(cxcywh_to_xyxy(src), cxcywh_to_xyxy(tgt)))
        return {"bbox": l1, "giou": (1 - giou).sum() / n, "obj": obj}

    def __call__(self, outputs: dict, batch: dict, size: int) -> dict[str, torch.Tensor]:
        logits = outputs["logits"]
        dev = logits.device
        targets = targets_from_batch(batch["boxes"], size, self.w.max_targets, dev)
        y = batch["label"].to(dev).float().view(-1, 1)
        cls = sigmoid_focal_loss(logits.float(), y, alpha=-1 if self.w.focal_alpha is None
                                 else self.w.focal_alpha, gamma=self.w.focal_gamma,
                                 reduction="mean")
        parts = {"bbox": 0.0, "giou": 0.0, "obj": 0.0}
        for layer in [outputs, *outputs.get("aux", [])]:
            for k, v in self.layer_losses(layer["pred_boxes"], layer["pred_obj"],
                                          targets).items():
                parts[k] = parts[k] + v
        det = self.w.bbox * parts["bbox"] + self.w.giou * parts["giou"] + self.w.obj * parts["obj"]
        return {"loss": self.w.cls * cls + self.w.det * det, "cls": cls, **parts}
