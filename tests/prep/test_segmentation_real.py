"""Breast segmentation on every real mammogram we have (../shared/testdata/mammo_real and
the MG files in ../shared/testdata/dicom), checked with invariants computed independently
of the implementation (global percentile levels + scipy connected components), plus the
hand-checked chest-wall side of each image (read off the QC sheet), and the synthetic
failure modes of real archives (``mammoprep synth`` artefacts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from mammoprep.io.dicom import read_dicom
from mammoprep.segmentation.foreground import remove_burned_in

from ..conftest import REPO

MAMMO_REAL = (REPO.parent / "shared" / "testdata" / "mammo_real").resolve()
DICOM = (REPO.parent / "shared" / "testdata" / "dicom").resolve()

#: chest-wall side of every real mammogram, checked by eye on `mammoprep qc`'s sheet
SIDES = {
    "DXm_2_25_102225650577760012443884776983328874638.DCM": "left",
    "DXm_2_25_104625202764978067155026670894285635386.DCM": "right",
    "DXm_2_25_105740110712269762199814895950720578890.DCM": "right",
    "DXm_2_25_108230795280146909138556370364240885876.DCM": "left",
    "DXm_2_25_108645011105767518722872724526265539868.DCM": "left",
    "DXm_2_25_112036386358992746609385454703349551744.DCM": "right",
    "DXm_2_25_114605502330206081390757163180312106015.DCM": "right",
    "DXm_2_25_117798795405113153898471759402848658766.DCM": "right",
    "DXm_2_25_136342668529124084318567234809985401338.DCM": "left",
    "DXm_2_25_139688330956310900376892844148884798019.DCM": "right",
    "DXm_2_25_148535213378219511932982336012511865035.DCM": "left",
    "DXm_2_25_19348046952274640330301484335531011370.DCM": "right",
    "DXm_2_25_211664973343346112565406060344196890212.DCM": "left",
    "DXm_2_25_220874357194863332017007959164529521163.DCM": "right",
    "DXm_2_25_232943412558934775736945199238558320886.DCM": "right",
    "lorad_selenia_burned_in_text_800x615.dcm": "left",
    "fodicom_GH133_GE_SenographeEssential.dcm": "right",
    "wg04_MG1_J2KI.dcm": "left",
}


def _path(name: str) -> Path:
    p = MAMMO_REAL / name if (MAMMO_REAL / name).exists() else DICOM / name
    if not p.exists():
        pytest.skip(f"real test data not found: {p}")
    return p


def test_every_real_mammogram_is_listed():
    if not MAMMO_REAL.exists():
        pytest.skip("real test data not found")
    found = {p.name for p in MAMMO_REAL.iterdir() if p.suffix.lower() == ".dcm"}
    assert found <= set(SIDES), f"new real images without a hand-checked side: {found - set(SIDES)}"


def _reference_breast(px: np.ndarray, side: str, bg: float) -> tuple[np.ndarray, np.ndarray]:
    """Independent coarse masks at 1/8 resolution: ``core`` = pixels well above the
    background (half-way to the tissue level next to the chest wall) in the largest such
    component touching the chest-wall edge; ``halo`` = everything within 3 % of the width of any pixel a quarter
    of the way up from the background."""
    s = px[::8, ::8].astype(np.float64)
    C = s.shape[1]
    band = s[:, : C // 10] if side == "left" else s[:, -(C // 10):]
    tissue = np.median(band[band > bg]) if (band > bg).any() else s.max()
    high = s > bg + 0.5 * (tissue - bg)
    lab, n = ndi.label(high)
    edge = lab[:, 0] if side == "left" else lab[:, -1]
    ids = np.unique(edge[edge > 0])
    # the breast: the largest bright component at the chest wall (a fold of the belly or
    # the other side of the body may touch the chest-wall edge too, and is not breast)
    sizes = ndi.sum(high, lab, ids) if len(ids) else []
    core = lab == ids[int(np.argmax(sizes))] if len(ids) else np.zeros_like(high)
    some = s > bg + 0.25 * (tissue - bg)
    halo = ndi.binary_dilation(some, iterations=max(2, int(0.03 * C)))
    return core, halo


@pytest.mark.parametrize("name", sorted(SIDES))
def test_real_breast_kept_nothing_far_outside(name):
    rec = read_dicom(_path(name))
    px = rec.pixels
    clean, info = remove_burned_in(px)
    assert info["chest_wall"] == SIDES[name]
    assert info["qc"] == "ok", info["qc_reason"]
    core, halo = _reference_breast(px, SIDES[name], info["background_level"])
    kept = clean[::8, ::8] > 0
    if info["overlay_pixels"]:  # burned-in text on the breast is removed on purpose
        core &= ~ndi.binary_dilation(px[::8, ::8] == px.max(), iterations=1)
    k = max(1, int(0.01 * min(core.shape)))  # film edges along the image border go
    core[:k] = core[-k:] = False
    core[:, :k] = core[:, -k:] = False
    # every clearly bright pixel connected to the chest wall is kept (burned-in text on the
    # breast, a few strokes, may go)
    assert kept[core].mean() > 0.98, kept[core].mean()
    # nothing kept beyond a small margin outside the skin line
    assert (kept & ~halo).sum() <= 0.002 * kept.size
    # the kept region is not background: noisy backgrounds stay out
    if info["background_level"] > 0:
        nearbg = px[::8, ::8] <= info["background_level"] + 3 * info["background_sigma"]
        assert (kept & nearbg).sum() <= 0.01 * kept.sum()


def test_real_burned_in_patient_text_removed():
    """The LORAD image carries patient details burned in over the breast (saturated
    text, rows 470-560) and a view label; neither survives."""
    px = read_dicom(_path("lorad_selenia_burned_in_text_800x615.dcm")).pixels
    clean, info = remove_burned_in(px)
    text = px == px.max()
    assert text.sum() > 1000
    assert (clean[text] == 0).all()
    assert info["overlay_pixels"] >= text[clean == 0].sum() * 0.5


@pytest.mark.parametrize("name", ["DXm_2_25_108230795280146909138556370364240885876.DCM",
                                  "DXm_2_25_211664973343346112565406060344196890212.DCM",
                                  "DXm_2_25_114605502330206081390757163180312106015.DCM",
                                  "wg04_MG1_J2KI.dcm"])
def test_real_view_labels_removed(name):
    """Bright blobs away from the chest wall (view labels, film labels): components of
    pixels half-way from the background to the tissue level that touch neither the
    chest-wall edge nor the breast component, and cover under 2 % of the image; all 0."""
    px = read_dicom(_path(name)).pixels
    clean, info = remove_burned_in(px)
    bg = info["background_level"]
    s = px[::4, ::4].astype(np.float64)
    C = s.shape[1]
    band = s[:, : C // 10] if SIDES[name] == "left" else s[:, -(C // 10):]
    tissue = np.median(band[band > bg])
    lab, n = ndi.label(s > bg + 0.5 * (tissue - bg), structure=np.ones((3, 3), bool))
    edge = lab[:, 0] if SIDES[name] == "left" else lab[:, -1]
    at_wall = set(np.unique(edge)) - {0}
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    kept = clean[::4, ::4] > 0
    # the breast as the filled component at the chest wall of a lower level: blobs inside
    # it (calcifications, dense spots) are tissue, not labels
    low, _ = ndi.label(s > bg + 0.15 * (tissue - bg), structure=np.ones((3, 3), bool))
    wall = np.unique(low[:, 0] if SIDES[name] == "left" else low[:, -1])
    wall = wall[wall > 0]
    areas = ndi.sum(np.ones_like(s), low, wall)
    breast = ndi.binary_fill_holes(low == wall[int(np.argmax(areas))])
    labels = [i for i in range(1, n + 1)
              if i not in at_wall and 20 <= sizes[i] < 0.02 * s.size
              and not breast[lab == i].any()]
    assert labels, "each of these images has a burned-in label"
    for i in labels:
        assert not kept[lab == i].any(), f"label component {i} ({sizes[i]} px) kept"


# ------------------------------------------------------------------ synthetic artefacts

ARTEFACT_CASES = [
    (("grey_background",), "L", "CC", 0.3),
    (("bimodal", "grey_background"), "R", "MLO", 0.85),
    (("film",), "L", "MLO", 0.5),
    (("film", "bimodal"), "R", "CC", 0.8),
    (("skin_label",), "L", "CC", 0.3),
    (("skin_label", "grey_background"), "R", "MLO", 0.4),
]


@pytest.mark.parametrize("case", range(len(ARTEFACT_CASES)))
def test_synthetic_failure_modes(case):
    from mammoprep.synth import VENDORS, ImageSpec, render_image

    art, lat, view, fgt = ARTEFACT_CASES[case]
    spec = ImageSpec(1024, 832, sorted(VENDORS)[case % 5], lat, view, fgt, (),
                     ("ANON 01/02/2020", f"{lat} {view}"), seed=case, artefacts=art)
    im = render_image(spec)
    clean, info = remove_burned_in(im.pixels)
    assert info["qc"] == "ok", info["qc_reason"]
    assert info["chest_wall"] == ("left" if lat == "L" else "right")
    kept = (clean[im.foreground] == im.pixels[im.foreground]).mean()
    assert kept >= 0.99, kept
    for x0, y0, x1, y1 in im.text_boxes:
        box = clean[y0:y1, x0:x1]
        # labels and film edges go; a label touching the skin keeps at most its contact rim
        assert (box > 0).mean() <= 0.05, (art, (x0, y0, x1, y1), (box > 0).mean())
    if "grey_background" in art or "film" in art:
        assert info["background_level"] > 0.05 * (2 ** 12 - 1)
    far = ~ndi.binary_dilation(im.foreground, iterations=12)
    assert (clean[far] > 0).mean() < 0.002


# --- scanned film (CBIS-DDSM): film-base strips along the chest wall (chestwall.py) -----

FILM = (REPO.parent / "shared" / "testdata" / "film").resolve()


@pytest.fixture(scope="module", params=["CC", "MLO"])
def film(request):
    """``(view, pixels, clean, info)`` of a CBIS-DDSM film (4432x2864 CC, 4464x2848 MLO,
    chest wall on the left; SOURCES.tsv beside them)."""
    p = FILM / f"Mass-Test_P_00173_LEFT_{request.param}.dcm"
    if not p.exists():
        pytest.skip(f"real test data not found: {p}")
    px = read_dicom(p).pixels
    clean, info = remove_burned_in(px)
    return request.param, px, clean, info


#: Rows (stored pixels) of the film-base strips, measured on the masks before the fix: the
#: CC's strips ran along the wall over rows 0-712 and 3872-4432 (columns 0-735), the
#: MLO's over rows 3792-4464 (columns 0-647); the breast meets the wall between rows
#: ~720 and ~3900 (CC) and from row 0 (pectoral muscle) to ~3900 (MLO). Margins >= 110 rows.
FILM_BACKGROUND_ROWS = {"CC": [(0, 600), (4000, None)], "MLO": [(4020, None)]}


def test_film_base_at_the_chest_wall_is_background(film):
    view, px, clean, info = film
    for r0, r1 in FILM_BACKGROUND_ROWS[view]:
        assert not clean[r0:r1].any(), f"{view}: film base kept in rows {r0}:{r1}"
    assert info["qc"] == "ok", info["qc_reason"]
    assert info["qc_measures"]["wall_strip"] < 0.5


def test_film_breast_kept(film):
    view, px, clean, info = film
    assert (clean[1800:2600, :800] > 0).all()  # the breast's centre, next to the wall
    bright = np.zeros(px.shape, bool)
    bright[:, :1600] = px[:, :1600] > 15000  # tissue (the scanner label lies further right)
    assert (clean[bright] > 0).mean() > 0.995
    if view == "MLO":
        assert (clean[:300, :200] > 0).all()  # the pectoral muscle at the top stays
