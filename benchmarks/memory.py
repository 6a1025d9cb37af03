"""Peak memory per worker: of one image through the pipeline, and of whole commands on
full-field and hostile inputs.

    .venv/bin/python benchmarks/memory.py [--part image|commands|all] [--rows 4096 --cols 3328]
        [--codecs raw,jpegls,j2k] [--patients 2] [--no-cap-image]

**Commands** (``--part commands``, :func:`command_table`): in a temporary folder, ``mammoprep
synth`` writes ``--patients`` x 4 images of ``rows x cols``; ``benchmarks/hostile_files.py``
writes the hostile inputs of issue 25 (a deflate bomb declaring 32768 x 16384 that inflates
to 1 GiB, 6 million empty items in a private sequence, a sparse 2.2 GB private OB element
before a ``rows x cols`` image) and one image of the largest size the default memory cap
accepts (11584 x 11584 x 2 bytes, uncompressed). Each command (``inspect``, ``reference``,
``harmonize -j 1`` / ``-j 2``, ``shard -j 1`` / ``-j 2``, both with ``--keep-suspect`` so
that every image that reads goes all the way through) runs as a fresh process; the
largest peak RSS of any process of its tree comes from the kernel (``os.wait4``: exact, the
"per worker" figure), and polling the tree every 20 ms with psutil splits it into the main
process and its largest worker.

**One image** (``--part image``): writes one ``rows x cols`` 12-bit image per codec (a real mammogram from
``../shared/testdata/mammo_real``, tiled up to the size; uncompressed, JPEG-LS lossless,
JPEG 2000 lossless) into a temporary folder, then for each runs a fresh Python subprocess
that imports everything, builds a reference and warms up on a tiny image of the same codec
(JIT compilation, codec libraries, first-call allocations), and only then reads the big file
with :func:`mammoprep.io.dicom.read_dicom` and runs the harmonise pipeline steps
(:func:`mammoprep.segmentation.foreground.remove_text`, :func:`mammoprep.harmonise.match.harmonize`). It prints
the peak RSS growth over that one image (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after
minus before) as a multiple of the decoded image, ``rows * cols * 2`` bytes.

``ru_maxrss`` is the process high-water mark: the growth is an upper bound for what one
worker adds on top of its warmed-up baseline while it holds one image (with ``-j N``, N
times that). tests/prep/test_codestreams.py asserts a bound on the same measurement
(:func:`measure`).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "testdata" / "mammo_real"

#: Transfer syntax per codec name.
CODECS = {"raw": "1.2.840.10008.1.2.1", "jpegls": "1.2.840.10008.1.2.4.80",
          "j2k": "1.2.840.10008.1.2.4.90"}

_CHILD = r"""
import json, resource, sys
import numpy as np
from mammoprep.io.dicom import read_dicom
from mammoprep.segmentation.foreground import remove_text
from mammoprep.harmonise.match import Reference, harmonize

big, tiny = sys.argv[1], sys.argv[2]

def step(path, ref):
    rec = remove_text(read_dicom(path), keep_suspect=True)
    return harmonize(rec, ref)

warm = read_dicom(tiny)
ref = Reference.from_images([warm.pixels], bits=12)
step(tiny, ref)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out = step(big, ref)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
rows, cols = out.meta["rows"], out.meta["columns"]
print(json.dumps({"growth": after - before, "image": rows * cols * 2,
                  "decoder": out.meta["decoder"]}))
