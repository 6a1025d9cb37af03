"""The segmentation quality measures on every real mammogram of the shared test data.

    NUMBA_CACHE_DIR=.numba_cache .venv/bin/python benchmarks/segmentation_real.py [DIR...]

For each mammogram (Modality MG or a mammography SOP class; default folders
``../shared/testdata/mammo_real`` and ``../shared/testdata/dicom``): the verdict and the four
measures the quality gate tests (``foreground.qc_verdict``: bright area removed, touch of
the far side, kept region above the threshold, kept region of the image), and the
background level as a fraction of the chest-wall tissue level (``BG_MAX_TISSUE_RATIO``
treats a far band above 0.5 of it as tissue). Then the range of each over the images the
gate passes, the figures the README's QC table quotes. Not a speed benchmark: it shows how
far the real images sit from each limit.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "testdata"


def main() -> None:
    from mammoprep.io.dicom import read_dicom
    from mammoprep.io.header import read_header
    from mammoprep.io.paths import iter_dicom_paths
    from mammoprep.errors import MammoprepError
    from mammoprep.segmentation.foreground import _plan, remove_burned_in
    from mammoprep.harmonise.reference import is_mammogram

    dirs = sys.argv[1:] or [str(ROOT / "mammo_real"), str(ROOT / "dicom")]
    names = ("bright_removed", "far_touch", "above", "breast_fraction")
    rows = []
    print("| image | qc | bright removed | far touch | above threshold | kept region | "
          "background / tissue |\n|---|---|---|---|---|---|---|")
    for path in iter_dicom_paths(dirs):
        try:
            if not is_mammogram(read_header(path)):
                continue
            px = read_dicom(path).pixels
            _, info = remove_burned_in(px)
            th = _plan(px).threshold
        except MammoprepError as err:
            print(f"| {Path(path).name} | {err.kind} | | | | | |")
            continue
        m = info["qc_measures"]
        ratio = None if th.zero_padded or not th.foreground else th.background / th.foreground
        rows.append((info["qc"], m, ratio))
        print(f"| {Path(path).name} | {info['qc']} | "
              + " | ".join(f"{m[k]:.1%}" for k in names)
              + f" | {'zero padding' if ratio is None else f'{ratio:.2f}'} |")
    ok = [r for r in rows if r[0] == "ok"]
    print(f"\n{len(ok)} of {len(rows)} mammograms pass the gate; over those:")
    for k in names:
        vals = [m[k] for _, m, _ in ok]
        print(f"- {k}: {min(vals):.1%} - {max(vals):.1%}")
    ratios = [r for _, _, r in ok if r is not None]
    if ratios:
        print(f"- background / tissue (grey backgrounds, {len(ratios)} images): "
              f"{min(ratios):.2f} - {max(ratios):.2f}")


if __name__ == "__main__":
    main()
