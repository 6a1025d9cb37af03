"""A full-field, breast-like 14-bit test image for the benchmarks (no files needed)."""

from __future__ import annotations

import numpy as np


def breast_image(rows: int = 4096, cols: int = 3328, bits: int = 14, seed: int = 0) -> np.ndarray:
    """``uint16 [rows, cols]``: a half-ellipse breast on the left (chest wall at column 0)
    with smooth tissue texture and quantum noise, exact-zero background, and one bright
    rectangular label in the background. About 60% foreground."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    cy, ry, rx = rows / 2, rows * 0.47, cols * 0.78
    r = np.sqrt(((y - cy) / ry) ** 2 + (x / rx) ** 2)
    inside = r < 1.0
    small = rng.normal(size=(rows // 64 + 1, cols // 64 + 1)).astype(np.float32)
    texture = np.kron(small, np.ones((64, 64), np.float32))[:rows, :cols]
    top = 2 ** bits - 1
    thickness = np.sqrt(np.clip(1 - r ** 2, 0, 1))
    val = top * (0.25 + 0.45 * thickness + 0.05 * texture) + rng.normal(0, top * 0.01,
                                                                         size=(rows, cols))
    img = np.where(inside, np.clip(val, 1, top), 0).astype(np.uint16)
    img[rows // 20: rows // 20 + 120, cols - 700: cols - 200] = top  # burned-in label
    return img
