"""Before/after harmonisation figure (PNG): images and foreground histograms/CDFs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import save_image
from ..histogram import foreground_histogram
from ..io.dicom import read_dicom
from ..pipeline import PrepConfig, Prepared, preprocess


def _fg_hist(px: np.ndarray, bits: int) -> np.ndarray:
    h = foreground_histogram(px, bits).astype(np.float64)
    return h / max(h.sum(), 1.0)


def render_preview(file: str | Path, ref: str | Path, out: str | Path,
                   decoder: str | None = None) -> None:
    """Write a 2x2 figure: decoded image, harmonised image (text removed, background 0),
    foreground histogram before, and after against the reference (with CDFs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prep = Prepared(PrepConfig(reference=str(ref), decoder=decoder))
    before = read_dicom(file, decoder=decoder)
    after = preprocess(file, prep)
    ref_obj = prep.reference
    rb = int(ref_obj.bits)
    bb = int(before.meta.get("value_bits") or before.meta["bits_stored"])
    fig, ax = plt.subplots(2, 2, figsize=(11, 10), gridspec_kw={"height_ratios": [3, 2]})
    m = before.meta
    title = f"{m.get('manufacturer') or '?'} {m.get('model') or ''} {m.get('laterality') or ''} " \
            f"{m.get('view') or ''}".strip()
    ax[0, 0].imshow(before.pixels, cmap="gray", vmin=0, vmax=(1 << bb) - 1)
    ax[0, 0].set_title(f"before: decoded ({bb}-bit{', inverted' if m.get('inverted') else ''})")
    ax[0, 1].imshow(after.pixels, cmap="gray", vmin=0, vmax=(1 << rb) - 1)
    state = "harmonised" if after.meta.get("harmonized") else "not harmonised (energy rule)"
    ax[0, 1].set_title(f"after: text removed, {state} ({rb}-bit)")
    for a in ax[0]:
        a.axis("off")
    hb = _fg_hist(before.pixels, bb)
    ax[1, 0].plot(np.arange(1 << bb), hb, lw=0.8, color="tab:blue")
    ax[1, 0].set_title("foreground histogram before")
    ax[1, 0].set_xlabel("detector value")
    ha = _fg_hist(after.pixels, rb)
    hr = ref_obj.hist.astype(np.float64)
    hr[0] = 0
    hr /= max(hr.sum(), 1.0)
    x = np.arange(1 << rb)
    ax[1, 1].plot(x, ha, lw=0.8, color="tab:orange", label="after")
    ax[1, 1].plot(x, hr, lw=0.8, color="k", alpha=0.7, label="reference")
    twin = ax[1, 1].twinx()
    twin.plot(x, np.cumsum(ha), color="tab:orange", ls="--", lw=1)
    twin.plot(x, np.cumsum(hr), color="k", ls="--", lw=1, alpha=0.7)
    twin.set_ylabel("CDF (dashed)")
    ax[1, 1].set_title("foreground histogram after vs reference")
    ax[1, 1].set_xlabel("output value")
    ax[1, 1].legend(loc="upper left")
    fig.suptitle(f"{Path(file).name}: {title}\nremoved {after.meta.get('removed_fraction', 0):.2%}"
                 f" of non-zero pixels as burned-in text/markers")
    fig.tight_layout()
    try:
        save_image(out, lambda fh, fmt: fig.savefig(fh, format=fmt, dpi=90))
    finally:
        plt.close(fig)
