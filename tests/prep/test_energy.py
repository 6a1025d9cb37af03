"""Energy classes from metadata: the shipped table, user tables, bad tables."""

from __future__ import annotations

import pytest

from mammoprep.harmonise.energy import (EnergyTableError, default_table_path, energy_class,
                                        load_energy_table, should_harmonize)
from mammoprep.errors import MammoprepError


@pytest.mark.parametrize("manufacturer,model,energy", [
    ("IMS", "", "high"),
    ("IMS s.r.l.", "GIOTTO IMAGE 3DL", "high"),
    ("I.M.S. Internazionale Medico Scientifica", None, "high"),
    ("i.m.s.", "", "high"),
    ("", "Giotto Class", "high"),
    ("GE MEDICAL SYSTEMS", "Senographe Essential VERSION ADS_54.10", "high"),
    ("GE Healthcare", "Senographe Pristina", "high"),
    (None, "Senographe DS", "high"),
    ("METALTRONICA", "Helianthus", "low"),
    ("FUJIFILM Corporation", "AMULET", "low"),
    ("FUJI PHOTO FILM CO. LTD.", "", "low"),
    ("SIEMENS", "Mammomat Inspiration", "low"),
    ("", "Mammomat Inspiration", "low"),  # real Siemens file without a Manufacturer tag
    ("Carestream Health", "", "low"),
    ("HOLOGIC, Inc.", "Selenia Dimensions", "unknown"),
    ("SIMS Medical", "", "unknown"),  # 'IMS' only as a word
    ("AGE Imaging", "", "unknown"),  # 'GE' only as a word at the start
    (None, None, "unknown"),
])
def test_shipped_table(manufacturer, model, energy):
    assert energy_class(manufacturer, model, load_energy_table()) == energy


def test_default_table_is_the_shipped_file():
    path = default_table_path()
    assert path.name == "energy_classes.csv" and path.parent.name == "manifests"
    assert load_energy_table().source == str(path.resolve())
    assert energy_class("IMS") == "high"  # table=None loads the default


def test_should_harmonize():
    table = load_energy_table()
    ims, fuji = {"manufacturer": "IMS", "model": "Giotto"}, {"manufacturer": "FUJIFILM"}
    holo = {"manufacturer": "HOLOGIC, Inc."}
    assert all(should_harmonize(m, None, table) for m in (ims, fuji, holo, {}))
    assert should_harmonize(ims, "high", table)
    assert not should_harmonize(fuji, "high", table)
    assert not should_harmonize(holo, "high", table)  # unknown: left alone, caller reports
    assert should_harmonize(fuji, "low", table) and not should_harmonize(ims, "low", table)
    with pytest.raises(ValueError, match="only_energy"):
        should_harmonize(ims, "medium", table)


def test_decision_ignores_labels_and_paths():
    table = load_energy_table()
    meta = {"manufacturer": "FUJIFILM", "model": "", "label": "malignant",
            "path": "Malign/P001/L_CC.dcm", "bits_stored": 14}
    assert not should_harmonize(meta, "high", table)


def test_override_csv_first_match_wins(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text(
        "# my site\n"
        "manufacturer,model,energy,note\n"
        "HOLOGIC,Selenia Dimensions,high,site decision\n"
        "HOLOGIC,,low,other Hologic models\n"
        "IMS,,unknown,we do not trust IMS headers\n"
        "IMS,,high,never reached\n")
    table = load_energy_table(path)
    assert energy_class("Hologic, Inc.", "Selenia Dimensions", table) == "high"
    assert energy_class("Hologic, Inc.", "3Dimensions", table) == "low"
    assert energy_class("IMS", "Giotto", table) == "unknown"
    assert energy_class("GE MEDICAL SYSTEMS", "", table) == "unknown"  # not in this table
    rule = table.match("Hologic", "Selenia Dimensions")
    assert rule.line == 3 and rule.note == "site decision"


@pytest.mark.parametrize("text,where", [
    ("manufacturer,energy\nIMS,high\n", None),  # model column optional
    ("maker,model,energy\nIMS,,high\n", "lacks column(s) manufacturer"),
    ("manufacturer,model,energy\nIMS,,medium\n", "line 2, column 'energy'"),
    ("manufacturer,model,energy\nIMS(,,high\n", "line 2, column 'manufacturer'"),
    ("manufacturer,model,energy\n# c\nIMS,[a-,high\n", "line 3, column 'model'"),
    ("manufacturer,model,energy\n,,high\n", "line 2: columns 'manufacturer' and 'model'"),
    ("manufacturer,model,energy\nGE, Senographe, low, a, b\n", "line 2 has 5 fields"),
    ("", "empty"),
])
def test_bad_csv_names_file_row_and_column(tmp_path, text, where):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    if where is None:
        assert energy_class("IMS", "", load_energy_table(path)) == "high"
        return
    with pytest.raises(MammoprepError, match=r"bad\.csv") as info:
        load_energy_table(path)
    assert isinstance(info.value, EnergyTableError)
    assert where in str(info.value)


def test_missing_csv(tmp_path):
    with pytest.raises(EnergyTableError, match="not found"):
        load_energy_table(tmp_path / "nope.csv")


def test_table_reloads_after_edit(tmp_path):
    import os
    path = tmp_path / "t.csv"
    path.write_text("manufacturer,model,energy\nIMS,,high\n")
    assert energy_class("IMS", "", load_energy_table(path)) == "high"
    path.write_text("manufacturer,model,energy\nIMS,,low\n")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    assert energy_class("IMS", "", load_energy_table(path)) == "low"
