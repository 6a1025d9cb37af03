"""Identifiers never reach stderr through a library's warnings (issue 25, defect 9).

pydicom warns about a non-conformant UID by quoting it: the SOP Instance UID or Study
Instance UID of a real file would be printed verbatim, and a pool's workers each printed
their own copy. Each command that reads DICOMs is run here on two copies of a real Hologic
Lorad mammogram carrying non-conformant UIDs: the UIDs are absent from stderr and the
warning is shown once, through logging, workers included."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pydicom
import pytest

REPO = Path(__file__).resolve().parents[2]
LORAD = (REPO.parent / "shared" / "testdata" / "mammo_real"
         / "lorad_selenia_burned_in_text_800x615.dcm")
BAD_SOP = ("1.2.03.4.777888999", "1.2.03.4.777888998")  # a leading zero: not conformant
BAD_STUDY = "1.2.840.ab.5555666"                        # letters: not conformant
NEEDLE = "Invalid value for VR UI"
PLACEHOLDER = "<value>"


@pytest.fixture(scope="module")
def bad_uids(tmp_path_factory) -> Path:
    """Two views of one study, both with non-conformant UIDs, from a real file."""
    if not LORAD.exists():
        pytest.skip(f"real test data not found: {LORAD}")
    root = tmp_path_factory.mktemp("bad_uids")
    (root / "in").mkdir()
    for uid, view in zip(BAD_SOP, ("CC", "MLO")):
        ds = pydicom.dcmread(LORAD)
        with warnings.catch_warnings():  # pydicom warns while we plant the values
            warnings.simplefilter("ignore")
            ds.SOPInstanceUID = uid
            ds.file_meta.MediaStorageSOPInstanceUID = uid
            ds.StudyInstanceUID = BAD_STUDY
            ds.ViewPosition = view
            ds.save_as(root / "in" / f"{view}.dcm")
    return root


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "mammoprep.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _clean(r: subprocess.CompletedProcess, what: str) -> None:
    assert r.returncode == 0, f"{what}: {r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    for uid in (*BAD_SOP, BAD_STUDY):
        assert uid not in r.stderr, f"{what} printed an identifier: {r.stderr}"
    assert r.stderr.count(NEEDLE) == 1, f"{what}: {r.stderr}"
    assert f"WARNING: pydicom: {NEEDLE}: '{PLACEHOLDER}'" in r.stderr
    assert "UserWarning" not in r.stderr and "leaked" not in r.stderr, r.stderr


def test_scrub_replaces_quoted_values_and_uids():
    from mammoprep.logs import PLACEHOLDER, scrub

    url = "Please see <https://dicom.nema.org/part05.html#table_6.2-1>"
    assert scrub(f"Invalid value for VR UI: '1.2.03.4'. {url}") == (
        f"Invalid value for VR UI: '{PLACEHOLDER}'. {url}")
    assert scrub('value "Müller^Anna" for PN') == f"value '{PLACEHOLDER}' for PN"
    assert scrub("UID 1.2.840.ab.5555666 unknown") == f"UID {PLACEHOLDER} unknown"
    assert scrub("The value length (80) exceeds the maximum length of 64") == (
        "The value length (80) exceeds the maximum length of 64")


def test_no_uid_on_stderr_of_inspect_reference_harmonize(bad_uids):
    _clean(_run(["inspect", "in"], bad_uids), "inspect")
    _clean(_run(["reference", "in", "-o", "ref.npz", "--energy", "any"], bad_uids),
           "reference")
    _clean(_run(["harmonize", "--ref", "ref.npz", "in", "-o", "h", "-j", "2"], bad_uids),
           "harmonize")


def test_no_uid_on_stderr_of_shard_and_qc_with_workers(bad_uids):
    """Two worker processes each meet the warning: it is shown once, by the parent."""
    r = _run(["shard", "in", "-o", "s", "--size", "64", "--folds", "0", "-j", "2"], bad_uids)
    _clean(r, "shard")
    assert "stored 2 images in 1 samples" in r.stdout
    _clean(_run(["qc", "in", "-o", "qc.png", "-j", "2"], bad_uids), "qc")
