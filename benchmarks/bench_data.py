"""Train-loader throughput and memory per worker: the streaming ImageFolder path against a plain
DataLoader baseline, at N and 4N images, with and without the decode-once memmap cache.

    python benchmarks/bench_data.py                      # 2,000 JPEGs of 500x375, 224x224, 2 workers
    python benchmarks/bench_data.py --images 400 --resolution 64 --workers 1   # quick look

The data set is written first (procedural shapes rendered as ImageNet-shaped 500x375 JPEGs of
~140 KB, `nas.data.procedural.write_imagefolder`); the 4N set is the N set hard-linked four times
under other names (memory depends on how many files a loader lists, not on their content).

Each row runs one training epoch (`split.batches(..., shuffle=True, augment=True)`: random-resized
crop + flip, normalised float batches) and reads the worker processes' memory from /proc at the
end, from smaps_rollup: `private` (Private_Dirty: anonymous memory the worker holds alone, what
grows if it keeps the data set), Pss_Anon (its anonymous memory, shared pages divided among the
processes sharing them), Pss_File (file pages: the libraries and, with the cache, the memmap's
page cache, which the kernel shares between processes and can drop) and RSS. The baseline is what a plain
DataLoader does: Pillow open + convert + resize + crop in `__getitem__`, a Python list of
(path, label) tuples. Images/s is the epoch's images over its wall time after the first batch.
Prints a table and the load average (`uptime`) before and after; this machine may be shared.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time

import numpy as np
import torch

from nas.data import _load_cached, load_dataset
from nas.data.procedural import write_imagefolder
from nas.data.transforms import normalise, sample_crop, to_model_input


# ----------------------------------------------------------------------------- baseline
class PlainFolder(torch.utils.data.Dataset):
    """The usual hand-written loader: list of (path, label), Pillow decode + resize per item."""

    def __init__(self, root: str, size: int):
        self.items = [(os.path.join(root, c, f), i) for i, c in enumerate(sorted(os.listdir(root)))
                      for f in sorted(os.listdir(os.path.join(root, c)))]
        self.size = size

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        from PIL import Image

        path, label = self.items[i]
        with Image.open(path) as im:
            im = im.convert("RGB")
            rng = np.random.default_rng(i)
            box = sample_crop(rng, im.height, im.width, (0.35, 1.0), (0.75, 4 / 3))
            im = im.resize((self.size, self.size), Image.BILINEAR, box=box)
            if rng.random() < 0.5:
                im = im.transpose(Image.FLIP_LEFT_RIGHT)
            return torch.from_numpy(np.asarray(im).copy()), label


def run_baseline(root: str, size: int, batch: int, workers: int) -> tuple[int, float, list[dict]]:
    """One epoch of the plain loader; its workers' memory is read before they stop."""
    loader = torch.utils.data.DataLoader(PlainFolder(root, size), batch_size=batch, shuffle=True,
                                         num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    batches = ((normalise(to_model_input(x, (size, size), channels_last_input=True)), y) for x, y in loader)
    rate, n, memory = run_epoch(batches)
    del batches, loader
    return n, rate, memory


# ------------------------------------------------------------------------------ measures
def worker_memory() -> list[dict]:
    """Private_Dirty / Pss_Anon / Pss_File / RSS (MiB) of this process's child processes (the loader workers)."""
    pid = os.getpid()
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                children += [int(c) for c in fh.read().split()]
        except OSError:
            pass
    out = []
    for child in children:
        try:
            status = dict(line.split(":", 1) for line in open(f"/proc/{child}/status"))
            rollup = dict(line.split(":", 1) for line in open(f"/proc/{child}/smaps_rollup")
                          if ":" in line and not line.startswith("5"))
        except OSError:
            continue
        kib = lambda d, k: int(d.get(k, "0 kB").split()[0]) / 1024  # noqa: E731
        out.append({"pid": child, "private": kib(rollup, "Private_Dirty"), "pss_anon": kib(rollup, "Pss_Anon"),
                    "pss_file": kib(rollup, "Pss_File"), "rss": kib(status, "VmRSS")})
    return out


def run_epoch(batches) -> tuple[float, int, list[dict]]:
    it = iter(batches)
    first = next(it)[0]
    n, t0 = 0, time.perf_counter()
    for x, _ in it:
        n += len(x)
    rate = n / max(time.perf_counter() - t0, 1e-9)
    # a full collection here makes the pages of our heap that a worker shares copy-on-write its
    # own in every row alike (it would happen at some point anyway): rows then differ only by
    # what the workers themselves hold
    gc.collect()
    return rate, n + len(first), worker_memory()


def summarise(name: str, images: int, rate: float, memory: list[dict]) -> dict:
    top = lambda key: round(max((m[key] for m in memory), default=0.0), 1)  # noqa: E731
    row = {"loader": name, "images": images, "images_per_s": round(rate, 1), "workers": len(memory),
           "private_mib": top("private"), "pss_anon_mib": top("pss_anon"), "pss_file_mib": top("pss_file"),
           "rss_mib": top("rss")}
    print(f"{name:<34} {images:>7} {rate:>9.1f} {row['workers']:>3} {row['private_mib']:>8.1f} "
          f"{row['pss_anon_mib']:>9.1f} {row['pss_file_mib']:>9.1f} {row['rss_mib']:>7.1f}", flush=True)
    return row


def make_sets(root: str, n: int) -> tuple[str, str]:
    small, large = os.path.join(root, "n"), os.path.join(root, "4n")
    per_class = max(1, n // 10)
    write_imagefolder(small, per_class, size=(375, 500), seed=0)
    for c in os.listdir(small):
        os.makedirs(os.path.join(large, c))
        for f in os.listdir(os.path.join(small, c)):
            for copy in range(4):
                os.link(os.path.join(small, c, f), os.path.join(large, c, f"{copy}_{f}"))
    return small, large


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000, help="N (the 4N set links each file 4 times)")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dir", default=None, help="where to write the data (default: a temp dir)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print("load before:", os.getloadavg(), flush=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        t0 = time.perf_counter()
        small, large = make_sets(root, args.images)
        print(f"wrote {args.images} JPEGs of 500x375 in {time.perf_counter() - t0:.0f} s "
              f"({sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(small) for f in fs) / args.images / 1024:.0f} KiB each)",
              flush=True)
        os.environ["OVERLOCK_NAS_CACHE"] = os.path.join(root, "cache")
        print(f"{'loader':<34} {'images':>7} {'images/s':>9} {'wk':>3} {'private':>8} {'Pss_Anon':>9} {'Pss_File':>9} {'RSS':>7}  (MiB per worker, max)")
        rows = []
        for label, path in (("N", small), ("4N", large)):
            rows.append(summarise(f"baseline (PIL in __getitem__) {label}",
                                  *run_baseline(path, args.resolution, args.batch, args.workers)))
            for cache in (False, True):
                settings = {"kind": "imagefolder", "path": path, "val_fraction": 0.1,
                            "workers": args.workers, "cache": cache}
                t0 = time.perf_counter()
                data = load_dataset(settings, args.resolution)
                build = time.perf_counter() - t0
                rate, n, memory = run_epoch(data.train.batches(args.batch, shuffle=True, seed=1, augment=True,
                                                               drop_last=True))
                name = f"stream{' + cache' if cache else ''} {label}"
                row = summarise(name, n, rate, memory)
                row["setup_s"] = round(build, 1)
                rows.append(row)
                if cache:
                    print(f"{'':<34} (cache build {build:.0f} s for {len(data.train) + len(data.val)} images)")
                    rate, n, memory = run_epoch(data.train.batches(args.batch, shuffle=True, seed=2, augment=True,
                                                                   drop_last=True))
                    rows.append(summarise(f"stream + cache {label}, 2nd epoch", n, rate, memory))
                data.close()
                del data
                _load_cached.cache_clear()
        for name in ("stream", "stream + cache"):
            a = next(r for r in rows if r["loader"] == f"{name} N")
            b = next(r for r in rows if r["loader"] == f"{name} 4N")
            print(f"{name}: private (Private_Dirty) per worker 4N / N = "
                  f"{b['private_mib'] / max(a['private_mib'], 1e-9):.2f}, Pss_Anon 4N / N = "
                  f"{b['pss_anon_mib'] / max(a['pss_anon_mib'], 1e-9):.2f}")
        a = next(r for r in rows if r["loader"] == "baseline (PIL in __getitem__) N")
        b = next(r for r in rows if r["loader"] == "stream N")
        print(f"stream / baseline images/s at N: {b['images_per_s'] / max(a['images_per_s'], 1e-9):.2f}x")
    print("load after:", os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
