"""Issue #13 on the data side: no scan dies of one file, and nothing a file can claim makes a
scan hang or eat the memory. Each test first shows the failure with real files (a PNG whose
header claims 100000×100000 pixels, a truncated JPEG, a FIFO, a dangling link, link loops),
then the promised behaviour."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnntool.core.data import BatchStream, DataSet, auto_workers, open_data
from cnntool.core.images import load_image, load_pixels
from cnntool.core.preprocessing import Preprocessing
from cnntool.core.selection import parse_indices, parse_ranges
from cnntool.errors import CnnToolError, DataError
from cnntool.io.scratch import clean_stale, scratch_owner
from tests.bad_files import write_bomb, write_good, write_truncated_jpeg

RGB_224 = Preprocessing(crop=(224, 224), resize=256)


def no_warnings(function, *args, **kwargs):
    """Call `function` and fail if it emits a Python warning that would reach stderr raw. (Not
    counted: Python 3.12's DeprecationWarning about fork() in a threaded process, which the
    DataLoader's workers raise inside multiprocessing: the default filters hide it.)"""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = function(*args, **kwargs)
    shown = [
        w
        for w in caught
        if not (issubclass(w.category, DeprecationWarning) and "multiprocessing" in w.filename)
    ]
    assert [str(w.message) for w in shown] == []
    return result


# --- 1. decompression bombs -----------------------------------------------------------------


def test_a_bomb_png_is_a_data_error_sentence(tmp_path):
    bomb = write_bomb(tmp_path / "bomb.png")
    with pytest.raises(Image.DecompressionBombError):  # what Pillow itself does with the file
        Image.open(bomb)
    with pytest.raises(DataError, match=r"100000×100000 = 10,000,000,000 pixels.*--max-pixels"):
        no_warnings(load_image, bomb)
    with pytest.raises(DataError, match="more than the limit"):
        load_pixels(bomb, RGB_224)


@pytest.mark.parametrize("workers", [0, 2])
def test_scans_skip_and_count_a_bomb_and_a_truncated_jpeg(tmp_path, workers):
    good = write_good(tmp_path)
    bomb, truncated = write_bomb(tmp_path / "bomb.png"), write_truncated_jpeg(tmp_path / "cut.jpg")
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join([good[0], str(bomb), good[1], str(truncated), good[2]]))
    stream = BatchStream(open_data(str(listing)), RGB_224, batch_size=2, workers=workers)
    batches = no_warnings(list, stream)
    assert [i for b in batches for i in b.indices] == [0, 2, 4]
    reasons = dict(stream.skipped)
    assert sorted(reasons) == sorted([str(bomb), str(truncated)])
    assert "more than the limit of 89,478,485" in reasons[str(bomb)]  # Pillow's own default
    assert all("Traceback" not in r and "\n" not in r for r in reasons.values())


