"""Build ``.gpu_data/gpu_data.tar.gz``: everything ``benchmarks/gpu_check.sh`` needs that a bare
GPU machine (no network, no ``../shared``) does not have.

* ``cifar10/{train,test}/<class>/*.jpg``: a fixed CIFAR-10 subset (the first ``--train`` and
  ``--test`` files of each class in sorted order) from the shared JPEG copy, with its
  PROVENANCE.md;
* ``digits/``: the embedded digits ImageFolder the test fixtures use (built here, where
  scikit-learn is installed; the GPU machine may not have it);
* ``site/``: pure-Python copies of pytest and its dependencies from this environment, put on
  ``PYTHONPATH`` by the check only where ``import pytest`` fails.

The archive is git-ignored and must stay well under the 64 MiB that travels with a device call
(the defaults give about 25 MB)::

    python benchmarks/pack_gpu_data.py --data ../shared/datasets/cifar10
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import json
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDORED = ("pytest", "pluggy", "iniconfig", "packaging", "pygments")
LIMIT_BYTES = 50 * 1024 * 1024


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, path: Path, name: str) -> None:
    info = tar.gettarinfo(str(path), arcname=name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    with path.open("rb") as handle:
        tar.addfile(info, handle)


def _cifar(tar: tarfile.TarFile, data: Path, per_class: dict[str, int]) -> dict[str, int]:
    counts = {}
    for split, n in per_class.items():
        classes = sorted(p for p in (data / split).iterdir() if p.is_dir())
        if len(classes) != 10:
            sys.exit(f"{data / split}: expected 10 class folders, found {len(classes)}")
        total = 0
        for folder in classes:
            files = sorted(folder.glob("*.jpg"))[:n]
            if len(files) < n:
                sys.exit(f"{folder}: only {len(files)} images, {n} wanted")
            for f in files:
                _add_file(tar, f, f"cifar10/{split}/{folder.name}/{f.name}")
            total += len(files)
        counts[split] = total
    provenance = data / "PROVENANCE.md"
    if provenance.is_file():
        _add_file(tar, provenance, "cifar10/PROVENANCE.md")
    return counts


def _digits(tar: tarfile.TarFile) -> int:
    sys.path.insert(0, str(ROOT))
    from compressor.demo import build_digits_imagefolder

    with tempfile.TemporaryDirectory() as tmp:
        root = build_digits_imagefolder(Path(tmp) / "digits")
        files = sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            _add_file(tar, f, f"digits/{f.relative_to(root)}")
    return len(files)


def _site(tar: tarfile.TarFile) -> dict[str, str]:
    versions = {}
    for name in VENDORED:
        dist = importlib.metadata.distribution(name)
        versions[name] = dist.version
        for rel in dist.files or []:
            path = Path(str(dist.locate_file(rel)))
            if rel.suffix in (".pyc",) or "__pycache__" in rel.parts or ".." in rel.parts:
                continue
            if path.is_file():
                _add_file(tar, path, f"site/{rel.as_posix()}")
    return versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/cifar10")
    parser.add_argument("--train", type=int, default=2000, help="training images per class")
    parser.add_argument("--test", type=int, default=200, help="test images per class")
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu_data" / "gpu_data.tar.gz")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".partial")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        counts = _cifar(tar, args.data, {"train": args.train, "test": args.test})
        digits = _digits(tar)
        site = _site(tar)
        manifest = {"cifar10": counts, "digits_files": digits, "site": site}
        _add_bytes(tar, "MANIFEST.json", json.dumps(manifest, indent=2).encode())
    size = tmp.stat().st_size
    if size > LIMIT_BYTES:
        tmp.unlink()
        sys.exit(f"archive is {size / 2**20:.1f} MiB, over the 50 MB limit: lower --train")
    tmp.replace(args.out)
    print(f"wrote {args.out} ({size / 2**20:.1f} MiB): {json.dumps(manifest)}")


if __name__ == "__main__":
    main()
