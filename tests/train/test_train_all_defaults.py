"""`make train-all`'s default settings (scripts/train_all.sh) are the ones whose measured
figures benchmarks/RESULTS.md records: change one and the table must be measured again."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: the settings the recorded table depends on
KEYS = ("PATIENTS", "SYNTH_SIZE", "SHARD_SIZE", "KFOLDS", "BACKBONES", "SIZE", "EPOCHS",
        "BATCH", "LR", "SCHEDULE", "EMA", "WORKERS", "DET_SIZE", "DET_EPOCHS", "DET_LR")


def script_defaults() -> dict[str, str]:
    """NAME -> default of every ``NAME=${NAME:-value}`` / ``NAME=${NAME-value}`` in the
    script (the last non-empty one: the synthetic branch sets LR and DET_LR)."""
    text = (ROOT / "scripts" / "train_all.sh").read_text()
    out: dict[str, str] = {}
    for name, value in re.findall(r"^\s*(\w+)=\$\{(?:\1):?-([^}]*)\}", text, re.M):
        if value or name not in out:
            out[name] = value
    return out


def recorded_settings() -> dict[str, str]:
    """NAME -> value of the ``Settings:`` line of RESULTS.md's train-all section."""
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    section = text[text.index("## `make train-all`"):]
    line = re.search(r"^Settings: (.*)$", section, re.M)
    assert line, "RESULTS.md: the train-all section has no 'Settings: NAME=value ...' line"
    return dict(item.split("=", 1) for item in line.group(1).strip(" `").split())


def test_train_all_defaults_are_the_recorded_ones():
    script, recorded = script_defaults(), recorded_settings()
    assert set(KEYS) <= set(script), f"script lacks {set(KEYS) - set(script)}"
    assert set(KEYS) <= set(recorded), f"RESULTS.md lacks {set(KEYS) - set(recorded)}"
    differ = {k: (script[k], recorded[k]) for k in KEYS if script[k] != recorded[k]}
    assert not differ, f"train_all.sh default vs RESULTS.md (script, recorded): {differ}"


def test_recorded_table_shows_learning_for_every_configuration():
    """Every configuration's pooled AUC 95 % CI lower bound (raw and harmonised) is above 50
    and detection's pooled AP@0.5 at least twice its mean-box baseline, as recorded."""
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    section = text[text.index("## `make train-all`"):]
    configs = {"diagnosis single-view", "diagnosis two-view", "diagnosis four-view (exam)",
               "BI-RADS 2-class two-view", "BI-RADS 3-class two-view", "density two-view"}
    rows = re.findall(r"^\| ([^|]+?) \| [^|]+ \| [\d.]+ \(([\d.]+)-[\d.]+\) \| "
                      r"[\d.]+ \(([\d.]+)-[\d.]+\)", section, re.M)
    assert {r[0] for r in rows} == configs
    assert all(float(lo) > 50 for _, *los in rows for lo in los)
    det = re.search(r"^\| detection .*?AP@0.5 \**([\d.]+)\** .*?baseline \**([\d.]+)",
                    section, re.M)
    assert det and float(det.group(1)) >= 2 * float(det.group(2))
