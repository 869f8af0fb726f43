"""What checking a store's artifacts costs: a store of ResNet-18 IMP-level
artifacts (init, final and rewind weights and a mask, as the IMP stage
writes them) checked by size only (what raylth did before checksums),
by CRC32 (what the manifest records), by sha256 (the alternative weighed),
and by ``Store.condition`` twice: the first time reads every file, the
second only compares sizes and modification times with what this node
checked before (raylth run and raylth status at every start).

    python bench/checksums.py [--small|--full]

The reference in the same run is reading the files once (cat > /dev/null).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from pathlib import Path

import torch

import common
from raylth.engine.models import build_model
from raylth.specs import ImpLevelSpec, ModelSpec, TrainSpec
from raylth.store import Store
from raylth.store.checksums import crc32_file

SIZES = {"full": {"artifacts": 40}, "small": {"artifacts": 8}}


def write_store(root: Path, count: int) -> Store:
    store = Store(root)
    model = build_model(ModelSpec(name="resnet18"), (3, 32, 32), 10, seed=0)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    mask = {k: torch.rand_like(v) > 0.5 for k, v in weights.items() if v.dim() > 1}
    for level in range(1, count + 1):
        spec = ImpLevelSpec(level=level, model=ModelSpec(name="resnet18"), train=TrainSpec(lr=0.1 + level / 1e4))
        partial = store.partial(spec.id)
        for name in ("init", "rewind", "final"):
            partial.save(f"weights/{name}.pt", weights)
        partial.save("mask.pt", mask)
        store.finish(spec, partial, {"test_acc": 0.9})
    return store


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    size = SIZES[common.size_name(args)]
    root = Path(tempfile.mkdtemp(prefix="raylth-checksums-", dir=common.CACHE.parent))
    try:
        store = write_store(root / "store", size["artifacts"])
        ids = store.artifact_ids()
        files = [p for i in ids for p in (root / "store" / i).rglob("*") if p.is_file()]
        total = sum(p.stat().st_size for p in files)
        memo = root / "store" / ".verified"

        def read_all():
            for p in files:
                with open(p, "rb") as f:
                    while f.read(8 << 20):
                        pass

        def sizes_only():
            for i in ids:
                store._read(store.path(i))

        def sha256_all():
            for p in files:
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    while chunk := f.read(8 << 20):
                        h.update(chunk)

        def condition_all():
            assert all(store.condition(i)[0] == "finished" for i in ids)

        runs = {"read_once_s": [], "sizes_only_s": [], "crc32_s": [], "sha256_s": [],
                "condition_first_s": [], "condition_again_s": []}
        for _ in range(args.repeats):
            runs["read_once_s"].append(timed(read_all))
            runs["sizes_only_s"].append(timed(sizes_only))
            runs["crc32_s"].append(timed(lambda: [crc32_file(p) for p in files]))
            runs["sha256_s"].append(timed(sha256_all))
            shutil.rmtree(memo, ignore_errors=True)  # as on a node that never checked this store
            runs["condition_first_s"].append(timed(condition_all))
            runs["condition_again_s"].append(timed(condition_all))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    figures = {k: common.median(v) for k, v in runs.items()}
    figures["store_gib"] = total / 2 ** 30
    figures["crc32_gib_per_s"] = figures["store_gib"] / figures["crc32_s"]
    figures["sha256_gib_per_s"] = figures["store_gib"] / figures["sha256_s"]
    figures["condition_again_ms_per_artifact"] = 1000 * figures["condition_again_s"] / len(ids)
    notes = ["Files are in the page cache after the first pass (a warm store): read_once_s is the floor "
             "any full check pays; a cold disk adds its read time to each full check alike.",
             "condition_first_s: size + CRC32 of every file (remembered in .verified/); condition_again_s: "
             "sizes and modification times compared with what was remembered."]
    common.publish("checksums", args, f"{common.size_name(args)}, {len(ids)} ResNet-18 artifacts "
                   f"({figures['store_gib']:.2f} GiB), {common.device_name('cpu')}", figures,
                   {"sizes": size, "runs": runs, "files": len(files)}, notes)


if __name__ == "__main__":
    main()
