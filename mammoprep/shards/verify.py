"""Checking shard folders: :func:`verify` (manifests, hashes, every sample decodes), the
existing-output check before a run (:func:`check_existing`: same configuration, or refuse)
and the content digests that make a changed reference or label table another
configuration."""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections import defaultdict
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from ..errors import MammoprepError, display_path
from ..inputs import MAX_TABLE_BYTES, input_problem, open_input, read_input
from ..io.png import decode_png16
from .schema import MANIFESTS, PARTS, ShardConfig

#: Largest manifest or config.json read (they hold one row per image: ~1 KB each).
MAX_MANIFEST_BYTES = 1 << 30


def _sha256(path: Path, what: str = "file", cap: int = MAX_TABLE_BYTES) -> str:
    """sha256 of a regular file of at most ``cap`` bytes (:func:`open_input`: a FIFO or
    device raises a typed error instead of blocking or never ending)."""
    h = hashlib.sha256()
    with open_input(path, what, cap) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_digest(path: str | None) -> str:
    """sha256 of a file's bytes, or of a folder's regular files (relative path and bytes,
    in sorted order); "" for None or a missing path."""
    if not path or not Path(path).exists():
        return ""
    root = Path(path)
    if root.is_file():
        return _sha256(root)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(root).as_posix()}\0{_sha256(f)}\n".encode(
            "utf-8", "surrogateescape"))
    return h.hexdigest()


def labels_digest(labels, salt: bytes) -> str:
    """Salted HMAC-SHA256 of a parsed label table (every row, auxiliary files), so that
    an edited table is another config; salted because rows hold patient ids."""
    import hmac

    if labels is None:
        return ""

    def plain(o):
        return asdict(o) if is_dataclass(o) else sorted(o) if isinstance(o, set) else str(o)

    parts = [labels.kind, labels.by_path, labels.by_tail, labels.by_stem,
             sorted(labels.auxiliary)]
    if labels.auxiliary_stems:  # only then: earlier tables keep their digest
        parts.append(sorted(labels.auxiliary_stems))
    blob = json.dumps(parts, sort_keys=True, default=plain)
    return hmac.new(salt, blob.encode("utf-8", "surrogateescape"), "sha256").hexdigest()


def _read_config(path: Path, log) -> dict[str, Any] | None:
    """config.json as a dict; None (with a warning) when absent, empty or corrupt, e.g.
    left by a crash or a full disk before writes were atomic."""
    try:
        if not path.exists() and not path.is_symlink():
            return None
        doc = json.loads(read_input(path, "config.json", MAX_MANIFEST_BYTES))
    except (OSError, ValueError, MammoprepError) as exc:
        log(f"warning: {display_path(path)} is empty or unreadable ({type(exc).__name__}); "
            "ignored (an interrupted run?)")
        return None
    if not isinstance(doc, dict):
        log(f"warning: {display_path(path)} is not a JSON object; ignored")
        return None
    return doc


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def check_existing(out: Path, cfg: ShardConfig, log=print) -> None:
    """Refuse (MammoprepError, pointing to --overwrite) a folder holding shards or parts
    made with another config: other options, another reference or label table content.
    An empty or corrupt config.json is ignored with a warning."""
    digest = cfg.digest()
    found, prev_cfg = None, None
    doc = _read_config(out / "config.json", log)
    if doc is not None and doc.get("config_digest") != digest:
        found, prev_cfg = "config.json", doc.get("config")
    if found is None:
        for p in sorted((out / PARTS).glob("shard-*.json")):
            try:
                part = json.loads(p.read_bytes())
            except (OSError, ValueError):
                continue  # unreadable: redone
            if isinstance(part, dict) and part.get("config_digest") not in (None, digest):
                found = f"{PARTS}/{p.name} (an interrupted run)"
                break
    if found is None:
        return
    what = _differences(prev_cfg, cfg.to_dict()) if isinstance(prev_cfg, dict) else []
    raise MammoprepError(out, "this folder holds shards made with another configuration"
                         + (f" (differs in {', '.join(what)})" if what else ""),
                         tag=found, value="config_digest differs",
                         hint="use a new output folder, or --overwrite to replace them")


def _verify_config(out: Path) -> list[str]:
    """config.json present, a JSON object with a config digest, and each manifest's
    sha256 equal to the one it records (``manifests_sha256``)."""
    path = out / "config.json"
    problem = input_problem(path, "config.json")
    if problem is not None:
        return [f"{path}: missing" if not path.exists() and not path.is_symlink() else
                str(problem)]
    try:
        doc = json.loads(read_input(path, "config.json", MAX_MANIFEST_BYTES))
    except MammoprepError as exc:
        return [str(exc)]
    except (OSError, ValueError) as exc:
        return [f"{path}: empty or not valid JSON ({type(exc).__name__}); the run that wrote "
                "it did not finish: rerun `mammoprep shard`"]
    if not isinstance(doc, dict) or not doc.get("config_digest"):
        return [f"{path}: no config_digest; not written by a finished `mammoprep shard`"]
    problems = []
    for name, digest in sorted((doc.get("manifests_sha256") or {}).items()):
        if _manifest_problem(out / name) is None and _sha256(
                out / name, "manifest", MAX_MANIFEST_BYTES) != digest:
            problems.append(f"{out / name}: sha256 differs from config.json (corrupt or "
                            "modified)")
    return problems


