"""Streamed ImageFolders: an ImageNet-shaped folder trains through worker processes, worker memory
stays flat from N to 4N images, subsets are seeded, bad files are skipped and counted, bad layouts
are one-line errors, and the decode cache is written once and shared."""

import multiprocessing
import os

import numpy as np
import pytest
import torch

from nas.data import DataError, _load_cached, load_dataset, parse_dataset_settings
from nas.data.procedural import write_imagefolder
from nas.data.stream import StreamSplit
from nas.evaluators import get_evaluator


@pytest.fixture(autouse=True)
def _fresh_datasets():
    """load_dataset caches per process; every test here starts from files."""
    _load_cached.cache_clear()
    yield
    _load_cached.cache_clear()


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory):
    """200 JPEGs of 500x375 (10 classes x 20), procedural shapes: an ImageNet-shaped folder."""
    root = str(tmp_path_factory.mktemp("imagenet-like"))
    write_imagefolder(root, 20, size=(375, 500), seed=0)
    return root


def _folder(path, **extra):
    return {"kind": "imagefolder", "path": str(path), **extra}


def _write_png(root, classes, per_class, size=(20, 30)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        os.makedirs(os.path.join(root, c), exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)).save(
                os.path.join(root, c, f"{i:03d}.png"))


def _children() -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        try:
            with open(f"/proc/{os.getpid()}/task/{task}/children") as fh:
                out += [int(c) for c in fh.read().split()]
        except OSError:
            pass
    return out


# ----------------------------------------------------------------------- the streaming path
@pytest.mark.slow
def test_imagenet_shaped_folder_trains_through_worker_processes(imagenet_like, tiny_config, tmp_path):
    settings = {"epochs": 1, "batch_size": 16, "resolution": 32, "threads": 1, "warmup_epochs": 0.5,
                "dataset": _folder(imagenet_like, workers=2, val_fraction=0.2)}
    others = set(_children())     # whatever this test process started before (e.g. Ray)
    result = get_evaluator("train", settings).evaluate(tiny_config, budget_epochs=None, device="cpu",
                                                       seed=0, workdir=str(tmp_path), resume_from=None)
    assert 0.0 <= result["score"] <= 1.0 and len(result["history"]) == 1
    assert np.isfinite(result["train_loss"][0]) and result["data_skipped"] == 0
    data = load_dataset(settings["dataset"], 32)
    assert isinstance(data.train, StreamSplit) and len(data.train) == 160 and len(data.val) == 40
    assert data.train.workers == 2 and data.train.base == (37, 37)  # resize = 32 / 0.875
    # the train loader keeps its two workers between epochs; validation's stop after each pass
    assert len(set(_children()) - others) == 2, (_children(), others)
    data.close()
    workers_before = set(_children())
    next(data.train.batches(16, shuffle=True, augment=True))
    assert len(set(_children()) - workers_before) == 2   # decoded in two worker processes
    data.close()


def test_stream_batches_depend_only_on_the_seed_not_on_workers(imagenet_like):
    runs = []
    for workers in (0, 2):
        _load_cached.cache_clear()
        data = load_dataset(_folder(imagenet_like, workers=workers, train_size=48), 32)
        runs.append([(x, y) for x, y in data.train.batches(16, shuffle=True, seed=3, augment=True)])
        other = [y for _, y in data.train.batches(16, shuffle=True, seed=4, augment=True)]
        data.close()
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(*runs))
    assert not all(torch.equal(a[1], b) for a, b in zip(runs[0], other))
    x, _ = runs[0][0]
    assert x.shape == (16, 3, 32, 32) and abs(float(x.mean())) < 2.0   # normalised


def _anonymous_mib(pid: int) -> float:
    """Anonymous memory a process maps (MiB), whether or not it still shares it copy-on-write."""
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/smaps_rollup") if ":" in line)
    return int(fields["Anonymous"].split()[0]) / 1024


