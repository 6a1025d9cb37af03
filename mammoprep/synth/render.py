"""One synthetic image: pixels, masks and boxes (:func:`render_image`, a pure function of an
:class:`ImageSpec`), rendered in layers: anatomy (outline, pectoral muscle), tissue and
lesions, the detector (tone curve, background), orientation, then burned-in text and the
artefacts of :mod:`.overlays`."""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..geometry import hflip_box
from .overlays import _ArtefactRng, _film_edges, _grey_background, _skin_label, burn_labels
from .plan import VENDORS, Lesion, PatientPlan, _image_seed, _key, image_artefacts

@dataclass(frozen=True)
class ImageSpec:
    """Inputs of :func:`render_image` (a pure function of this spec)."""

    rows: int
    cols: int
    vendor: str
    laterality: str                 # 'L' (chest wall at column 0) | 'R' (at the last column)
    view: str                       # 'CC' | 'MLO'
    fgt_fraction: float             # fibroglandular fraction, 0..1
    lesions: tuple[Lesion, ...] = ()
    labels: tuple[str, ...] = ()    # burned-in text lines
    seed: int = 0
    artefacts: tuple[str, ...] = ()  # failure modes of real archives, see ARTEFACTS


@dataclass
class SynthImage:
    """Output of :func:`render_image`.

    ``pixels``: uint16 [rows, cols], MONOCHROME2 detector values in ``0..2**bits-1``;
    ``foreground``: bool [rows, cols], breast incl. skin and pectoral muscle;
    ``pectoral``: bool [rows, cols];
    ``boxes`` / ``lesion_types``: one ``[xmin, ymin, xmax, ymax]`` (exclusive ends) per lesion;
    ``text_boxes``: boxes of burned-in labels and the orientation marker.
    """

    pixels: np.ndarray
    foreground: np.ndarray
    pectoral: np.ndarray
    boxes: list[list[int]] = field(default_factory=list)
    lesion_types: list[str] = field(default_factory=list)
    text_boxes: list[list[int]] = field(default_factory=list)


def _upsample(field_: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Bilinear resize of a small float field to ``[rows, cols]`` float32 (pixel centres
    aligned)."""
    from PIL import Image

    if field_.shape == (rows, cols):
        return field_.astype(np.float32, copy=False)
    img = Image.fromarray(np.ascontiguousarray(field_, dtype=np.float32))
    return np.array(img.resize((cols, rows), Image.Resampling.BILINEAR), dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int],
                  sigma: float | tuple[float, float]) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation, float32 ``shape``."""
    from scipy.ndimage import gaussian_filter

    n = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="reflect")
    return n / max(float(n.std()), 1e-6)


def _norm_radius(rows_c: np.ndarray, cols_c: np.ndarray, g: dict) -> np.ndarray:
    """Normalised radius of the rotated breast ellipse at pixel centres (before modulation).

    ``rows_c`` [h, 1] and ``cols_c`` [1, w] are pixel-centre coordinates in full-size pixels.
    """
    dy = rows_c - np.float32(g["cy"])
    c, s = np.float32(math.cos(g["phi"])), np.float32(math.sin(g["phi"]))
    u = cols_c * c + dy * s
    u *= np.float32(1.0 / g["a"])
    np.square(u, out=u)
    v = dy * c - cols_c * s
    v *= np.float32(1.0 / g["b"])
    np.square(v, out=v)
    u += v
    return np.sqrt(u, out=u)


def _modulation(rows_c: np.ndarray, cols_c: np.ndarray, g: dict) -> np.ndarray:
    """Outline modulation factor ``m(theta)`` (around 1) at the given pixel centres."""
    dy = rows_c - np.float32(g["cy"])
    c, s = math.cos(g["phi"]), math.sin(g["phi"])
    un = (cols_c * c + dy * s) / g["a"]
    vn = (dy * c - cols_c * s) / g["b"]
    theta = np.arctan2(vn, un)
    m = np.ones_like(theta)
    for k, amp, ph in g["harmonics"]:
        m += amp * np.cos(k * theta + ph)
    return m.astype(np.float32)