def test_max_pixels_moves_the_limit_without_touching_pillows_global(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # a process that lowered it
    path = tmp_path / "big.png"
    Image.new("RGB", (1100, 1000), (9, 9, 9)).save(path)  # 1.1 M pixels: Pillow warns
    with pytest.warns(Image.DecompressionBombWarning):  # Pillow's raw warning, on stderr
        Image.open(path).close()
    with pytest.raises(DataError, match="limit of 1,000,000"):  # the default is Pillow's limit
        no_warnings(load_image, path)
    image = no_warnings(load_image, path, max_pixels=2_000_000)  # --max-pixels raises it
    assert image.size == (1100, 1000)
    with pytest.raises(DataError, match="limit of 500,000"):
        load_image(path, max_pixels=500_000)
    dataset = open_data(str(path), max_pixels=2_000_000)
    assert dataset.load(0).size == (1100, 1000)
    assert Image.MAX_IMAGE_PIXELS == 1_000_000  # put back after every open, never left off


# --- 2. decoding bounded by what the model needs ---------------------------------------------


def test_crop_region_resampling_equals_resize_then_crop():
    from cnntool.core.images import crop_pixels

    rng = np.random.default_rng(0)
    for interpolation in ("bilinear", "bicubic", "nearest"):
        for crop, resize, channels in [
            ((224, 224), 256, 3),
            ((28, 28), 28, 1),
            ((240, 200), 300, 3),
            ((224, 224), 200, 3),
        ]:  # the last pads with black
            preprocessing = Preprocessing(
                crop=crop,
                resize=resize,
                interpolation=interpolation,
                channels=channels,
                mean=(0.5,) * channels,
                std=(0.5,) * channels,
            )
            for _ in range(6):
                width, height = (int(v) for v in rng.integers(1, 700, 2))
                image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
                assert torch.equal(
                    crop_pixels(image, preprocessing), preprocessing.to_pixels(image)
                )


def test_window_resampling_stays_within_two_gray_levels_on_photos():
    """Beyond FULL_RESIZE_PIXELS only a window around the crop is resampled; Pillow takes that
    window's box in float32 and may run its two passes in the other order, hence the tolerance
    (measured on these photos: at most 2 levels, about 1% of the values 1 level off)."""
    from cnntool.core import samples
    from cnntool.core.images import crop_pixels

    paths = samples.photos()[:4] + [p for p, _ in samples.imagenet_samples()[:4]]
    for interpolation in ("bilinear", "bicubic"):
        preprocessing = Preprocessing(crop=(224, 224), resize=232, interpolation=interpolation)
        for path in paths:
            photo = load_image(path)
            for image in (photo, photo.resize((photo.width, photo.height * 40))):
                full = preprocessing.to_pixels(image)
                window = crop_pixels(image, preprocessing, full_resize_pixels=0)
                levels = ((full - window).abs() * 255).round()
                assert levels.max() <= 2 and levels.mean() < 0.05, (path, interpolation)


def test_a_1x5000_strip_is_never_resized_to_256x1280000(tmp_path, monkeypatch):
    strip = tmp_path / "strip.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (5000, 1, 3), dtype=np.uint8)).save(
        strip
    )
    # the failure: resize-then-crop makes the whole 983 MB image first (2.26 GB predict peak)
    assert RGB_224.resized_size(1, 5000) == (256, 1_280_000)

    largest = [0]
    resize = Image.Image.resize

    def recording_resize(self, size, *args, **kwargs):
        largest[0] = max(largest[0], size[0] * size[1])
        return resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", recording_resize)
    stream = BatchStream(open_data(str(strip)), RGB_224, batch_size=1, normalize=False)
    batch = next(iter(stream))
    assert largest[0] <= 224 * 224  # only the crop is ever computed
    assert batch.sizes == [(1, 5000)]  # the original size, for mapping boxes back
    monkeypatch.undo()
    full = RGB_224.to_pixels(load_image(strip))  # the old way, once, to compare
    assert ((batch.inputs[0] - full).abs() * 255).round().max() <= 1


def _big_jpegs(folder: Path, factor: float) -> list[Path]:
    from cnntool.core import samples

    files = []
    for i, path in enumerate(samples.photos()[:5]):
        photo = load_image(path)
        big = photo.resize(
            (int(photo.width * factor), int(photo.height * factor)), Image.Resampling.BICUBIC
        )
        files.append(folder / f"{i}.jpg")
        big.save(files[-1], quality=90)
    return files


def test_draft_decodes_big_jpegs_smaller_and_stays_close_to_full_decoding(tmp_path):
    from cnntool.core import samples
    from cnntool.core.images import _draft

    lite0 = Preprocessing(
        crop=(224, 224), resize=256, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3
    )
    small = Preprocessing(crop=(32, 32), resize=36)
    cases = [(lite0, p) for p in _big_jpegs(tmp_path, 4)]
    cases += [(small, Path(p)) for p in samples.photos() if p.endswith(".jpg")]
    cases += [(small, Path(p)) for p, _ in samples.imagenet_samples()[:8]]
    for preprocessing, path in cases:
        with Image.open(path) as image:
            original = image.size
            assert _draft(image, preprocessing) in (2.0, 4.0, 8.0)  # decoded at 1/2, 1/4 or 1/8
        full = preprocessing.to_pixels(load_image(path))
        drafted, size = load_pixels(path, preprocessing)
        assert size == original
        levels = (full - drafted).abs() * 255
        # measured over 87 such files: mean 0.34 levels, at most 9
        assert levels.mean() < 0.6 and levels.max() <= 16, path
        exact, _ = load_pixels(path, preprocessing, draft=False)
        assert torch.equal(exact, full)