def _manifest_problem(path: Path) -> str | None:
    """Why a manifest cannot be read (missing, not a regular file), or None."""
    if not path.exists() and not path.is_symlink():
        return f"{path}: missing manifest"
    problem = input_problem(path, "manifest")
    return None if problem is None else str(problem)


def verify(out_dir: str | Path) -> list[str]:
    """Problems found in a shard folder (empty list = all good).

    Checks: manifests and config.json present and readable (an empty or corrupt one is a
    problem line, never a traceback); each manifest's sha256 equals the one config.json
    records; every tar in the folder is listed in shards.parquet; every shard's size and
    sha256 match shards.parquet; every images.parquet row has its PNG in its shard, the PNG
    decodes to the recorded size; every sample has its JSON; no shard holds samples the
    manifest does not list.
    """
    import pyarrow.parquet as pq

    out = Path(out_dir)
    problems: list[str] = []
    unreadable = [p for p in (_manifest_problem(out / name) for name in MANIFESTS) if p]
    problems += unreadable
    problems += _verify_config(out)
    if unreadable:
        return problems
    tables = {}
    for name in ("images.parquet", "shards.parquet"):
        try:
            with open_input(out / name, "manifest", MAX_MANIFEST_BYTES) as fh:
                tables[name] = pq.read_table(fh).to_pylist()
        except Exception as exc:  # noqa: BLE001 - a corrupt manifest is a problem line
            problems.append(f"{out / name}: not a readable Parquet file "
                            f"({type(exc).__name__}: {exc})")
    if len(tables) < 2:
        return problems
    images, shards = tables["images.parquet"], tables["shards.parquet"]
    listed_names = {s["shard"] for s in shards}
    for tar in sorted(out.glob("*.tar")):
        if tar.name not in listed_names:
            problems.append(f"{tar}: tar not listed in shards.parquet (stale or foreign)")
    by_shard: dict[str, list[dict]] = defaultdict(list)
    for r in images:
        by_shard[r["shard"]].append(r)
    for s in shards:
        path = out / s["shard"]
        if not path.exists() and not path.is_symlink():
            problems.append(f"{path}: shard listed in shards.parquet is missing")
            continue
        problem = input_problem(path, "shard")  # a FIFO or /dev/zero is never read
        if problem is not None:
            problems.append(str(problem))
            continue
        size = path.stat().st_size
        if size != s["bytes"]:
            problems.append(f"{path}: size {size} != {s['bytes']} in shards.parquet")
        try:  # read at most the larger of the two sizes: a file that grows is refused
            if _sha256(path, "shard", max(size, s["bytes"])) != s["sha256"]:
                problems.append(f"{path}: sha256 differs from shards.parquet (corrupt or "
                                "modified)")
                continue
        except (MammoprepError, OSError) as exc:
            problems.append(str(exc) if isinstance(exc, MammoprepError) else
                            f"{path}: cannot read ({exc})")
            continue
        problems += _verify_tar(path, s, by_shard.get(s["shard"], []))
    listed = {s["shard"] for s in shards}
    for r in images:
        if r["shard"] not in listed:
            problems.append(f"images.parquet: {r['key']}.{r['view']} points to unlisted shard "
                            f"{r['shard']}")
    return problems


def _verify_tar(path: Path, shard: dict, rows: list[dict]) -> list[str]:
    """Problems inside one shard (``shard``: its shards.parquet row, ``rows``: its
    images.parquet rows): samples not in the manifest, sample counts, missing JSONs, PNGs
    missing, not decoding or of another size than recorded."""
    problems: list[str] = []
    try:
        with open_input(path, "shard", shard["bytes"]) as fh, \
                tarfile.open(fileobj=fh) as tar:
            members = {m.name: m for m in tar.getmembers()}
            keys_in_tar = {n.split(".", 1)[0] for n in members}
            expected_keys = {r["key"] for r in rows}
            for extra in sorted(keys_in_tar - expected_keys):
                problems.append(f"{path}: sample {extra} is not in images.parquet")
            if len(expected_keys) != shard["samples"]:
                problems.append(f"{path}: {len(expected_keys)} samples in images.parquet, "
                                f"{shard['samples']} in shards.parquet")
            for key in sorted(expected_keys):
                if f"{key}.json" not in members:
                    problems.append(f"{path}: {key}.json missing")
            for r in rows:
                name = f"{r['key']}.{r['view']}.png"
                if name not in members:
                    problems.append(f"{path}: {name} listed in images.parquet is missing")
                    continue
                try:
                    px = decode_png16(tar.extractfile(members[name]).read())
                except Exception as exc:  # noqa: BLE001 - report, keep checking
                    problems.append(f"{path}: {name} does not decode ({exc})")
                    continue
                if px.shape != (r["stored_rows"], r["stored_cols"]):
                    problems.append(f"{path}: {name} is {px.shape}, manifest says "
                                    f"{(r['stored_rows'], r['stored_cols'])}")
    except tarfile.TarError as exc:
        problems.append(f"{path}: not a readable tar ({exc})")
    except MammoprepError as exc:  # changed since it was hashed
        problems.append(str(exc))
    return problems