@pytest.mark.slow
def test_worker_memory_is_flat_from_n_to_4n_images(imagenet_like, tmp_path, monkeypatch):
    """A worker that kept what it decoded (or a copy of the file list per image) would grow by
    the decoded size of the extra 3N images; the streaming worker must not.

    Read as the worker's anonymous memory, not its USS: a forked worker shares the trainer's heap
    copy-on-write, and a write by either process to a shared page moves that page into the
    worker's USS. Forked from a process holding a large heap (as a late pytest-xdist worker
    does), those moves made the USS growth difference from -98 to +109 MiB for a worker that
    keeps nothing (2026-12-07, load 13-40), against 33 MiB of signal; anonymous memory counts a
    page once, whoever writes it (the same setting: within 0.3 MiB in 8 of 8 runs; 98 MiB for
    a worker that keeps what it decodes). The worker first returns the free heap it inherited
    (`malloc_trim`): otherwise it reuses it without new pages, or trims it mid-pass (-36 to
    -114 MiB at a random point)."""
    import ctypes

    from nas.data import stream

    init = stream._init_worker

    def init_without_the_trainers_free_heap(worker_id):
        init(worker_id)
        ctypes.CDLL("libc.so.6").malloc_trim(0)

    monkeypatch.setattr(stream, "_init_worker", init_without_the_trainers_free_heap)
    large = tmp_path / "4n"
    for c in os.listdir(imagenet_like):
        os.makedirs(large / c)
        for f in os.listdir(os.path.join(imagenet_like, c)):
            for copy in range(4):
                os.link(os.path.join(imagenet_like, c, f), large / c / f"{copy}_{f}")
    decoded_3n_mib = 3 * 180 * 146 * 146 * 3 / 2 ** 20       # base images of the extra 3N
    held, growth = _worker_memory_over_a_pass({"N": imagenet_like, "4N": large})
    assert held["4N"] - held["N"] < 0.5 * decoded_3n_mib, (held, decoded_3n_mib)
    assert growth["4N"] - growth["N"] < 0.5 * decoded_3n_mib, (growth, decoded_3n_mib)


def _worker_memory_over_a_pass(folders: dict) -> tuple[dict, dict]:
    """Per folder: the decode worker's anonymous memory (MiB) after a full pass, and its growth
    during the pass (from the first batch on)."""
    resolution = 128
    held, growth = {}, {}
    for label, path in folders.items():
        _load_cached.cache_clear()
        # one small batch in flight (prefetch 1), so what is in flight is alike for N and 4N
        data = load_dataset(_folder(path, workers=1, prefetch=1, val_fraction=0.1), resolution)
        batches = data.train.batches(16)
        seen = len(next(batches)[1])
        (worker,) = [w.pid for w in data.train._loader._iterator._workers]
        start = _anonymous_mib(worker)
        seen += sum(len(y) for _, y in batches)                   # the rest of a full pass
        assert seen == len(data.train)
        end = _anonymous_mib(worker)
        held[label], growth[label] = end, end - start
        data.close()
    return held, growth


# ----------------------------------------------------------------------------- subsets
def test_per_class_subset_class_list_and_seed_are_deterministic(tmp_path):
    _write_png(tmp_path / "train", ["a", "b", "c"], 6)
    _write_png(tmp_path / "val", ["a", "b", "c"], 3)
    (tmp_path / "classes.txt").write_text("# two of three\nc\n\na  # labels follow this order\n")
    settings = _folder(tmp_path, train_per_class=2, class_list=str(tmp_path / "classes.txt"), seed=5)
    a = load_dataset(settings, 32)
    assert a.class_names == ("c", "a") and a.num_classes == 2
    assert torch.bincount(a.train.labels).tolist() == [2, 2] and len(a.val) == 6
    first = [a.train.describe(i) for i in range(len(a.train))]
    assert all(os.sep + "c" + os.sep in p for p in first[:2])        # label 0 is class c
    _load_cached.cache_clear()
    again = load_dataset(dict(settings), 32)
    assert [again.train.describe(i) for i in range(len(again.train))] == first
    picks = set()
    for seed in range(6):
        _load_cached.cache_clear()
        other = load_dataset({**settings, "seed": seed}, 32)
        picks.add(tuple(other.train.describe(i) for i in range(len(other.train))))
    assert len(picks) > 1                                            # the seed chooses the files
    _load_cached.cache_clear()
    sized = load_dataset(_folder(tmp_path, train_size=4), 32)
    assert len(sized.train) == 4 and sorted(torch.bincount(sized.train.labels).tolist()) == [1, 1, 2]


