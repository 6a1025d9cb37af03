"""Shared fixtures: the real third-party DICOMs in ../shared/testdata/dicom."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MAMMOPREP_SALT", "test-salt-not-secret")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one thread per xdist worker (set before torch / Numba are imported): two workers with
    # two threads each on two cores make torch's training steps several times slower
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DICOM = (REPO.parent / "shared" / "testdata" / "dicom").resolve()


def real(name: str) -> Path:
    """Path of a real test file; skips (loudly) if ../shared is not beside the checkout."""
    path = SHARED_DICOM / name
    if not path.exists():
        pytest.skip(f"real test data not found: {path}")
    return path


@pytest.fixture(scope="session")
def shared_dicom() -> Path:
    if not SHARED_DICOM.exists():
        pytest.skip(f"real test data not found: {SHARED_DICOM}")
    return SHARED_DICOM
