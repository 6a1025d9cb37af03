"""Shared fixtures: the real third-party DICOMs in ../shared/testdata/dicom."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
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


@contextmanager
def deadline(seconds: int = 30):
    """Turn a hang into a test failure (SIGALRM raises TimeoutError) instead of a stuck
    suite."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"blocked for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


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


class CohortFactory:
    """Synthetic cohorts (``mammoprep.synth.generate_cohort``), each built once per session
    per distinct argument set, below the session's base temporary directory.

    A cohort is shared by every test (and test module) that asks for the same arguments:
    treat it as read-only; a test that must change files copies the cohort first.
    """

    def __init__(self, base: Path) -> None:
        self._base = base
        self._built: dict[tuple, tuple[Path, dict]] = {}

    def build(self, patients: int, seed: int, size: tuple[int, int] | None = None,
              artefacts: float = 0.0) -> tuple[Path, dict]:
        """(cohort root, generate_cohort's summary); size None is the generator's default."""
        key = (patients, seed, tuple(size) if size is not None else None, artefacts)
        if key not in self._built:
            from mammoprep.synth import generate_cohort

            name = f"cohort-p{patients}-s{seed}" + (f"-{size[0]}x{size[1]}" if size else "")
            root = self._base / (name + (f"-a{artefacts:g}" if artefacts else ""))
            kw = {"size": tuple(size)} if size is not None else {}
            summary = generate_cohort(root, patients=patients, seed=seed, artefacts=artefacts,
                                      **kw)
            self._built[key] = (root, summary)
        return self._built[key]

    def __call__(self, patients: int, seed: int, size: tuple[int, int] | None = None,
                 artefacts: float = 0.0) -> Path:
        return self.build(patients, seed, size, artefacts)[0]


@pytest.fixture(scope="session")
def make_cohort(tmp_path_factory) -> CohortFactory:
    """``make_cohort(patients, seed, size=None, artefacts=0.0)`` -> root of a synthetic cohort
    built once per session per argument set (read-only: copy it before changing files)."""
    return CohortFactory(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def cohort(request, make_cohort) -> Path:
    """The synthetic cohort the requesting test module describes in its module-level
    ``COHORT`` (the keyword arguments of ``make_cohort``), shared read-only."""
    spec = getattr(request.module, "COHORT", None)
    if spec is None:
        raise pytest.UsageError(f"{request.module.__name__} uses the `cohort` fixture without "
                                "a module-level COHORT = dict(patients=..., seed=..., size=...)")
    return make_cohort(**spec)


# ----------------------------------------------------------- training shards (mammotrain)
# Made with the real `mammoprep` commands once per session (per xdist worker), shared by the
# mammotrain tests and the shard readers' tests.

BIN = Path(sys.executable).parent
_CACHE: dict[str, Path] = {}


def mammoprep(*args: str) -> None:
    """Run the real ``mammoprep`` command; fail with its output if it fails."""
    exe = BIN / "mammoprep"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mammoprep.cli"]
    env = {**os.environ, "MAMMOPREP_SALT": "test-salt-not-secret", "NUMBA_NUM_THREADS": "1"}
    r = subprocess.run(cmd + list(args), capture_output=True, text=True, env=env)
    assert r.returncode == 0, f"mammoprep {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"


def build(root: Path, name: str, patients: int, seed: int, size: int, folds: int = 5,
          per_shard: int = 8, harmonized: bool = False, synth_size: str = "512x416",
          labels: str = "lumina") -> Path:
    """``mammoprep synth`` + (``reference``) + ``shard``; cached per process by ``name``.
    The cohort is shared by every build with the same ``(patients, seed)``. ``labels``:
    'lumina' (the spreadsheets: no boxes) or 'csv' (synth's flat table, with boxes)."""
    if name in _CACHE:
        return _CACHE[name]
    cohort = root / f"cohort-{patients}-{seed}-{synth_size}"
    out = root / name
    if not (out / "images.parquet").exists():
        if not cohort.exists():
            mammoprep("synth", str(cohort), "--patients", str(patients), "--seed", str(seed),
                      "--size", synth_size, "-j", "2")
        extra = []
        if harmonized:  # reference pooled from the cohort's low-energy images
            mammoprep("reference", str(cohort), "-o", str(root / f"{name}-ref.npz"))
            extra = ["--ref", str(root / f"{name}-ref.npz")]
        spec = f"lumina:{cohort}" if labels == "lumina" else f"csv:{cohort / 'labels.csv'}"
        mammoprep("shard", str(cohort), "-o", str(out), "--labels", spec,
                  "--size", str(size), "--samples-per-shard", str(per_shard), "--folds",
                  str(folds), "--allow-rejects", "-j", "2", *extra)
    _CACHE[name] = out
    return out


@pytest.fixture(scope="session")
def train_shards(tmp_path_factory) -> Path:
    """24 synthetic patients, raw (no harmonisation), longer side 128, 5 folds, 8 per shard."""
    return build(tmp_path_factory.getbasetemp(), "train-shards", 24, 0, 128)


@pytest.fixture(scope="session")
def train_shards_harmonized(tmp_path_factory, train_shards) -> Path:
    """The same cohort, harmonised to its own low-energy reference (``mammoprep reference``)."""
    return build(tmp_path_factory.getbasetemp(), "train-shards-harmonized", 24, 0, 128,
                 harmonized=True)