# --- 3. only regular files; links that go nowhere are counted ---------------------------------


def test_a_fifo_in_a_path_list_is_skipped_not_waited_on(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)

    # the failure: opening a FIFO blocks until someone writes to it
    def open_it():
        with pytest.raises(Image.UnidentifiedImageError):  # once released: an empty "image"
            Image.open(fifo)

    blocked = threading.Thread(target=open_it, daemon=True)
    blocked.start()
    blocked.join(0.5)
    assert blocked.is_alive()
    with open(fifo, "wb"):  # release it
        pass
    blocked.join(5)

    good = write_good(tmp_path, 2)
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join([good[0], str(fifo), good[1]]))
    done: list = []

    def scan():
        stream = BatchStream(open_data(str(listing)), RGB_224, batch_size=4)
        done.append(([i for b in stream for i in b.indices], stream.skipped))

    worker = threading.Thread(target=scan, daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive():  # do not hang the test run: free the scan, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("the scan blocked on a FIFO")
    indices, skipped = done[0]
    assert indices == [0, 2]
    assert skipped == [(str(fifo), f"cannot read image {fifo}: not a regular file (a FIFO)")]
    with pytest.raises(DataError, match="not a regular file"):
        load_image(fifo)


def test_a_folder_counts_fifos_dangling_links_and_loops(tmp_path):
    root = tmp_path / "data"
    (root / "cats").mkdir(parents=True)
    write_good(root / "cats", 2)
    write_bomb(root / "cats" / "bomb.png")
    write_truncated_jpeg(root / "cats" / "cut.jpg")
    os.mkfifo(root / "cats" / "pipe.jpg")
    (root / "cats" / "gone.jpg").symlink_to(root / "nowhere.jpg")
    (root / "cats" / "self.png").symlink_to(root / "cats" / "self.png")
    (root / "cats" / "up").symlink_to(root)  # a folder loop
    (root / "notes.txt").write_text("not an image")
    (root / "linked").symlink_to(root / "cats")  # a link to a folder is followed
    broken = [root / "cats" / n for n in ("gone.jpg", "self.png", "pipe.jpg")]
    assert not any(p.is_file() for p in broken)  # the failure: the old walk dropped them unseen

    dataset = open_data(str(root))
    names = sorted(Path(p).relative_to(root).as_posix() for p in dataset.paths)
    assert names == [
        "cats/bomb.png",
        "cats/cut.jpg",
        "cats/good0.png",
        "cats/good1.png",
        "linked/bomb.png",
        "linked/cut.jpg",
        "linked/good0.png",
        "linked/good1.png",
    ]
    listing_reasons = {Path(p).relative_to(root).as_posix(): r for p, r in dataset.skipped}
    assert listing_reasons == {
        "cats/gone.jpg": "dangling symbolic link",
        "cats/self.png": "symbolic link loop",
        "cats/pipe.jpg": "not a regular file (a FIFO)",
        "cats/up": "symbolic link loop (links back to a folder above it)",
        "linked/gone.jpg": "dangling symbolic link",
        "linked/self.png": "symbolic link loop",
        "linked/pipe.jpg": "not a regular file (a FIFO)",
        "linked/up": "symbolic link loop (links back to a folder above it)",
    }
    stream = BatchStream(dataset, RGB_224, batch_size=3)
    assert len([i for b in stream for i in b.indices]) == 4
    report = dataset.all_skipped(stream.skipped)  # what a scan's report counts
    assert len(report) == 12 and report == sorted(report)
    assert len(dataset.head(1).skipped) == 8  # a subset still reports the listing


def test_a_folder_of_nothing_readable_says_why(tmp_path):
    (tmp_path / "a.jpg").symlink_to(tmp_path / "missing.jpg")
    with pytest.raises(
        DataError, match=r"no readable image files \(1 skipped, e\.g\. .*a\.jpg: dangling"
    ):
        open_data(str(tmp_path))


# --- 4. index ranges are checked, never expanded ---------------------------------------------


def test_a_huge_range_is_checked_arithmetically():
    tracemalloc.start()
    try:
        with pytest.raises(
            CnnToolError, match=r"^unit 999999999 does not exist: there are 64 \(0-63\)$"
        ):
            parse_indices("0-999999999", 64, what="unit")
        with pytest.raises(CnnToolError, match="names 1,000,000,000 unit numbers"):
            parse_indices("0-999999999", what="unit")
        assert parse_ranges("0-999999999") == ((0, 999_999_999),)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # the old parser built the list first: 23 GB
    assert parse_indices("0-99999", 100_000) == list(range(100_000))  # large within a large count


def test_index_lists_keep_order_and_drop_repeats():
    assert parse_indices("5,0-3,2", 10) == [5, 0, 1, 2, 3]
    assert parse_indices("all", 10) is None and parse_indices(None) is None
    assert parse_indices(" 7 ") == [7]
    for bad in ("3-1", "a", "-2", "1,,x", "1-2-3"):
        with pytest.raises(CnnToolError, match="is not a list of indices like 0-15,42"):
            parse_indices(bad)
    with pytest.raises(CnnToolError, match="empty"):
        parse_indices(" , ")
    with pytest.raises(CnnToolError, match=r"there are 0 \(none\)"):
        parse_indices("0", 0)


# --- 5. scratch files a killed run leaves behind ---------------------------------------------

_KILLED_RUN = """
import sys, time
from pathlib import Path
from cnntool.io.writers import atomic_path
from cnntool.tasks.features import FeatureSpool
folder = Path(sys.argv[1])
spool = FeatureSpool(folder)
spool.append([0], __import__("numpy").ones((1, 4)))
with atomic_path(folder / "result.npz") as temp:
    temp.write_bytes(b"half")
    print(temp, spool.path, flush=True)
    time.sleep(600)
"""


def test_sigkill_leftovers_are_recognized_and_cleaned(tmp_path):
    run = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        part, spool = (Path(p) for p in run.stdout.readline().split())
        assert clean_stale(tmp_path) == []  # the run is alive: its files are left alone
        os.kill(run.pid, signal.SIGKILL)
        run.wait(30)
    finally:
        if run.poll() is None:
            run.kill()
        run.stdout.close()
    # the failure: both stay behind after SIGKILL
    assert part.exists() and part.suffix == ".part" and spool.exists() and spool.suffix == ".f32"
    assert scratch_owner(part.name).pid == run.pid == scratch_owner(spool.name).pid
    kept = tmp_path / "keep.txt"
    kept.write_text("an output")
    removed = clean_stale(tmp_path)
    assert [(r.path, r.reason) for r in removed] == sorted(
        [(part, f"process {run.pid} is gone"), (spool, f"process {run.pid} is gone")]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_clean_stale_goes_by_age_for_other_hosts_and_old_names(tmp_path):
    from cnntool.io.writers import atomic_path

    day_old = time.time() - 2 * 24 * 3600
    other_host = tmp_path / ".out.png.12345@elsewhere.abcdefgh.part"
    legacy_spool = tmp_path / ".cnntool-features.k2j3h4x_.f32"  # before names carried a PID
    legacy_part = tmp_path / ".out.png.zzzzzzzz.part"
    fresh_other_host = tmp_path / ".new.png.12345@elsewhere.abcdefgh.part"
    not_ours = tmp_path / ".browser.part"
    for path in (other_host, legacy_spool, legacy_part, fresh_other_host, not_ours):
        path.write_bytes(b"x" * 10)
    for path in (other_host, legacy_spool, legacy_part, not_ours):
        os.utime(path, (day_old, day_old))
    (tmp_path / ".link.abcdefgh.part").symlink_to(other_host)
    with atomic_path(tmp_path / "live.txt") as live:  # this process's own, in progress
        live.write_text("writing")
        removed = clean_stale(tmp_path)
        assert live.exists()
    assert [(r.path.name, r.size, r.reason) for r in removed] == sorted(
        [(p.name, 10, "older than a day") for p in (other_host, legacy_spool, legacy_part)]
    )
    assert fresh_other_host.exists() and not_ours.exists()
    assert clean_stale(tmp_path / "missing") == []


def test_a_scratch_name_fits_whatever_the_output_name(tmp_path):
    """`.{stem}.{pid}@{host}.{random}.part` of a valid 250-byte output name would pass the
    255-byte limit (ENAMETOOLONG): the stem is shortened, whole characters, the owner kept."""
    from cnntool.io.scratch import scratch_file
    from cnntool.io.writers import atomic_path

    for stem in ("n" * 250, "é" * 127, "\udcff" * 250):  # ASCII, 2-byte UTF-8, undecodable bytes
        handle, path = scratch_file(tmp_path, stem, ".part")
        os.close(handle)
        assert len(os.fsencode(path.name)) <= 255 and path.name.startswith("." + stem[:50])
        assert scratch_owner(path.name).pid == os.getpid()
        os.fsencode(path.name).decode("utf-8", "surrogateescape")  # no character cut in half
        path.unlink()
    with atomic_path(tmp_path / ("n" * 246 + ".npz")) as temp:
        temp.write_bytes(b"x")
    assert os.listdir(tmp_path) == ["n" * 246 + ".npz"]


def test_an_output_that_is_a_device_or_fifo_is_written_in_place_not_replaced(tmp_path):
    """`-o /dev/null` or a FIFO: renaming a finished scratch file onto it would replace the
    device (root may), so such an output is written where it is."""
    import stat as stat_module

    from cnntool.io.writers import check_writable, open_output

    fifo = tmp_path / "out.jsonl"
    os.mkfifo(fifo)
    received: list = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    check_writable(fifo)
    with open_output(fifo) as handle:
        handle.write("hello\n")
    reader.join(10)
    assert received == ["hello\n"]
    assert stat_module.S_ISFIFO(os.stat(fifo).st_mode) and os.listdir(tmp_path) == ["out.jsonl"]


# --- 5b. names that cannot be opened: one mechanism -------------------------------------------


def test_a_path_list_keeps_undecodable_names_and_counts_a_nul_byte(tmp_path):
    """A path list is bytes: a name that is not UTF-8 opens its file (it used to be 'replaced'
    into a name that does not exist); a line with a NUL byte cannot name a file and is skipped
    and counted; the resume fingerprint takes both."""
    from cnntool.io.resume import dataset_fingerprint

    good = write_good(tmp_path, 2)
    odd = os.fsencode(tmp_path) + b"/caf\xe9.png"  # Latin-1 'café'
    Image.new("RGB", (40, 30), (10, 200, 30)).save(odd)
    listing = tmp_path / "list.txt"
    listing.write_bytes(
        b"\n".join([os.fsencode(good[0]), b"x\x00y.png", odd, os.fsencode(good[1])])
    )
    dataset = open_data(str(listing))
    assert [os.fsencode(p) for p in dataset.paths] == [
        os.fsencode(good[0]),
        odd,
        os.fsencode(good[1]),
    ]
    assert dataset.skipped == [("x\x00y.png", "the name contains a NUL byte")]
    stream = BatchStream(dataset, RGB_224, batch_size=4)
    assert [i for b in stream for i in b.indices] == [0, 1, 2] and stream.skipped == []
    assert len(dataset_fingerprint(dataset)) == 64
    # one wording for every name that cannot be opened, whether listed or loaded
    for name, reason in (
        ("a\x00b.png", "the name contains a NUL byte"),
        ("n" * 300 + ".png", "the name is too long"),
        ("\ud800.png", "the name is not valid in the file system's encoding"),
    ):
        with pytest.raises(DataError, match=f"^cannot read image .*: {reason}$"):
            load_image(tmp_path / name)

    # written into a page, a JSON or a CSV file, such a name keeps the file UTF-8 (and in JSON
    # the escape reads back as the same name)
    from cnntool.io.writers import write_json

    write_json(tmp_path / "names.json", {"path": os.fsdecode(odd)})
    assert json.loads((tmp_path / "names.json").read_text(encoding="utf-8"))["path"] == os.fsdecode(
        odd
    )


# --- 6. the DataLoader keeps up ----------------------------------------------------------------


def test_automatic_workers():
    assert auto_workers(100, cores=1) == 0  # one core: decoding stays in the main process
    assert auto_workers(1, cores=16) == 0  # one batch does not pay for a process start
    assert auto_workers(100, cores=2) == 1  # CPU: the forward pass needs cores too
    assert auto_workers(100, "cpu", cores=64) == 8  # at most 8 beside a CPU forward pass
    assert auto_workers(100, "cuda:0", cores=16) == 15  # all but the main process's core
    assert auto_workers(100, "cuda", cores=128) == 32
    assert auto_workers(2, "cuda", cores=16) == 2  # never more than the batches


def test_workers_persist_between_passes_and_give_the_same_batches(tmp_path):
    write_good(tmp_path, 5)
    dataset = open_data(str(tmp_path))
    single = torch.cat([b.inputs for b in BatchStream(dataset, RGB_224, batch_size=2)])
    with BatchStream(dataset, RGB_224, batch_size=2, workers=2) as stream:
        first = torch.cat([b.inputs for b in stream])
        loader = stream._data_loader()
        assert loader.persistent_workers and loader.prefetch_factor == 4 and not loader.pin_memory
        second = torch.cat([b.inputs for b in stream])
        assert stream._data_loader() is loader  # the same worker processes served both passes
    assert stream._loader is None
    assert torch.equal(single, first) and torch.equal(single, second)
    auto = BatchStream(dataset, RGB_224, batch_size=2, workers=None)
    assert auto.worker_count == auto_workers(3)
    assert torch.equal(single, torch.cat([b.inputs for b in auto]))
    auto.close()


def test_pinned_memory_only_for_cuda():
    dataset = DataSet("x", ["a.png"], [None])
    assert not BatchStream(dataset, RGB_224).pin_memory
    assert not BatchStream(dataset, RGB_224, device=torch.device("cpu")).pin_memory
    assert BatchStream(dataset, RGB_224, device="cuda").pin_memory == torch.cuda.is_available()


# --- 7. NaN pixels are quantized without numpy's raw warning ----------------------------------


def test_nan_pixels_become_black_without_a_warning():
    from cnntool.io.figures import pixels_to_image
    from cnntool.io.grids import to_image
    from cnntool.tasks.attack.full_res import full_resolution

    with pytest.warns(RuntimeWarning, match="invalid value encountered in cast"):  # the failure
        np.array([np.nan], dtype=np.float32).astype(np.uint8)
    nan = np.full((3, 8, 8), np.nan, dtype=np.float32)
    assert np.asarray(no_warnings(pixels_to_image, nan)).max() == 0
    assert np.asarray(no_warnings(to_image, nan.transpose(1, 2, 0))).max() == 0
    photo = Image.new("RGB", (300, 260), (200, 100, 50))
    clean = torch.zeros(3, 224, 224)
    adversarial = torch.full((3, 224, 224), float("nan"))
    published = np.asarray(no_warnings(full_resolution, RGB_224, photo, clean, adversarial))
    assert published[0, 0].tolist() == [200, 100, 50]  # outside the crop: the photo
    assert published[130, 150].tolist() == [0, 0, 0]  # NaN inside the crop: black


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_cuda_batches_come_pinned_and_copy_without_blocking(tmp_path):
    write_good(tmp_path, 5)
    dataset = open_data(str(tmp_path))
    for workers in (0, 2):
        with BatchStream(dataset, RGB_224, batch_size=2, workers=workers, device="cuda") as stream:
            batches = list(stream)
        assert all(b.inputs.is_pinned() for b in batches)
        on_gpu = torch.cat([b.inputs.to("cuda", non_blocking=True) for b in batches])
        plain = torch.cat([b.inputs for b in BatchStream(dataset, RGB_224, batch_size=2)])
        assert torch.equal(on_gpu.cpu(), plain)


def test_a_fork_during_an_open_leaves_the_child_a_free_lock_and_pillows_limit(tmp_path):
    """DataLoader workers are forked; if another thread is inside an open at that moment, the
    child must not inherit a held lock (its first image would wait forever) nor Pillow's check
    switched off."""
    from cnntool.core import images

    path = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(path)
    limit = Image.MAX_IMAGE_PIXELS
    with images.opened_image(path) as image:  # this thread is inside an open
        assert Image.MAX_IMAGE_PIXELS is None and image.size == (8, 8)
        child = os.fork()
        if child == 0:  # the child: it can open images, and Pillow's limit is back
            signal.alarm(30)  # a deadlocked child dies instead of hanging the test run
            ok = images.load_image(path).size == (8, 8) and limit == Image.MAX_IMAGE_PIXELS
            os._exit(0 if ok else 1)
        _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert limit == Image.MAX_IMAGE_PIXELS
