"""Shards are hard to misread: the README's reading snippets run as printed on real shards
(webdataset and the standard library), fail loudly when the PNGs are decoded to 8 bits, and
the ``.cls`` entry holds the diagnosis where the task defines one."""

from __future__ import annotations

import contextlib
import io
import json
import re
import tarfile

import numpy as np
import pytest

from mammotrain.data import decode_png16, require_16bit

from ..conftest import REPO


def _readme_snippets() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Reusing the shards"):text.index("## mammotrain\n")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def _run(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    return out.getvalue()


def _brace(shards) -> str:
    names = sorted(p.stem for p in shards.glob("shard-*.tar"))
    first, last = names[0].split("-")[1], names[-1].split("-")[1]
    return f"{shards}/shard-{{{first}..{last}}}.tar"


def test_readme_webdataset_snippet_reads_every_sample(train_shards):  # noqa: F811
    wds_code, _ = _readme_snippets()
    code = wds_code.replace("shards/shard-{000000..000002}.tar", _brace(train_shards))
    lines = _run(code).splitlines()
    import pyarrow.parquet as pq

    keys = {r["key"] for r in pq.read_table(train_shards / "images.parquet").to_pylist()}
    assert {ln.split()[0] for ln in lines} == keys


def test_readme_webdataset_snippet_fails_loudly_on_8bit_decoding(train_shards):  # noqa: F811
    wds_code, _ = _readme_snippets()
    code = wds_code.replace("shards/shard-{000000..000002}.tar", _brace(train_shards))
    code = code.replace("shardshuffle=False)", "shardshuffle=False).decode(\"l\")")
    assert '.decode("l")' in code
    with pytest.raises(ValueError, match="expected uint16"):
        _run(code)


def test_readme_stdlib_snippet_runs_and_checks_the_dtype(train_shards, tmp_path):  # noqa: F811
    _, std_code = _readme_snippets()
    tar = train_shards / "shard-000000.tar"
    out = _run(std_code.replace("shards/shard-000000.tar", str(tar)))
    assert "diagnosis" in out
    # the same snippet on a shard whose PNGs were re-saved as 8-bit raises
    from PIL import Image

    bad = tmp_path / "eight.tar"
    with tarfile.open(tar) as src, tarfile.open(bad, "w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            if m.name.endswith(".png"):
                buf = io.BytesIO()
                Image.fromarray((decode_png16(data) >> 8).astype(np.uint8)).save(buf, "PNG")
                data = buf.getvalue()
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
    with pytest.raises(ValueError, match="decoded as uint8, expected uint16"):
        _run(std_code.replace("shards/shard-000000.tar", str(bad)))


def test_cls_entry_is_the_diagnosis_where_defined(train_shards):  # noqa: F811
    n_cls = n_without = 0
    for tar_path in sorted(train_shards.glob("shard-*.tar")):
        with tarfile.open(tar_path) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name, data in files.items():
            if not name.endswith(".json"):
                continue
            key = name[:-5]
            diag = json.loads(data)["labels"].get("diagnosis")
            if diag is None:
                assert f"{key}.cls" not in files
                n_without += 1
            else:
                assert files[f"{key}.cls"] == str(diag).encode()
                n_cls += 1
    assert n_cls > 0 and n_without > 0  # the synthetic cohort has both (BI-RADS 0, ...)


def test_require_16bit():
    px = np.array([[0, 4000]], dtype=np.uint16)
    assert require_16bit(px, 12) is not None
    with pytest.raises(ValueError, match="got uint8"):
        require_16bit(px.astype(np.uint8), 12, "k.cc.png")
    with pytest.raises(ValueError, match="maximum 255 for 12-bit values"):
        require_16bit(np.array([[0, 255]], dtype=np.uint16), 12)
    assert require_16bit(np.array([[0, 255]], dtype=np.uint16), 8).dtype == np.uint16