# ---------------------------------------------------------------------- bad files, errors
def test_corrupt_images_are_skipped_and_counted_not_fatal(imagenet_like, tmp_path, tiny_config):
    import shutil

    root = tmp_path / "data"
    for c in ("disk", "ring"):
        shutil.copytree(os.path.join(imagenet_like, c), root / c)
    (root / "disk" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    good = (root / "ring" / "000000.jpg").read_bytes()
    (root / "ring" / "truncated.jpg").write_bytes(good[:len(good) // 3])
    (root / "ring" / "empty.png").write_bytes(b"")
    settings = _folder(root, workers=0, val_fraction=0.25, seed=1)
    data = load_dataset(settings, 32)
    served = sum(len(y) for _, y in data.train.batches(8)) + sum(len(y) for _, y in data.val.batches(8))
    total = len(data.train) + len(data.val)
    skipped = data.skipped()
    assert served == total - len(skipped) and 2 <= len(skipped) <= 3   # truncated may still decode
    assert any("broken.jpg" in p for p in skipped) and any("empty.png" in p for p in skipped)
    assert all("\n" not in reason for reason in skipped.values())
    _load_cached.cache_clear()
    result = get_evaluator("train", {"epochs": 1, "batch_size": 8, "resolution": 32, "threads": 1,
                                     "dataset": settings}).evaluate(
        tiny_config, budget_epochs=None, device="cpu", seed=0, workdir=str(tmp_path / "w"), resume_from=None)
    assert result["data_skipped"] == len(skipped) and np.isfinite(result["score"])


def test_folder_problems_are_one_line_errors(tmp_path):
    _write_png(tmp_path / "train", ["a", "b"], 2)
    _write_png(tmp_path / "val", ["a", "b"], 1)
    os.makedirs(tmp_path / "train" / "empty")
    os.makedirs(tmp_path / "val" / "empty")
    cases = [
        (_folder(tmp_path), "class 'empty' has no images"),
        (_folder(tmp_path, class_list=str(tmp_path / "nope.txt")), "dataset.class_list="),
        (_folder(tmp_path, train_size=2, train_per_class=1), "exclude each other"),
        (_folder("/no/such/folder"), "dataset.path='/no/such/folder' is not a directory"),
        ({"kind": "procedural", "train_per_class": 3}, "dataset.train_per_class"),
        (_folder(tmp_path, crop_ratio=1.5), "dataset.crop_ratio=1.5"),
    ]
    (tmp_path / "missing.txt").write_text("a\nzebra\n")
    cases.append((_folder(tmp_path, class_list=str(tmp_path / "missing.txt")), "class 'zebra' is not a directory"))
    for settings, message in cases:
        with pytest.raises(DataError) as info:
            load_dataset(settings, 32)
        assert message in str(info.value) and "\n" not in str(info.value), (settings, str(info.value))
    with pytest.raises(ValueError, match=r"augment.crop='zoom' must be one of"):
        get_evaluator("train", {"augment": {"crop": "zoom"}})
    with pytest.raises(ValueError, match=r"augment.flip: unknown key"):
        get_evaluator("train", {"augment": {"flip": True}})


# --------------------------------------------------------------------------- the cache
def test_cache_is_written_once_then_read_without_decoding(imagenet_like, monkeypatch):
    import nas.data.stream as stream

    settings = _folder(imagenet_like, workers=0, train_size=40, val_size=20, cache=True)
    built = load_dataset(settings, 32)
    assert built.train.cache_state == "built" and built.val.cache_state == "built"
    cached = [b for b in built.train.batches(16, shuffle=True, seed=2, augment=True)]
    _load_cached.cache_clear()

    def no_decoding(*args):
        raise AssertionError("decoded although the cache holds the image")

    read_base, read_image = stream.read_base, stream.read_image
    monkeypatch.setattr(stream, "read_base", no_decoding)
    monkeypatch.setattr(stream, "read_image", no_decoding)
    again = load_dataset(settings, 32)
    assert again.train.cache_state == "reused"
    reread = list(again.train.batches(16, shuffle=True, seed=2, augment=True))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(cached, reread))
    monkeypatch.setattr(stream, "read_base", read_base)
    monkeypatch.setattr(stream, "read_image", read_image)
    _load_cached.cache_clear()
    # uncached: the same crops, resampled once from the file instead of from the stored base
    plain = load_dataset({**settings, "cache": False}, 32)
    grey = 1 / 255 / 0.25                                            # one grey level, normalised
    for aug, worst, mean in ((False, 2 * grey, 0.1 * grey), (True, None, 3 * grey)):
        pairs = zip(again.train.batches(16, shuffle=True, seed=2, augment=aug),
                    plain.train.batches(16, shuffle=True, seed=2, augment=aug))
        diffs = [(a - b).abs() for (a, _), (b, _) in pairs]
        assert float(torch.cat([d.flatten() for d in diffs]).mean()) < mean
        assert worst is None or max(float(d.max()) for d in diffs) <= worst + 1e-6
    files = os.listdir(os.path.join(os.environ["OVERLOCK_NAS_CACHE"], "data"))
    assert sorted(f.rsplit(".", 1)[1] for f in files) == ["json", "json", "lock", "lock", "u8", "u8"]


def _load_in_child(settings, barrier, queue):
    barrier.wait()
    data = load_dataset(settings, 32)
    queue.put((data.train.cache_state, float(next(data.train.batches(40))[0].sum())))


def test_concurrent_cache_writers_build_once(imagenet_like):
    settings = _folder(imagenet_like, workers=0, train_size=40, val_size=10, cache=True)
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_load_in_child, args=(settings, barrier, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    states = sorted(state for state, _ in results)
    assert states == ["built", "reused", "reused"], states
    assert len({checksum for _, checksum in results}) == 1


def test_loader_keys_do_not_change_the_resume_fingerprint():
    a = get_evaluator("train", {"dataset": {"kind": "procedural", "workers": 0}})
    b = get_evaluator("train", {"dataset": {"kind": "procedural", "workers": 4, "prefetch": 2}})
    c = get_evaluator("train", {"dataset": {"kind": "procedural", "seed": 1}})
    assert a._fingerprint() == b._fingerprint() != c._fingerprint()
    assert parse_dataset_settings({"kind": "procedural", "cache": True}).cache is True


def test_augment_mapping_runs_every_transform(imagenet_like, tiny_config, tmp_path):
    full = {"hflip": True, "crop": "random_resized", "rrc_scale": [0.5, 1.0], "randaugment": {"n": 1, "m": 5},
            "mixup": 0.2, "cutmix": 1.0}
    data = load_dataset(_folder(imagenet_like, workers=0, train_size=20), 32)
    plain = [x for x, _ in data.train.batches(10)]
    off = [x for x, _ in data.train.batches(10, shuffle=False, augment=False)]
    assert all(torch.equal(a, b) for a, b in zip(plain, off))           # false = no augmentation
    x, y = next(data.train.batches(10, shuffle=True, augment=full))
    assert x.shape == (10, 3, 32, 32) and y.shape == (10, 10)            # soft targets
    assert torch.allclose(y.sum(1), torch.ones(10)) and torch.isfinite(x).all()
    flips = {"hflip": False, "crop": "none"}
    assert torch.equal(next(data.train.batches(10, augment=flips))[0], plain[0])
    result = get_evaluator("train", {"epochs": 1, "batch_size": 8, "resolution": 32, "threads": 1,
                                     "augment": full, "dataset": {"kind": "procedural", "train_size": 32,
                                                                  "val_size": 16}}).evaluate(
        tiny_config, budget_epochs=None, device="cpu", seed=0, workdir=str(tmp_path), resume_from=None)
    assert np.isfinite(result["train_loss"][0])


def test_a_split_serves_one_pass_at_a_time(imagenet_like):
    data = load_dataset(_folder(imagenet_like, workers=0, train_size=40), 32)
    first = data.train.batches(8)
    next(first)
    second = data.train.batches(8, shuffle=True, seed=1)
    next(second)
    with pytest.raises(RuntimeError, match="one pass at a time"):
        next(first)
    assert sum(len(y) for _, y in second) == 32                      # the newer pass is intact


def test_an_image_replaced_under_its_name_is_decoded_again_not_read_from_the_cache(tmp_path):
    from PIL import Image

    _write_png(tmp_path / "train", ["a", "b"], 4, size=(32, 32))
    settings = _folder(tmp_path, workers=0, val_fraction=0.25, cache=True)
    first = load_dataset(settings, 32)
    assert first.train.cache_state == "built"
    target = first.train.table.path(0)
    before = next(first.train.batches(len(first.train)))[0][0]
    _load_cached.cache_clear()
    assert load_dataset(settings, 32).train.cache_state == "reused"
    Image.new("RGB", (32, 32), (255, 255, 255)).save(target)           # same name, new image
    st = os.stat(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))    # a clock that moved on
    _load_cached.cache_clear()
    again = load_dataset(settings, 32)
    assert again.train.cache_state == "built"
    after = next(again.train.batches(len(again.train)))[0][0]
    assert not torch.equal(before, after) and float(after.std()) < 1e-4  # the white image
