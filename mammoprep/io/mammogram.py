"""Is this file a mammogram? Decided from the evidence in its header, not from one tag.

Public archives label mammograms in different ways: RSNA's screening set has no (0008,0060)
Modality and a *Digital X-Ray Image Storage* SOP class, but an (0020,0062) Image
Laterality; CBIS-DDSM's scanned films are secondary captures with Modality ``MG``. So
:func:`mammogram_evidence` leaves a file out only on **positive evidence of something
else** (another modality, another body part, a general-radiography view, a secondary
capture nobody vouches for), and accepts a radiograph that carries some breast evidence
(laterality, a mammography view, Body Part BREAST, or a label table naming it). The first
rule that applies decides (README, "What counts as a mammogram"):

===  =============================================================  ===  ========================
n    header (``meta`` keys)                                          is   evidence string
===  =============================================================  ===  ========================
1    Modality ``MG``                                                 yes  ``modality MG``
2    SOP class in :data:`MAMMOGRAPHY_SOP_CLASSES`                    yes  ``sop class mammography``
3    Modality present, not CR / DX / RG / OT (CT, MR, US, PX, ...)   no   ``modality CT``
4    SOP class of another kind of image (:data:`OTHER_SOP_CLASSES`)  no   ``sop class CT Image
                                                                          Storage``
5    Body Part Examined present, not a breast (CHEST, HAND, ...)     no   ``cr + body part CHEST``
6    View Position of general radiography (PA, AP, LL, ...)          no   ``dx + view position PA``
7    named by a mammography label table (``named_by_table``)         yes  ``label table``
8    secondary capture SOP class with Body Part BREAST               yes  ``secondary capture +
                                                                          body part BREAST``
9    any other secondary capture                                     no   ``secondary capture not
                                                                          named by a label table``
10   Body Part Examined BREAST (or MAMMA, MAMMO...)                  yes  ``body part BREAST``
11   laterality L / R / B ((0020,0062), else (0020,0060))            yes  ``dx + image laterality``
12   a mammography view (View Position or View Code Sequence)        yes  ``dx + breast view``
13   none of these (nothing against, but no breast evidence)         no   ``dx: no laterality,
                                                                          breast view or body part``
===  =============================================================  ===  ========================

``dx`` stands for the kind of radiograph: the Modality in lower case, else ``dx`` / ``cr``
from the SOP class, else ``no modality``. Steps 1-2 keep every file the earlier rule
(Modality MG or a mammography SOP class) accepted. Step 13 is a choice: a file that says
nothing at all (no modality, no laterality, no view, no body part) is not pooled, since a
reference or a shard must not take in a chest radiograph that merely lacks tags.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import NotMammogramError

#: SOP Class UIDs of mammography images: (0008,0016) SOP Class UID, or (0002,0002) Media
#: Storage SOP Class UID in files whose data set lacks it.
MAMMOGRAPHY_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.1.2": "Digital Mammography X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "Digital Mammography X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.13.1.3": "Breast Tomosynthesis Image Storage",
    "1.2.840.10008.5.1.4.1.1.13.1.4": "Breast Projection X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.13.1.5": "Breast Projection X-Ray Image Storage - For Processing",
}

#: General radiograph SOP classes (which may hold a mammogram, as RSNA's do) -> the kind
#: named in the evidence string when (0008,0060) Modality is absent.
RADIOGRAPH_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.1": "cr",  # Computed Radiography Image Storage
    "1.2.840.10008.5.1.4.1.1.1.1": "dx",  # Digital X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1": "dx",  # Digital X-Ray Image Storage - For Processing
}

#: Secondary capture SOP classes: a mammogram only if Modality MG, Body Part BREAST or a
#: label table says so (scanned film is stored this way; so are screenshots and reports).
SECONDARY_CAPTURE_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.1": "Multi-frame Single Bit Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image Storage",
}

#: SOP classes of other kinds of image: never a mammogram, whatever else the header says.
OTHER_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.1.3": "Intra-oral X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.3.1": "Intra-oral X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image Storage",
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image Storage",
    "1.2.840.10008.5.1.4.1.1.12.1": "X-Ray Angiographic Image Storage",
    "1.2.840.10008.5.1.4.1.1.12.2": "X-Ray Radiofluoroscopic Image Storage",
    "1.2.840.10008.5.1.4.1.1.20": "Nuclear Medicine Image Storage",
    "1.2.840.10008.5.1.4.1.1.128": "Positron Emission Tomography Image Storage",
}

#: Modalities a mammogram may be filed under besides MG (absent counts too): computed and
#: digital radiography, film (RG) and "other".
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "RG", "OT"})

#: Mammography views (DICOM CID 4014 abbreviations, as :func:`mammoprep.io.dicom.view`
#: returns them from (0018,5101) View Position or the View Code Sequence).
BREAST_VIEWS = frozenset({"CC", "MLO", "ML", "LM", "LMO", "XCCL", "XCCM", "XCC", "FB", "SIO",
                          "ISO", "AT", "CV", "RCC", "LCC", "RMLO", "LMLO"})

#: View Position values of general radiography (DICOM PS3.3 C.8.11.5): not a mammogram.
RADIOGRAPHY_VIEWS = frozenset({"AP", "PA", "LL", "RL", "RLD", "LLD", "RLO", "LLO", "LAT",
                               "LATERAL"})

_MODALITY = "(0008,0060) Modality"
_SOP = "(0008,0016) SOP Class UID"
_BODY = "(0018,0015) Body Part Examined"
_VIEW = "(0018,5101) View Position"
_BREAST_TAGS = ("(0020,0062) Image Laterality, (0018,5101) View Position / View Code "
                "Sequence, (0018,0015) Body Part Examined")


class Evidence(NamedTuple):
    """A verdict with what decided it: ``evidence`` (short, stable: goes into manifests),
    and the DICOM ``tag`` and ``value`` behind it (for messages)."""

    mammogram: bool
    evidence: str
    tag: str
    value: str


def _upper(value: Any) -> str:
    return str(value or "").strip().upper()


def _is_breast(body_part: str) -> bool:
    """Body Part Examined of a breast: BREAST (the defined term), or MAMMA / MAMMO... as some
    archives write it."""
    return "BREAST" in body_part or body_part.startswith("MAMM")


def decide(meta: Mapping[str, Any], named_by_table: bool = False) -> Evidence:
    """:func:`mammogram_evidence` with the tag and value that decided (see the module's
    table). ``meta``: keys ``modality``, ``sop_class_uid``, ``body_part``, ``laterality``,
    ``view`` (as :func:`mammoprep.io.dicom.header_meta` writes them; missing = absent)."""
    modality, body = _upper(meta.get("modality")), _upper(meta.get("body_part"))
    sop = str(meta.get("sop_class_uid") or "").strip()
    view = _upper(meta.get("view"))
    if modality == "MG":
        return Evidence(True, "modality MG", _MODALITY, modality)
    if sop in MAMMOGRAPHY_SOP_CLASSES:
        return Evidence(True, "sop class mammography", _SOP, sop)
    if modality and modality not in RADIOGRAPH_MODALITIES:
        return Evidence(False, f"modality {modality}", _MODALITY, modality)
    if sop in OTHER_SOP_CLASSES:
        return Evidence(False, f"sop class {OTHER_SOP_CLASSES[sop]}", _SOP, sop)
    kind = modality.lower() or RADIOGRAPH_SOP_CLASSES.get(sop, "no modality")
    if body and not _is_breast(body):
        return Evidence(False, f"{kind} + body part {body}", f"{_MODALITY} / {_BODY}",
                        f"{modality or 'absent'} / {body}")
    if view in RADIOGRAPHY_VIEWS:
        return Evidence(False, f"{kind} + view position {view}", f"{_MODALITY} / {_VIEW}",
                        f"{modality or 'absent'} / {view}")
    if named_by_table:
        return Evidence(True, "label table", "label table", "names this file")
    if sop in SECONDARY_CAPTURE_SOP_CLASSES:
        if _is_breast(body):
            return Evidence(True, "secondary capture + body part BREAST", _BODY, body)
        return Evidence(False, "secondary capture not named by a label table", _SOP, sop)
    if _is_breast(body):
        return Evidence(True, "body part BREAST", _BODY, body)
    if _upper(meta.get("laterality")) in ("L", "R", "B"):
        return Evidence(True, f"{kind} + image laterality", "(0020,0062) Image Laterality",
                        _upper(meta.get("laterality")))
    if view in BREAST_VIEWS:
        return Evidence(True, f"{kind} + breast view", _VIEW, view)
    return Evidence(False, f"{kind}: no laterality, breast view or body part", _BREAST_TAGS,
                    "all absent")


def mammogram_evidence(meta: Mapping[str, Any], named_by_table: bool = False
                       ) -> tuple[bool, str]:
    """(is a mammogram, which evidence decided), e.g. ``(True, 'dx + image laterality')``
    or ``(False, 'cr + body part CHEST')``; the rules are the module's table.
    ``named_by_table``: a mammography label table names this file (it then counts as a
    mammogram unless its header shows it is something else: steps 3-6)."""
    got = decide(meta, named_by_table)
    return got.mammogram, got.evidence


def not_mammogram_error(meta: Mapping[str, Any], path: str | Path | None, where: str,
                        named_by_table: bool = False) -> NotMammogramError | None:
    """The :class:`NotMammogramError` for a file that is not a mammogram (naming the tag and
    value that decided, and ``where`` it is left out of), or None for a mammogram."""
    got = decide(meta, named_by_table)
    if got.mammogram:
        return None
    return NotMammogramError(
        path, f"not a mammogram ({got.evidence}), left out of {where}", tag=got.tag,
        value=got.value,
        hint="only mammograms are used: Modality MG, a mammography SOP class, or a radiograph "
             "with Image Laterality, a breast view or Body Part BREAST and nothing that says "
             "otherwise; remove the file, or correct its header if it is a mammogram")