def _pectoral_limit(rows_c: np.ndarray, g: dict) -> np.ndarray:
    """Column of the pectoral edge at each row (pectoral = columns left of it), L orientation."""
    frac = np.clip(1.0 - rows_c / g["ph"], 0.0, 1.0)
    return g["pw"] * frac ** g["kappa"]


def _geometry(rng: np.random.Generator, rows: int, cols: int, view: str) -> dict:
    """Random breast outline parameters (L orientation, chest wall at column 0)."""
    g: dict[str, Any] = {}
    if view == "CC":
        g.update(cy=rows * rng.uniform(0.46, 0.54), a=cols * rng.uniform(0.56, 0.76),
                 b=rows * rng.uniform(0.33, 0.42), phi=rng.uniform(-0.06, 0.06))
    else:
        g.update(cy=rows * rng.uniform(0.40, 0.47), a=cols * rng.uniform(0.56, 0.74),
                 b=rows * rng.uniform(0.46, 0.53), phi=rng.uniform(0.12, 0.26))
        g.update(pw=g["a"] * rng.uniform(0.30, 0.45), ph=rows * rng.uniform(0.38, 0.60),
                 kappa=rng.uniform(0.8, 1.25))
    g["harmonics"] = [(k, rng.uniform(0.0, 0.035) / math.sqrt(k - 1), rng.uniform(0, 2 * np.pi))
                      for k in range(2, 6)]
    g["edge"] = rng.uniform(0.10, 0.18)       # width of the thickness fall-off, normalised
    return g


def _lesion_center(g: dict, rho: float, psi: float
                   ) -> tuple[float, float]:
    """Pixel (row, col) of a lesion centre at normalised (rho, psi), L orientation."""
    un, vn = rho * math.cos(psi), rho * math.sin(psi)
    u, v = un * g["a"], vn * g["b"]
    c, s = math.cos(g["phi"]), math.sin(g["phi"])
    return g["cy"] + u * s + v * c, u * c - v * s


def _mass_field(rng: np.random.Generator, radius: float, spiculated: bool = True
                ) -> np.ndarray:
    """Mass profile in a square window, float32 in [0, 1]: irregular and (three times in
    four) spiculated, or with ``spiculated=False`` round and circumscribed (benign-looking:
    a nearly circular outline, no spicules)."""
    wobble = (0.03, 0.11) if spiculated else (0.0, 0.03)
    harmonics = [(k, rng.uniform(*wobble) / math.sqrt(k - 1), rng.uniform(0, 2 * np.pi))
                 for k in range(2, 8)]
    n_spic = int(rng.integers(5, 13)) if rng.random() < 0.75 and spiculated else 0
    spic = [(rng.uniform(0, 2 * np.pi), radius * rng.uniform(0.4, 0.9)) for _ in range(n_spic)]
    ext = radius * (1.35 + max([ln / radius for _, ln in spic], default=0.0))
    half = int(math.ceil(ext)) + 2
    yy, xx = np.ogrid[-half:half + 1, -half:half + 1]
    yy = yy.astype(np.float32)
    xx = xx.astype(np.float32)
    rho = np.hypot(yy, xx)
    theta = np.arctan2(yy, xx)
    r_theta = np.full_like(rho, radius)
    for k, amp, ph in harmonics:
        r_theta += radius * amp * np.cos(k * theta + ph)
    soft = max(0.6, 0.07 * radius)
    inside = 1.0 / (1.0 + np.exp(np.clip((rho - r_theta) / soft, -60.0, 60.0)))
    dome = np.sqrt(np.clip(1.0 - (rho / r_theta) ** 2, 0.0, 1.0))
    out = inside * (0.55 + 0.45 * dome)
    width = max(0.7, 0.06 * radius)
    for ang, length in spic:
        along = xx * math.cos(ang) + yy * math.sin(ang)
        perp = np.abs(yy * math.cos(ang) - xx * math.sin(ang))
        start = 0.8 * radius
        taper = np.clip(1.0 - (along - start) / length, 0.0, 1.0) * (along > start)
        out = np.maximum(out, 0.7 * taper * np.exp(-(perp / (width * (0.4 + taper))) ** 2))
    return out.astype(np.float32)


