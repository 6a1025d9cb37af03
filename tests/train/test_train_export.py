"""Self-contained model files and ONNX export.

A fold trained on harmonised shards writes ``best.safetensors`` + ``best.json``; with the
run, the shards and the harmonisation reference deleted, ``mammotrain predict -c
best.safetensors --dicom`` reproduces the predictions made with ``best.pt`` while they
existed. ``mammotrain export`` writes ONNX that onnxruntime (CPU) runs with PyTorch's
outputs.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from mammotrain.cli import main


TINY = ["--backbone", "test_resnet", "--size", "32", "--epochs", "1", "--batch-size", "4",
        "--workers", "0", "--max-steps-per-epoch", "1", "--device", "cpu", "--gradcam", "0"]


def _copy_shards_with_reference(src, dst):
    """A private copy of harmonised shards and of their reference (config.json repointed),
    so the test may delete both."""
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    ref = dst.parent / "ref-copy.npz"
    shutil.copy(cfg["config"]["prep"]["reference"], ref)
    cfg["config"]["prep"]["reference"] = str(ref)
    (dst / "config.json").write_text(json.dumps(cfg))
    return ref


@pytest.fixture(scope="module")
def trained(train_shards_harmonized, tmp_path_factory):  # noqa: F811
    """One fold, single-view diagnosis, on a private copy of the harmonised shards."""
    root = tmp_path_factory.mktemp("export")
    shards = root / "shards"
    ref = _copy_shards_with_reference(train_shards_harmonized, shards)
    out = root / "run"
    r = CliRunner().invoke(main, ["train", "--task", "diagnosis", "--views", "1", "--fold",
                                  "0", "--shards", str(shards), "--out", str(out), *TINY])
    assert r.exit_code == 0, r.output
    cohort = train_shards_harmonized.parent / "cohort-24-0-512x416"
    return {"root": root, "shards": shards, "ref": ref, "fold": out / "fold0",
            "dicoms": sorted((cohort / "Benign").iterdir())[0]}


def test_model_file_holds_config_and_reference(trained):
    from mammoprep.harmonise.match import Reference
    from mammotrain.engine.checkpoint import read_document, reference_hash

    fold = trained["fold"]
    doc = read_document(fold / "best.safetensors")
    assert doc == json.loads((fold / "best.json").read_text())  # the sidecar, readable
    assert doc["format"] == "mammotrain.model" and doc["task"]["name"] == "diagnosis"
    assert doc["config"]["backbone"] == "test_resnet" and doc["config"]["views"] == 1
    assert doc["preprocess"] == {"size": 32, "resize": "square", "intensity": "bits",
                                 "interpolation": "bilinear"}
    assert len(doc["data_config"]["mean"]) == 3
    assert doc["shards_config"]["prep"]["reference"] == str(trained["ref"])
    ref = Reference.load(trained["ref"])
    assert doc["reference"]["sha256"] == reference_hash(ref.hist, ref.bits)
    assert doc["reference"]["bits"] == ref.bits and doc["reference"]["npz_zlib_b64"]
    # the tensors are those of best.pt
    from safetensors.torch import load_file

    pt = torch.load(fold / "best.pt", map_location="cpu", weights_only=False)["model"]
    st = load_file(str(fold / "best.safetensors"))
    assert st.keys() == pt.keys()
    for k in pt:
        torch.testing.assert_close(st[k], pt[k], rtol=0, atol=0, msg=k)


def test_model_file_alone_reproduces_dicom_predictions(trained, tmp_path):
    fold, dicoms = trained["fold"], trained["dicoms"]
    before = tmp_path / "before.parquet"
    r = CliRunner().invoke(main, ["predict", "-c", str(fold / "best.pt"), "--dicom",
                                  str(dicoms), "-o", str(before), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    alone = tmp_path / "elsewhere" / "model.safetensors"
    alone.parent.mkdir()
    shutil.copy(fold / "best.safetensors", alone)
    # nothing of the training machine is left: run, shards, reference
    shutil.rmtree(trained["shards"])
    trained["ref"].unlink()
    after = tmp_path / "after.parquet"
    r = CliRunner().invoke(main, ["predict", "-c", str(alone), "--dicom", str(dicoms),
                                  "-o", str(after), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    a = pq.read_table(before).to_pylist()
    b = pq.read_table(after).to_pylist()
    assert len(a) == len(b) == 4  # one patient's 4 images
    for x, y in zip(sorted(a, key=lambda r: r["uid"]), sorted(b, key=lambda r: r["uid"])):
        assert x["uid"] == y["uid"]
        np.testing.assert_allclose(y["scores"], x["scores"], rtol=0, atol=1e-6)
    # the .pt needs what was deleted: its reference is gone
    r = CliRunner().invoke(main, ["predict", "-c", str(fold / "best.pt"), "--dicom",
                                  str(dicoms), "-o", str(tmp_path / "x.parquet")])
    assert r.exit_code == 1 and "not found" in r.output


def test_damaged_embedded_reference_is_refused(trained, tmp_path):
    from safetensors.torch import load_file, save_file

    from mammotrain.engine.checkpoint import METADATA_KEY, read_document, read_model_file

    src = trained["fold"] / "best.safetensors"
    doc = read_document(src)
    doc["reference"]["sha256"] = "0" * 64
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(src)), str(bad), metadata={METADATA_KEY: json.dumps(doc)})
    with pytest.raises(ValueError, match="does not match its content hash"):
        read_model_file(bad)
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(1)}, str(plain))
    with pytest.raises(ValueError, match="without a mammotrain model document"):
        read_model_file(plain)


def test_export_onnx_matches_pytorch_with_onnxruntime(trained, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from mammotrain.export import load_for_export

    model_file = trained["fold"] / "best.safetensors"
    onnx_path = tmp_path / "model.onnx"
    r = CliRunner().invoke(main, ["export", "-c", str(model_file), "-o", str(onnx_path)])
    assert r.exit_code == 0, r.output
    assert "opset 17" in r.output
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["image"]
    meta = json.loads(sess.get_modelmeta().custom_metadata_map["mammotrain"])
    assert meta["preprocess"]["size"] == 32 and "npz_zlib_b64" not in meta["reference"]
    _, model, _ = load_for_export(model_file)
    x = torch.rand(5, 1, 1, 32, 32, generator=torch.Generator().manual_seed(3))  # batch 5
    logits, probs = sess.run(["logits", "probs"], {"image": x.numpy()})
    with torch.no_grad():
        ref = model(x)
    np.testing.assert_allclose(logits, ref.numpy(), rtol=1e-4, atol=1e-5)
    # probs: calibrated with the model file's temperature (fitted on validation patients)
    t = meta["temperature"]
    assert t > 0 and t != 1.0
    np.testing.assert_allclose(probs, torch.softmax(ref / t, -1).numpy(), rtol=1e-4, atol=1e-5)
    assert probs.shape == (5, 2)


def test_export_pt_to_model_file_and_bad_suffix(trained, tmp_path):
    r = CliRunner().invoke(main, ["export", "-c", str(trained["fold"] / "best.pt"),
                                  "-o", str(tmp_path / "m.txt")])
    assert r.exit_code == 2 and ".onnx or .safetensors" in r.output
