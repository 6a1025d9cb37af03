"""Exam-level four-view model (``--views 4``): CC and MLO of both breasts of one study.

The exams (which breasts, labels, masking) are planned in :mod:`mammotrain.exams`; the
loader gives ``[B, 4, 1, H, W]`` (a missing side all zeros), ``label`` ``[B, 2]`` (-1 =
masked) and the breasts' uids (:func:`mammotrain.stream.collate`).

Model (:class:`FourViewClassifier`): the four images (left CC, left MLO, right CC, right MLO)
go through the shared backbone (``--independent``: one backbone for CC and one for MLO,
shared by the sides) to features ``[B, 4, F]``; per side the CC and MLO features are
concatenated (``[B, 2, 2F]``), the other side's (zeros where that side is missing) appended
as context (``[B, 2, 4F]``), and one head shared by both sides gives logits ``[B, 2, K]``
(left, right). Evaluation rows are per breast (:func:`breast_rows`; uid = the breast's key,
as in two-view), so four-view results sit beside single- and two-view results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .models import MultiViewClassifier


def side_present(x: torch.Tensor) -> torch.Tensor:
    """Exam images ``[B, 4, 1, H, W]`` -> bool ``[B, 2]`` (left, right): a side is present
    unless both its images are all zero (how the loader feeds a missing side)."""
    return x.detach().flatten(2).amax(2).reshape(x.shape[0], 2, 2).amax(2) > 0


class FourViewClassifier(MultiViewClassifier):
    """``x`` float ``[B, 4, 1, H, W]`` in [0, 1] (:data:`mammotrain.exams.SLOTS`: left CC,
    left MLO, right CC, right MLO; a missing side all zeros) -> logits float ``[B, 2, K]``
    (left, right breast).

    shared: one backbone for the four images (default) or one for the CC and one for the
    MLO images (both sides); context: each side's head input also holds the other side's
    features (``[B, 2, 4F]``, zeros where the other side is missing), else only its own
    (``[B, 2, 2F]``). The head (hidden/dropout as :class:`MultiViewClassifier`) is shared
    by the sides."""

    def __init__(self, backbone: str, num_classes: int, shared: bool = True,
                 in_chans: int = 3, img_size: int | None = None, hidden: int = 128,
                 dropout: float = 0.3, global_pool: str | None = None,
                 pretrained: str | Path | None = None, context: bool = True):
        super().__init__(backbone, num_classes, 2, shared, in_chans, img_size, hidden,
                         dropout, global_pool, pretrained)
        self.views, self.context = 4, bool(context)
        width = (2 if self.context else 1) * 2 * self.feature_dim
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 4, 1, H, W]`` -> per-image features ``[B, 4, F]`` (slot order kept)."""
        if x.ndim != 5 or x.shape[1] != 4:
            raise ValueError(f"expected exam input [B, 4, 1, H, W] (left CC, left MLO, right "
                             f"CC, right MLO), got {tuple(x.shape)}")
        b = x.shape[0]
        if self.shared:
            return self.embed(0, x.flatten(0, 1)).reshape(b, 4, -1)
        cc = self.embed(0, x[:, 0::2].flatten(0, 1)).reshape(b, 2, -1)
        mlo = self.embed(1, x[:, 1::2].flatten(0, 1)).reshape(b, 2, -1)
        return torch.stack([cc, mlo], 2).reshape(b, 4, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        sides = self.forward_features(x).reshape(b, 2, -1)  # [B, 2, 2F]
        if self.context:
            other = sides.flip(1) * side_present(x).flip(1)[..., None].to(sides.dtype)
            sides = torch.cat([sides, other], dim=2)  # [B, 2, 4F]
        return self.head(sides)


def breast_rows(logits: torch.Tensor, batch: dict[str, Any], keep_unlabelled: bool
                ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Exam outputs -> one row per imaged breast: (logits ``[N, K]``, labels int64 ``[N]``,
    breast uids). ``logits`` ``[B, 2, K]``; ``batch['label']`` ``[B, 2]`` (-1 = none) and
    ``batch['sides']`` (B lists of 2 uids, '' = missing side) as the loader gives them.
    Missing sides are dropped, unlabelled ones too unless ``keep_unlabelled``."""
    labels = batch["label"]
    idx = [(i, s) for i, pair in enumerate(batch["sides"]) for s in range(2)
           if pair[s] and (keep_unlabelled or int(labels[i, s]) >= 0)]
    ii = torch.tensor([i for i, _ in idx], dtype=torch.long)
    ss = torch.tensor([s for _, s in idx], dtype=torch.long)
    return (logits[ii.to(logits.device), ss.to(logits.device)], labels[ii, ss],
            [batch["sides"][i][s] for i, s in idx])