def _calc_field(rng: np.random.Generator, radius: float, cols: int) -> np.ndarray:
    """Calcification cluster (tiny bright dots on a denser haze, so that a cluster stays
    visible as a blob at the small inputs of CPU tests) in a square window."""
    n = int(rng.integers(8, 21))
    sd = max(0.75, 0.0035 * cols) * rng.uniform(0.8, 1.3, size=n)
    ang = rng.uniform(0, 2 * np.pi, size=n)
    dist = radius * np.sqrt(rng.uniform(0, 1, size=n)) * 0.85
    elong = rng.uniform(0.6, 1.0)
    cy_ = dist * np.sin(ang) * elong
    cx_ = dist * np.cos(ang)
    half = int(math.ceil(radius + 3 * sd.max())) + 2
    yy, xx = np.ogrid[-half:half + 1, -half:half + 1]
    yy = yy.astype(np.float32)
    xx = xx.astype(np.float32)
    out = 0.5 * np.exp(-(yy ** 2 + xx ** 2) / (radius ** 2))
    for y0, x0, s, a in zip(cy_, cx_, sd, rng.uniform(0.75, 1.0, size=n)):
        out = np.maximum(out, a * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * s * s)))
    return out.astype(np.float32)


def render_image(spec: ImageSpec) -> SynthImage:
    """Render one synthetic mammogram (pure function of ``spec``).

    The breast is a modulated, slightly rotated half-ellipse attached to the chest wall
    (column 0 for 'L', the last column for 'R'); tissue = fat + fibroglandular field
    (smoothed noise thresholded so that ``spec.fgt_fraction`` of the breast is glandular) +
    mid/fine texture, darkened towards the skin (compressed-thickness fall-off) with a
    brighter skin line; MLO views add a bright pectoral triangle at the top chest-wall corner.
    Lesions (masses, calcification clusters) are added inside the breast; text labels and a
    marker are burned into the background away from the breast. Background is exactly 0
    (or < 2 % noise for vendors with ``noisy_background``).

    Returns a :class:`SynthImage`; ``pixels`` are uint16 [rows, cols] MONOCHROME2 values.
    About 1 s for 4096 x 3328 on one core.
    """
    prof = VENDORS[spec.vendor]
    rng = np.random.default_rng(np.random.SeedSequence(_key("image", spec.seed)))
    g = _geometry(rng, spec.rows, spec.cols, spec.view)
    # anatomy and tissue, as the detector sees it: a value t in [0, 1] per pixel
    mod_low, gland_low, ds = _low_resolution_fields(rng, spec, g)
    rc, cc, rn, breast = _outline(spec, g, mod_low)
    t, mid, fine = _tissue(rng, spec, g, rn, breast, gland_low, ds)
    pectoral = _pectoral(rng, spec, g, rc, cc, mid, fine, t)
    fg = breast | pectoral
    boxes, types = _add_lesions(spec, g, rn, breast, pectoral, t)
    del rn, mid
    # the detector: tone curve and background (artefacts draw from a stream of their own)
    art = _ArtefactRng(spec.seed)
    pixels = _detector(rng, art, prof, spec, t, fine, fg)
    del t, fine
    if spec.laterality == "R":
        pixels, fg, pectoral = (np.ascontiguousarray(a[:, ::-1]) for a in (pixels, fg, pectoral))
        boxes = [list(hflip_box(b, spec.cols)) for b in boxes]
    far_right = spec.laterality != "R"
    # what is burned in: labels, the orientation marker, artefacts of real archives
    text_boxes = burn_labels(rng, spec.labels, pixels, fg, prof.maxv, far_right)
    if "skin_label" in spec.artefacts:
        box = _skin_label(art.rng, pixels, fg, prof.maxv, far_right)
        if box:
            text_boxes.append(box)
    if "film" in spec.artefacts:
        text_boxes.extend(_film_edges(art.rng, pixels, fg, prof.maxv, far_right))
    return SynthImage(pixels, fg, pectoral, boxes, types, text_boxes)


