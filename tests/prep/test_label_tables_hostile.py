"""Label tables that would be read two ways are refused (issue 25, defect 6): a column given
twice (any case) with other values, rows in two encodings, a NUL byte in a cell, and a table
that names none of the images (empty, a header alone, another archive's paths) - each an
error naming the file, the row and the column, before anything is written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mammoprep.labels import LabelError, load_labels

REPO = Path(__file__).resolve().parents[2]
COHORT = dict(patients=2, seed=3, size=(160, 128))  # the `cohort` fixture (conftest.py)


def _csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


# ---------------------------------------------------------------- a column given twice

def test_a_column_given_twice_with_other_values_is_refused(tmp_path):
    p = _csv(tmp_path / "l.csv", "path,pathology,PATHOLOGY \n"
             "a.dcm,benign,benign\nb.dcm,benign,malignant\n")
    with pytest.raises(LabelError) as exc:
        load_labels(f"csv:{p}")
    msg = str(exc.value)
    assert f"{p}:3" in msg and "'pathology' and 'PATHOLOGY '" in msg
    assert "given twice" in msg and "malignant" in msg


def test_a_column_given_twice_with_the_same_values_is_one_column(tmp_path):
    p = _csv(tmp_path / "l.csv", "path,Pathology,pathology\na.dcm,malignant,malignant\n"
             "b.dcm,,-\n")
    t = load_labels(f"csv:{p}")
    assert sorted(r.pathology for r in t.by_path.values() if r.pathology) == ["malignant"]


def test_parquet_twin_columns_are_refused(tmp_path):
    p = tmp_path / "l.parquet"
    pq.write_table(pa.table({"path": ["a.dcm"], "birads": [2], "BIRADS": [5]}), p)
    with pytest.raises(LabelError, match="'birads' and 'BIRADS' are the same column"):
        load_labels(f"parquet:{p}")


# --------------------------------------------------------------------------- encodings

def test_rows_in_two_encodings_are_refused_naming_the_first_bad_row(tmp_path):
    """Müller in UTF-8 on row 2, in Windows-1252 on row 4: two patients if decoded either
    way; the table is refused, naming row 4 and its column."""
    p = tmp_path / "l.csv"
    p.write_bytes("path,patient\na.dcm,M\u00fcller\nb.dcm,P2\n".encode("utf-8")
                  + "c.dcm,M\u00fcller\n".encode("cp1252"))
    with pytest.raises(LabelError) as exc:
        load_labels(f"csv:{p}")
    msg = str(exc.value)
    assert msg.startswith(f"{p}:4: this row is not UTF-8 but row 2 (column patient) is")
    assert "[column patient = b'M\\xfcller']" in msg and "one encoding" in msg


def test_a_pure_windows_1252_table_is_still_read(tmp_path):
    p = _csv(tmp_path / "l.csv", "path,patient\na.dcm,M\u00fcller\nb.dcm,Jos\u00e9\n",
             "cp1252")
    t = load_labels(f"csv:{p}")
    assert sorted(r.patient for r in t.by_path.values()) == ["Jos\u00e9", "M\u00fcller"]


# ------------------------------------------------------------------------------ NUL byte

def test_a_nul_byte_in_a_path_cell_names_row_and_column(tmp_path):
    p = _csv(tmp_path / "l.csv", "path,view\na.dcm,CC\nb\x00.dcm,MLO\n")
    with pytest.raises(LabelError) as exc:
        load_labels(f"csv:{p}")
    msg = str(exc.value)
    assert msg.startswith(f"{p}:3: a NUL byte in a cell") and "[column path = " in msg


# ------------------------------------------------------------ a table that fits no image

def _shard(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "mammoprep.cli", "shard", *args], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("table, why", [
    ("", "has no rows"),
    ("path,laterality,view\n", "has no rows"),
    ("path,laterality,view\nelsewhere/x.dcm,L,CC\nelsewhere/y.dcm,L,MLO\n",
     "names none of the"),
])
def test_a_table_that_names_no_image_is_an_error_before_anything_is_written(
        tmp_path, cohort, table, why):
    src = tmp_path / "in"
    shutil.copytree(cohort / "Benign", src)
    labels = _csv(tmp_path / "labels.csv", table)
    out = tmp_path / "out"
    r = _shard([str(src), "-o", str(out), "--size", "64", "--labels", f"csv:{labels}"])
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and why in r.stderr and "nothing was written" in r.stderr
    assert not out.exists()