"""


def real_image(rows: int, cols: int):
    """``(dataset, uint16 [rows, cols])``: the first real mammogram, tiled (mirrored) up to
    the size; the dataset keeps its header (Rows/Columns/PixelData set per file)."""
    import numpy as np

    from mammoprep.io.header import open_dataset

    src = sorted(REAL.glob("*.DCM"))[0]
    ds, _ = open_dataset(src, header_only=False)
    px = ds.pixel_array.astype(np.uint16)
    reps = (-(-rows // px.shape[0]) + 1, -(-cols // px.shape[1]) + 1)
    tiled = np.block([[px if (i + j) % 2 == 0 else px[:, ::-1] for j in range(reps[1])]
                      for i in range(reps[0])])
    return ds, np.ascontiguousarray(tiled[:rows, :cols])


def write(ds, px, codec: str, path: Path) -> Path:
    """``px`` as a DICOM file of ``codec`` (see :data:`CODECS`) at ``path``."""
    import copy

    import imagecodecs
    from pydicom.encaps import encapsulate

    out = copy.deepcopy(ds)
    out.Rows, out.Columns = px.shape
    ts = CODECS[codec]
    out.file_meta.TransferSyntaxUID = ts
    if codec == "raw":
        out.PixelData = px.tobytes()
        out["PixelData"].VR = "OW"
    else:
        bits = int(ds.BitsStored)
        frame = (imagecodecs.jpegls_encode(px) if codec == "jpegls" else
                 imagecodecs.jpeg2k_encode(px, codecformat="J2K", level=0, reversible=True,
                                           bitspersample=bits))
        out.PixelData = encapsulate([bytes(frame)])
        out["PixelData"].VR = "OB"
    out.save_as(path, enforce_file_format=True)
    return path


def measure(big: Path, tiny: Path) -> dict:
    """Run the child on ``big`` after warming on ``tiny``; {growth, image, decoder}."""
    res = subprocess.run([sys.executable, "-c", _CHILD, str(big), str(tiny)], cwd=REPO,
                         capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"memory child failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


#: Reject kinds looked for in a command's stderr (for the notes under the table).
REJECT_KINDS = {"too_large", "no_contrast", "no_breast", "segmentation_suspect", "truncated",
                "invalid_header", "decode_failed", "unsupported_image", "not_dicom",
                "implausible_pixels", "pixel_length_mismatch", "no_pixel_data", "not_mammogram",
                "pixel_range", "unexpected_error", "no_decoder"}

#: The largest square 16-bit image the default memory cap (256 MiB) accepts.
CAP_SIDE = 11584


def run_peak(args: list[str], env: dict) -> dict:
    """Run ``python -m mammoprep.cli *args``; {rc, seconds, tree, main, worker, processes}:
    the peak RSS (bytes) of the largest process of its tree (``os.wait4``: the kernel's
    high-water mark over the process and every descendant it waited for), and from
    polling every 20 ms: the main process's peak and the largest other process's peak."""
    import os
    import time

    import psutil

    start = time.perf_counter()
    with open(os.devnull, "wb") as null:
        proc = subprocess.Popen([sys.executable, "-m", "mammoprep.cli", *args], cwd=REPO,
                                env=env, stdout=null, stderr=subprocess.PIPE)
        err_file = proc.stderr
        os.set_blocking(err_file.fileno(), False)
        peaks: dict[int, int] = {}
        stderr = b""
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                root = psutil.Process(proc.pid)
                for p in [root, *root.children(recursive=True)]:
                    try:
                        peaks[p.pid] = max(peaks.get(p.pid, 0), p.memory_info().rss)
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            stderr += err_file.read() or b""
            time.sleep(0.02)
        stderr += err_file.read() or b""
    proc.returncode = os.waitstatus_to_exitcode(status)
    others = [v for k, v in peaks.items() if k != proc.pid]
    return {"rc": proc.returncode, "seconds": time.perf_counter() - start,
            "tree": usage.ru_maxrss * 1024, "main": peaks.get(proc.pid, 0),
            "worker": max(others, default=0), "processes": len(peaks),
            "stderr": stderr.decode(errors="replace")}


def make_inputs(tmp: str | Path, rows: int, cols: int, patients: int,
                cap_image: bool) -> dict[str, Path]:
    """The input folders under ``tmp``: ``cohort`` (synthetic ``rows x cols``),
    ``hostile`` (the three hostile files of issue 25 and one good image) and, with
    ``cap_image``, ``cap`` (one image of :data:`CAP_SIDE` squared)."""
    import os

    import hostile_files as hf
    import numpy as np

    tmp, env = Path(tmp), dict(os.environ)

    cohort = tmp / "cohort"
    subprocess.run([sys.executable, "-m", "mammoprep.cli", "synth", str(cohort), "--patients",
                    str(patients), "--size", f"{rows}x{cols}", "--seed", "25", "-j", "2"],
                   cwd=REPO, env=env, check=True, capture_output=True)
    hostile = tmp / "hostile"
    hostile.mkdir()
    good = sorted(cohort.rglob("*.dcm"))[0]
    (hostile / "good.dcm").write_bytes(good.read_bytes())
    hf.deflate_bomb(hostile / "deflate_bomb_32768x16384.dcm", 32768, 16384, inflated_mib=1024)
    hf.many_items(hostile / "items_6M.dcm", 6_000_000)
    from mammoprep.io.dicom import read_dicom

    px = read_dicom(good).pixels
    hf.sparse_value(hostile / "sparse_private_2.2GB.dcm", 2_200_000_000, pixels=px)
    folders = {"cohort": cohort, "hostile": hostile}
    if cap_image:
        cap = tmp / "cap"
        cap.mkdir()
        big = np.zeros((CAP_SIDE, CAP_SIDE), np.uint16)
        for i in range(0, CAP_SIDE, px.shape[0]):  # the real-looking image, tiled
            for j in range(0, CAP_SIDE, px.shape[1]):
                tile = px[: CAP_SIDE - i, : CAP_SIDE - j]
                big[i:i + tile.shape[0], j:j + tile.shape[1]] = tile
        hf.native_image(cap / "cap_11584x11584.dcm", CAP_SIDE, CAP_SIDE, pixels=big)
        del big
        folders["cap"] = cap
    return folders


def command_table(rows: int, cols: int, patients: int, cap_image: bool) -> None:
    """Print the per-command peak RSS table (module docstring) as Markdown rows."""
    import os

    sys.path.insert(0, str(REPO / "benchmarks"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "MAMMOPREP_SALT": "memory-benchmark-salt-25"}
    env.pop("MAMMOPREP_MAX_IMAGE_BYTES", None)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as name:
        tmp = Path(name)
        # the inputs are made by a child: this process stays small, since a command's
        # wait4 peak starts from the RSS of the process that forked it
        subprocess.run([sys.executable, "-c", "import sys, memory; memory.make_inputs("
                        f"{str(tmp)!r}, {rows}, {cols}, {patients}, {cap_image})"],
                       cwd=REPO / "benchmarks", env=env, check=True)
        folders = {name: tmp / name for name in ("cohort", "hostile", "cap")
                   if (tmp / name).is_dir()}
        ref = tmp / "ref.npz"
        runs = [("cohort", ["reference", str(folders["cohort"]), "-o", str(ref),
                            "--energy", "any"])]
        for folder, path in folders.items():
            runs.append((folder, ["inspect", str(path)]))
            for j in ("1",) if folder == "cap" else ("1", "2"):  # cap: one file, one worker
                runs.append((folder, ["harmonize", "--ref", str(ref), str(path), "-o",
                                      str(tmp / f"h_{folder}_{j}"), "--keep-suspect",
                                      "-j", j]))
            for j in ("1",) if folder == "cap" else ("1", "2"):
                runs.append((folder, ["shard", str(path), "-o", str(tmp / f"s_{folder}_{j}"),
                                      "--ref", str(ref), "--keep-suspect",
                                      "--allow-rejects", "-j", j]))
        n = len(list(folders["cohort"].rglob("*.dcm")))
        print(f"cohort: {n} images of {rows}x{cols}; hostile: good image, deflate bomb "
              "32768x16384 (1 GiB inflated), 6M empty items, sparse 2.2 GB private OB"
              + (f"; cap: one {CAP_SIDE}x{CAP_SIDE} image" if cap_image else ""))
        print("| input | command | exit | wall s | largest process (wait4) | main (polled) "
              "| largest worker (polled) | processes |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        notes = []
        for folder, args in runs:
            r = run_peak(args, env)
            shown = " ".join(a if not a.startswith(str(tmp)) else Path(a).name for a in args)
            print(f"| {folder} | `{shown}` | {r['rc']} | {r['seconds']:.1f} | "
                  f"{r['tree'] / 2**20:.0f} MiB | {r['main'] / 2**20:.0f} MiB | "
                  f"{r['worker'] / 2**20:.0f} MiB | {r['processes']} |", flush=True)
            if r["rc"]:
                kinds = sorted(set(re.findall(r"\b(too_large|[a-z]+(?:_[a-z]+)+)\b",
                                              r["stderr"])) & REJECT_KINDS)
                notes.append(f"{folder} `{shown}`: exit {r['rc']}, rejects {kinds or '?'}; "
                             + r["stderr"].strip().splitlines()[-1][:300])
        for note in notes:
            print("-", note)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("image", "commands", "all"), default="all")
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=3328)
    ap.add_argument("--codecs", default="raw,jpegls,j2k")
    ap.add_argument("--patients", type=int, default=2, help="synthetic patients (4 images "
                    "each) for the command table")
    ap.add_argument("--no-cap-image", action="store_true",
                    help="leave out the 11584 x 11584 image (the largest the cap accepts)")
    args = ap.parse_args()
    if args.part in ("commands", "all"):
        command_table(args.rows, args.cols, args.patients, not args.no_cap_image)
    if args.part in ("image", "all"):
        image_table(args.rows, args.cols, args.codecs)


def image_table(rows: int, cols: int, codecs: str) -> None:
    """The one-image table: peak RSS growth per codec (module docstring)."""
    ds, px = real_image(rows, cols)
    print(f"image {rows}x{cols}, 12-bit, decoded {px.nbytes / 2**20:.1f} MiB")
    with tempfile.TemporaryDirectory() as tmp:
        for codec in codecs.split(","):
            big = write(ds, px, codec, Path(tmp) / f"big_{codec}.dcm")
            tiny = write(ds, px[::16, ::16].copy(), codec, Path(tmp) / f"tiny_{codec}.dcm")
            r = measure(big, tiny)
            print(f"{codec:7s} file {big.stat().st_size / 2**20:6.1f} MiB  decoder "
                  f"{r['decoder']:14s} peak RSS growth {r['growth'] / 2**20:7.1f} MiB = "
                  f"{r['growth'] / r['image']:.2f} x decoded image")


if __name__ == "__main__":
    main()