def _low_resolution_fields(rng: np.random.Generator, spec: ImageSpec, g: dict
                           ) -> tuple[np.ndarray, np.ndarray, int]:
    """(outline modulation, glandular fraction, downsampling factor ``ds``) on a grid about
    128 rows high: isotropic blobs at two scales + streaks along the breast axis (ducts
    towards the nipple) + a central prior, thresholded softly at the (1 - fraction)
    quantile of the breast."""
    rows, cols = spec.rows, spec.cols
    ds = max(1, round(rows / 128))
    lh, lw = -(-rows // ds), -(-cols // ds)
    lr = ((np.arange(lh, dtype=np.float32) + 0.5) * ds - 0.5)[:, None]
    lc = ((np.arange(lw, dtype=np.float32) + 0.5) * ds - 0.5)[None, :]
    mod_low = _modulation(lr, lc, g)
    rn_low = _norm_radius(lr, lc, g) / mod_low
    breast_low = rn_low < 1.0
    if spec.view == "MLO":
        breast_low &= ~(lc < _pectoral_limit(lr, g))
    sig = lh / 128.0
    field_ = (0.45 * _smooth_noise(rng, (lh, lw), 1.3 * sig)
              + 0.75 * _smooth_noise(rng, (lh, lw), 4.5 * sig)
              + 0.45 * _smooth_noise(rng, (lh, lw), (0.8 * sig, 4.0 * sig))
              + 1.3 * np.clip(1.0 - rn_low, 0.0, 1.0))
    vals = field_[breast_low] if breast_low.any() else field_.ravel()
    thr = float(np.quantile(vals, 1.0 - float(np.clip(spec.fgt_fraction, 0.0, 1.0))))
    soft = 0.30 * max(float(vals.std()), 1e-3)
    if "bimodal" in spec.artefacts:
        soft *= 0.15
    gland_low = 1.0 / (1.0 + np.exp(np.clip(-(field_ - thr) / soft, -60.0, 60.0)))
    return mod_low, gland_low, ds


def _outline(spec: ImageSpec, g: dict, mod_low: np.ndarray) -> tuple:
    """(row coordinates ``float32 [rows, 1]``, column coordinates ``[1, cols]``, normalised
    radius ``rn`` ``float32 [rows, cols]``, breast mask ``rn < 1``) at full resolution."""
    rc = np.arange(spec.rows, dtype=np.float32)[:, None]
    cc = np.arange(spec.cols, dtype=np.float32)[None, :]
    rn = _norm_radius(rc, cc, g)
    rn /= _upsample(mod_low, spec.rows, spec.cols)
    return rc, cc, rn, rn < 1.0


def _tissue(rng: np.random.Generator, spec: ImageSpec, g: dict, rn: np.ndarray,
            breast: np.ndarray, gland_low: np.ndarray, ds: int) -> tuple:
    """(tissue value ``t``, mid-scale texture, fine noise), each ``float32 [rows, cols]``:
    fat + glandular fraction + texture, darkened towards the skin (thickness fall-off
    ``p = s(2 - s)``, ``s = clip((1 - rn) / edge, 0, 1)``), with a brighter skin line.

    Density is not a brightness cue: the fat and glandular levels are set per image so that
    the breast's mean tissue value is a draw from one range for every fibroglandular
    fraction (``U(0.34, 0.46)``), with a glandular-minus-fat contrast from another
    (``U(0.30, 0.42)``); what grows with the fraction is the glandular area (and its
    texture), so a dense breast is a large glandular region with fat holes and a fatty one
    fat with glandular islands. The ``bimodal`` artefact keeps fixed levels (0.30 / 0.75)."""
    rows, cols = spec.rows, spec.cols
    ds2 = max(1, ds // 4)
    mid = _upsample(_smooth_noise(rng, (-(-rows // ds2), -(-cols // ds2)), 1.0), rows, cols)
    fine = rng.standard_normal((rows, cols), dtype=np.float32)
    level, contrast = rng.uniform(0.34, 0.46), rng.uniform(0.30, 0.42)
    gl = _upsample(gland_low.astype(np.float32), rows, cols)
    p = np.subtract(1.0, rn, dtype=np.float32)
    p *= np.float32(1.0 / g["edge"])
    np.clip(p, 0.0, 1.0, out=p)
    p *= 2.0 - p
    if "bimodal" in spec.artefacts:
        fat, gland = 0.30, 0.75
    else:   # mean over the breast of p * (fat + contrast * gl) = level * mean(p)
        pb = p[breast] if breast.any() else p.ravel()
        gb = gl[breast] if breast.any() else gl.ravel()
        fat = level - contrast * float((pb * gb).mean()) / max(float(pb.mean()), 1e-6)
        gland = fat + contrast
    t = gl * np.float32(gland - fat)
    t += np.float32(fat)
    t += np.float32(0.045) * mid * (np.float32(0.5) + gl)
    t += np.float32(0.008) * fine
    t *= p
    del p
    skin_w = max(1.2, 0.005 * cols) / min(g["a"], g["b"])
    t += np.float32(rng.uniform(0.16, 0.24)) * ((rn > 1.0 - skin_w) & breast)
    return t, mid, fine


def _pectoral(rng: np.random.Generator, spec: ImageSpec, g: dict, rc: np.ndarray,
              cc: np.ndarray, mid: np.ndarray, fine: np.ndarray, t: np.ndarray) -> np.ndarray:
    """MLO views: the pectoral muscle, a bright triangle at the top chest-wall corner with a
    slightly darker band along its edge, written into ``t``; its mask ``bool [rows, cols]``
    (all False for CC)."""
    rows, cols = spec.rows, spec.cols
    pectoral = np.zeros((rows, cols), dtype=bool)
    if spec.view != "MLO":
        return pectoral
    ph, pw = min(rows, int(math.ceil(g["ph"]))), min(cols, int(math.ceil(g["pw"])))
    lim = _pectoral_limit(rc[:ph], g)
    pec = cc[:, :pw] < lim
    pectoral[:ph, :pw] = pec
    base = rng.uniform(0.70, 0.80)
    pec_t = (base + 0.10 * (1.0 - cc[:, :pw] / max(g["pw"], 1.0))
             + 0.03 * mid[:ph, :pw] + 0.01 * fine[:ph, :pw]).astype(np.float32)
    pec_t -= 0.06 * np.exp(-((lim - cc[:, :pw]) / max(1.0, 0.02 * cols)) ** 2)
    t[:ph, :pw] = np.where(pec, pec_t, t[:ph, :pw])
    return pectoral


def _add_lesions(spec: ImageSpec, g: dict, rn: np.ndarray, breast: np.ndarray,
                 pectoral: np.ndarray, t: np.ndarray) -> tuple[list[list[int]], list[str]]:
    """Add each lesion of ``spec`` that fits (inside the breast, off the muscle, apart from
    the others) to ``t``; its box ``[x0, y0, x1, y1]`` (exclusive ends) and kind."""
    boxes: list[list[int]] = []
    types: list[str] = []
    taken: list[tuple[float, float, float]] = []
    for les in spec.lesions:
        lrng = np.random.default_rng(np.random.SeedSequence(_key("lesion", les.seed)))
        radius = les.size * spec.cols
        patch = (_mass_field(lrng, radius, les.spiculated) if les.kind == "mass"
                 else _calc_field(lrng, radius, spec.cols))
        placed = _place_lesion(spec, g, les, patch.shape[0] // 2, rn, pectoral, taken)
        if placed is None:
            continue
        y0, x0, y1, x1, scale = placed
        if scale != 1.0:
            patch = _upsample(patch, y1 - y0, x1 - x0)
        contrib = patch * np.float32(les.contrast)
        contrib *= breast[y0:y1, x0:x1]
        t[y0:y1, x0:x1] += contrib
        on = np.nonzero(contrib > 0.2 * les.contrast)
        if on[0].size == 0:
            continue
        boxes.append([int(x0 + on[1].min()), int(y0 + on[0].min()),
                      int(x0 + on[1].max() + 1), int(y0 + on[0].max() + 1)])
        types.append(les.kind)
        taken.append(((y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0) / 2))
    return boxes, types


def _place_lesion(spec: ImageSpec, g: dict, les: Lesion, half: int, rn: np.ndarray,
                  pectoral: np.ndarray, taken: list) -> tuple | None:
    """(y0, x0, y1, x1, scale) of the first candidate window (the planned position first,
    then others, at shrinking scales) inside the breast, off the muscle and apart from the
    lesions already ``taken``; None when none fits."""
    rows, cols = spec.rows, spec.cols
    psi0 = les.psi_cc if spec.view == "CC" else les.psi_mlo
    for scale in (1.0, 0.8, 0.6, 0.45):
        h2 = max(2, int(half * scale))
        cands = [(rho, psi) for rho in (les.rho, 0.5, 0.42, 0.58, 0.35, 0.25)
                 for psi in (psi0, 0.5 * psi0, 0.0, 0.45, -0.45, 0.8)]
        for rho, psi in cands:
            r0, c0 = _lesion_center(g, rho, psi)
            y0, x0 = int(round(r0)) - h2, int(round(c0)) - h2
            y1, x1 = y0 + 2 * h2 + 1, x0 + 2 * h2 + 1
            if y0 < 0 or x0 < 0 or y1 > rows or x1 > cols:
                continue
            win_ok = (rn[y0:y1, x0:x1] < 0.88).all() and not pectoral[
                max(0, y0 - h2 // 2):y1, max(0, x0 - h2 // 2):x1].any()
            if not win_ok:
                continue
            if any(math.hypot(r0 - tr, c0 - tc) < (h2 + th) * 0.9 for tr, tc, th in taken):
                continue
            return y0, x0, y1, x1, scale
    return None


def _detector(rng: np.random.Generator, art: _ArtefactRng, prof, spec: ImageSpec,
              t: np.ndarray, fine: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """``uint16 [rows, cols]`` detector values: the vendor's tone curve (a LUT on 14-bit
    quantised ``t``, clipped in place) on the foreground; the background 0, low noise
    (``noisy_background``) or grey (artefacts ``grey_background``, ``film``, which also
    lift the tone curve above it)."""
    maxv = prof.maxv
    n_lut = 1 << 14
    lo = prof.tone_lo + rng.uniform(-0.015, 0.015)
    hi = prof.tone_hi + rng.uniform(-0.03, 0.03)
    lut = np.round(maxv * (lo + (hi - lo) * np.linspace(0.0, 1.0, n_lut) ** prof.tone_gamma))
    lut = np.clip(lut, 1, maxv).astype(np.uint16)
    np.clip(t, 0.0, 1.0, out=t)
    t *= np.float32(n_lut - 1)
    t += np.float32(0.5)
    idx = t.astype(np.uint16)
    if prof.noisy_background:
        bg = np.abs(fine)
        bg *= np.float32(0.006 * maxv)
        np.clip(bg, 0, 0.019 * maxv, out=bg)
        bgv = bg.astype(np.uint16)
    else:
        bgv = np.uint16(0)
    if "grey_background" in spec.artefacts or "film" in spec.artefacts:
        bgv = _grey_background(art.rng, fine, maxv, "film" in spec.artefacts)
        floor = min(0.9 * maxv, float(bgv.max()) + 0.06 * maxv)
        lut = np.rint(floor + (maxv - floor) * (lut.astype(np.float64) / maxv)).astype(np.uint16)
    return np.where(fg, lut[idx], bgv).astype(np.uint16)


def to_stored(pixels: np.ndarray, vendor: str) -> np.ndarray:
    """MONOCHROME2 values -> stored values for ``vendor`` (``maxv - x`` for MONOCHROME1)."""
    prof = VENDORS[vendor]
    if prof.photometric == "MONOCHROME1":
        return (np.uint16(prof.maxv) - pixels).astype(np.uint16)
    return pixels


def image_spec(plan: PatientPlan, laterality: str, view: str,
               artefact_rate: float = 0.0) -> ImageSpec:
    """The :class:`ImageSpec` of one view of a planned patient (labels included); with
    ``artefact_rate`` > 0 some views get :func:`image_artefacts`."""
    prof = VENDORS[plan.vendor]
    breast = plan.breast(laterality)
    study = _dt.datetime.strptime(plan.identity["study_date"], "%Y%m%d")
    site = plan.identity["institution"].split(" ")[0].upper()
    labels = (f"{laterality} {view}", study.strftime(prof.date_format), site)
    return ImageSpec(plan.size[0], plan.size[1], plan.vendor, laterality, view,
                     breast.fgt_fraction, breast.lesions, labels,
                     _image_seed(plan.seed, plan.case_id, laterality, view),
                     image_artefacts(plan, laterality, view, artefact_rate))
