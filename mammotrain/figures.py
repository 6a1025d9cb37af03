"""Figures of test examples: Grad-CAM grids (classification) and predicted vs true boxes
(detection). matplotlib (heavy, only needed for figures) is imported when one is drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .gradcam import gradcam
from .stream import EpochLoader, ShardStream


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_gradcam(model, cfg, examples, path: Path, device, classes: Sequence[str]) -> None:
    """Grid figure: one row per example, per view the input and the Grad-CAM overlay
    (target: the predicted class), lesion boxes (from the shard JSON) in green; ``classes``:
    the task's class names."""
    if not examples:
        return
    stream = ShardStream(cfg.shards, examples, cfg.preprocess(), train=False)
    batch = next(iter(EpochLoader(stream, len(examples), workers=0, drop_last=False)))
    cams, probs = gradcam(model, batch["image"].to(device))
    imgs = batch["image"][:, :, 0].numpy()  # [B, V, S, S] in [0, 1]
    plt = pyplot()
    from matplotlib.patches import Rectangle

    b, v = cams.shape[:2]
    fig, axes = plt.subplots(b, 2 * v, figsize=(2.2 * 2 * v, 2.3 * b), dpi=100, squeeze=False)
    views = examples[0].views
    for i in range(b):
        lab = int(batch["label"][i])
        pred = int(np.argmax(probs[i]))
        for j in range(v):
            img = imgs[i, j]
            img = (img - img.min()) / max(img.max() - img.min(), 1e-6)
            for k, ax in enumerate(axes[i, 2 * j:2 * j + 2]):
                ax.imshow(img, cmap="gray")
                if k == 1:
                    ax.imshow(cams[i, j], cmap="jet", alpha=0.4, vmin=0, vmax=1)
                for bx in batch["boxes"][i][j]:
                    ax.add_patch(Rectangle((bx[0], bx[1]), bx[2] - bx[0], bx[3] - bx[1],
                                           fill=False, ec="lime", lw=1))
                ax.set_axis_off()
            axes[i, 2 * j].set_title(f"{batch['key'][i][:8]} {views[j] if len(views) > j else ''}"
                                     f" y={classes[lab]}", fontsize=6)
            axes[i, 2 * j + 1].set_title(f"Grad-CAM pred={classes[pred]} "
                                         f"p={probs[i, pred]:.2f}", fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_detections(cfg, examples, rows: dict[str, dict[str, Any]], path: Path,
                    max_boxes: int = 3, batch: dict[str, Any] | None = None) -> None:
    """Grid figure of test images at the model input: true boxes (green) and the
    ``max_boxes`` highest-objectness predicted boxes (red, with their score); the title
    gives the label and the malignancy probability. ``rows``: uid -> prediction row.
    ``batch``: the images as a loader batch (default: read ``examples`` from the shards)."""
    if not examples:
        return
    if batch is None:
        stream = ShardStream(cfg.shards, examples, cfg.preprocess(), train=False)
        batch = next(iter(EpochLoader(stream, len(examples), workers=0, drop_last=False)))
    imgs = batch["image"][:, 0, 0].numpy()
    plt = pyplot()
    from matplotlib.patches import Rectangle

    n = len(imgs)
    cols = min(n, 4)
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(2.6 * cols, 2.8 * nrows), dpi=110,
                             squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, uid in enumerate(batch["uid"]):
        ax = axes.flat[i]
        r = rows[uid]
        img = imgs[i]
        ax.imshow((img - img.min()) / max(img.max() - img.min(), 1e-6), cmap="gray")
        for bx in batch["boxes"][i][0]:
            ax.add_patch(Rectangle((bx[0], bx[1]), bx[2] - bx[0], bx[3] - bx[1], fill=False,
                                   ec="lime", lw=1.2))
        for bx, sc in list(zip(r.get("boxes") or [], r.get("box_scores") or []))[:max_boxes]:
            ax.add_patch(Rectangle((bx[0], bx[1]), bx[2] - bx[0], bx[3] - bx[1], fill=False,
                                   ec="red", lw=1.0, ls="--"))
            ax.text(bx[0], max(bx[1] - 2, 0), f"{sc:.2f}", color="red", fontsize=5)
        ax.set_title(f"{r['key'][:8]} {r['view']} y={r['label']} p={r['score']:.2f}",
                     fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
