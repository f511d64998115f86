"""The README's "Guarantees", command by command, as a user meets them (#13):
- a folder with a decompression bomb, a truncated JPEG, a FIFO and a dangling link: every
  dataset command completes, and its stderr counts the 4 skipped files;
- `cnntool … | head -1`: a closed pipe is a normal end (exit 0, nothing on stderr);
- conflicting or out-of-range options are usage errors (exit 2) found before any model loads;
- a resume state left for other files, a second run into the same folder, an empty state:
  one sentence each, never a merge of stale data.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from tests.bad_files import bad_folder, write_good
from tests.helpers import cli_env

pytestmark = pytest.mark.slow

# every command that scans DATA, with options that keep it quick on LeNet-5
DATASET_COMMANDS = {
    "predict": ["predict", "lenet5-mnist", "{data}"],
    "attack": ["attack", "fgsm", "lenet5-mnist", "{data}", "--eps", "0.1"],
    "top-patches": ["visualize", "top-patches", "lenet5-mnist", "{data}", "--layer", "conv1",
                    "--units", "0-1", "--top", "2", "-o", "{out}"],
    "features": ["features", "lenet5-mnist", "{data}", "-o", "{out}/f.npz"],
    "embed": ["embed", "lenet5-mnist", "{data}", "--method", "pca"],
    "diagnose": ["diagnose", "lenet5-mnist", "{data}", "--no-correlation"],
}


def _fill(args, **values):
    return [a.format(**values) for a in args]


@pytest.mark.parametrize("workers", ["0", "2"])
@pytest.mark.parametrize("command", sorted(DATASET_COMMANDS))
def test_every_scan_skips_and_counts_four_bad_files(command, workers, cnntool, tmp_path):
    data = bad_folder(tmp_path / "data")
    result = cnntool(*_fill(DATASET_COMMANDS[command], data=data, out=tmp_path / "out"),
                     "--workers", workers)
    assert result.returncode == 0, result.stderr
    assert "skipped 4 unreadable image(s) of 7" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [
    ["models"],
    ["layers", "lenet5-mnist"],
    ["profile", "lenet5-mnist"],
    ["predict", "lenet5-mnist", "mnist-5k", "--batch-size", "500"],
    ["attack", "fgsm", "lenet5-mnist", "mnist-5k", "--eps", "0.1", "--batch-size", "500"],
    ["embed", "lenet5-mnist", "mnist-5k", "--method", "pca", "--batch-size", "500"],
    ["diagnose", "lenet5-mnist", "mnist-5k", "--limit", "200", "--no-correlation"],
    ["gradcheck", "lenet5-mnist"],
    ["visualize", "top-patches", "lenet5-mnist", "mnist-5k", "--layer", "conv1", "--units",
     "0-15", "--top", "4", "--batch-size", "500", "-o", "{out}"],
], ids=lambda args: args[0] if args[0] != "visualize" else args[1])
def test_a_closed_pipe_is_a_normal_end(args, tmp_path):
    command = " ".join([sys.executable, "-m", "cnntool", *_fill(args, out=tmp_path), "-q"])
    result = subprocess.run(["bash", "-c", f"{command} | head -1; exit ${{PIPESTATUS[0]}}"],
                            capture_output=True, text=True, env=cli_env(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1
    assert "Error" not in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("args, words", [
    (["attack", "fgsm", "lenet5-mnist", "mnist-5k", "--eps", "-0.1"], "outside [0, 1]"),
    (["attack", "fgsm", "lenet5-mnist", "mnist-5k", "--eps", "1e400"], "too large"),
    (["attack", "fgsm", "lenet5-mnist", "mnist-5k", "--triptychs", "2"], "needs -o"),
    (["gradcheck", "lenet5-mnist", "--params", "--inputs"], "give one"),
    (["gradcheck", "lenet5-mnist", "--input-size", "-5"], "below 1 pixel"),
    (["embed", "--features", "f.npz", "--layer", "conv1"], "--features file already"),
    (["predict", "lenet5-mnist", "mnist-5k", "--arch", "resnet18"], "drop --arch"),
    (["predict", "x.pt", "mnist-5k", "--weights", "y.pt"], "weight file already"),
])
def test_contradictions_are_usage_errors_before_any_model_loads(args, words, cnntool):
    result = cnntool(*args)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr


def test_profile_refuses_an_absurd_input_size_in_one_sentence(cnntool):
    result = cnntool("profile", "lenet5-mnist", "--input-size", "100000")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def _top_patches(cnntool, data, out, *extra):
    return cnntool("visualize", "top-patches", "lenet5-mnist", data, "--layer", "conv1",
                   "--units", "0-1", "--top", "2", "--batch-size", "1", "--checkpoint-every", "1",
                   "-o", out, "-q", "--workers", "0", *extra)


def _data_and_out(tmp_path, images: int, out_exists: bool = True):
    """A folder of `images` good PNGs and the output folder of a top-patches run."""
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    write_good(data, images)
    if out_exists:
        out.mkdir()
    return data, out


def test_resume_refuses_a_state_saved_for_files_that_changed(cnntool, tmp_path):
    data, out = _data_and_out(tmp_path, 4, out_exists=False)
    state = out / ".top-patches-state.pt"
    first = _top_patches(cnntool, data, out)
    assert first.returncode == 0, first.stderr
    assert not state.exists()  # a finished scan leaves no state behind
    # keep a state by hand, as an interrupted run leaves it, then change one file
    from cnntool.core.data import open_data
    from cnntool.io.resume import StateFile, dataset_fingerprint

    dataset = open_data(str(data))
    key = dict(model="lenet5-mnist", layer="conv1", units="0-1", top=2, per_image=1,
               data=dataset.name, images=len(dataset), world=1)
    StateFile(out, ".top-patches-state.pt", key, dataset_fingerprint(dataset)).save(
        {"topk": None, "next": 2})
    stale = data / "good0.png"
    os.utime(stale, (time.time() + 10, time.time() + 10))  # same name, same size, new time
    resumed = _top_patches(cnntool, data, out, "--resume")
    assert resumed.returncode == 1
    assert "changed since" in resumed.stderr and "Traceback" not in resumed.stderr


def test_an_empty_resume_state_is_one_sentence_not_an_abort(cnntool, tmp_path):
    data, out = _data_and_out(tmp_path, 2)
    (out / ".top-patches-state.pt").write_bytes(b"")
    result = _top_patches(cnntool, data, out, "--resume")
    assert result.returncode == 1, result.stderr
    assert "empty or corrupt" in result.stderr and "aborted" not in result.stderr


def test_two_runs_into_one_folder_do_not_share_a_state(cnntool, tmp_path):
    data, out = _data_and_out(tmp_path, 2)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        (out / ".top-patches.lock").write_text(f"{socket.gethostname()}\n{sleeper.pid}\n")
        busy = _top_patches(cnntool, data, out)
        assert busy.returncode == 1
        assert f"PID {sleeper.pid}" in busy.stderr and "another -o" in busy.stderr
    finally:
        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()
    # its owner is gone: the lock is taken over, the scan runs and leaves no lock behind
    again = _top_patches(cnntool, data, out)
    assert again.returncode == 0, again.stderr
    assert not (out / ".top-patches.lock").exists()
    assert len([json.loads(line) for line in again.stdout.splitlines()]) == 4


def test_nan_weights_make_predict_and_gradcheck_refuse_in_one_sentence(cnntool, tmp_path):
    import torch

    from cnntool.core.zoo import load_builtin

    state = load_builtin("lenet5-mnist").state_dict()
    state["linear2.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    for args in (["predict", tmp_path / "nan.pt", "--arch", "lenet5-mnist", "mnist-5k"],
                 ["gradcheck", tmp_path / "nan.pt", "--arch", "lenet5-mnist"]):
        result = cnntool(*args)
        assert result.returncode == 1, result.stderr
        assert "linear2.weight (1 NaN)" in result.stderr and "meaningless" in result.stderr
        assert "Traceback" not in result.stderr and not result.stdout


def test_a_hit_whose_image_became_unreadable_is_left_out_with_a_reason(tmp_path):
    """Between the scan and the crops a file may go away: that patch is left out and named,
    the others are drawn (io.patches)."""
    from PIL import Image

    from cnntool.errors import DataError
    from cnntool.io.patches import write_top_patches
    from cnntool.tasks.top_patches import Hit, TopPatches

    hits = ((Hit(0, 0, 0, 2.0, (0, 0), (0, 0, 8, 8)), Hit(0, 1, 1, 1.0, (0, 0), (0, 0, 8, 8))),)
    result = TopPatches(layer="conv1", units=(0,), top=2, hits=hits)

    def load(index):
        if index == 1:
            raise DataError("cannot read image gone.png: no such file")
        return Image.new("RGB", (16, 16), (200, 30, 30))

    drawn, lost = write_top_patches(tmp_path, result, load, title="m conv1", tile_size=32)
    assert [hit.index for hit in drawn] == [0]
    assert lost == ["cannot read image gone.png: no such file"]
    assert Image.open(tmp_path / "unit_0000.png").getpixel((16, 30))[:3] == (200, 30, 30)


# --- #21 results ---
# Never silently wrong results: a resume state for another model, preprocessing, precision or
# BatchNorm folding is refused naming the change; a microscope spool that is gone or short is
# refused, never zero-filled; folders that are not the model's class names are said; logits that
# overflow are said and counted wrong; EXIF orientation is applied in the one decode path.


def _interrupted(args, after: int) -> None:
    """Run ARGS in this process and stop it (KeyboardInterrupt) after `after` batches, as a
    killed run leaves its resume state behind."""
    from cnntool.cli.main import main
    from cnntool.core.session import ScanSession

    batches = ScanSession.batches

    def interrupted(self, title, **options):
        for count, batch in enumerate(batches(self, title, **options)):
            if count == after:
                raise KeyboardInterrupt
            yield batch

    ScanSession.batches = interrupted
    try:
        with pytest.raises(SystemExit) as stopped:
            main([str(a) for a in args])
        assert stopped.value.code == 130
    finally:
        ScanSession.batches = batches


@pytest.fixture(scope="module")
def interrupted_top_patches(tmp_path_factory):
    """4 images, a lenet5 state dict given as a file, and the state a run stopped after 2 of
    them left in `out`."""
    import torch

    from cnntool.core.models import load_model

    root = tmp_path_factory.mktemp("resume21")
    data, out, weights = root / "data", root / "out", root / "w.pt"
    data.mkdir()
    write_good(data, 4)
    torch.save(load_model("lenet5-mnist", device="cpu").module.state_dict(), weights)
    _interrupted(_resume_args(weights, data, out), after=2)
    assert (out / ".top-patches-state.pt").is_file()
    return data, out, weights


def _resume_args(weights, data, out, *extra):
    return ["visualize", "top-patches", weights, "--arch", "lenet5-mnist", data, "--layer", "conv1",
            "--units", "0-1", "--top", "2", "--batch-size", "1", "--checkpoint-every", "1",
            "-o", out, "-q", "--workers", "0", *extra]


@pytest.mark.parametrize("change, words", [
    (["--mean", "0.5"], "the preprocessing changed (mean (0) -> (0.5))"),
    (["--precision", "bf16"], "the precision changed (fp32 -> bf16)"),
    (["--no-fold-bn"], "BatchNorm folding changed (on -> off)"),
    ("weights", "the weights changed (digest"),
    ([], None),
])
def test_resume_refuses_a_state_saved_for_another_model_setting(change, words, interrupted_top_patches,
                                                                 cnntool, tmp_path):
    import shutil

    import torch

    data, saved_out, weights = interrupted_top_patches
    out = tmp_path / "out"
    shutil.copytree(saved_out, out)
    original = weights.read_bytes()
    if change == "weights":  # other weights, rewritten at the same path
        state = torch.load(weights, weights_only=True)
        state["conv1.weight"] = state["conv1.weight"] * 1.5
        torch.save(state, weights)
    try:
        args = _resume_args(weights, data, out, "--resume", *(change if isinstance(change, list) else []))
        result = cnntool(*[a for a in args if a != "-q"])
    finally:
        weights.write_bytes(original)
    if words is None:  # the same settings resume
        assert result.returncode == 0, result.stderr
        assert "resuming after 2 images" in result.stderr
        return
    assert result.returncode == 1, result.stderr
    assert words in result.stderr and "drop --resume to start afresh" in result.stderr
    assert "Traceback" not in result.stderr and "error:" in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("spool", ["deleted", "short"])
def test_a_microscope_resume_refuses_a_spool_that_is_gone_or_short(spool, cnntool, tmp_path):
    from cnntool.core.samples import mnist_5k

    images, labels = mnist_5k()
    data, site = tmp_path / "digits", tmp_path / "site"
    for k in range(8):
        (data / str(labels[k])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[k]).save(data / str(labels[k]) / f"{k}.png")
    args = ["microscope", "lenet5-mnist", data, "-o", site, "--no-maximize", "--projections", "0",
            "--units", "2", "--top", "2", "--batch-size", "2", "--checkpoint-every", "1", "-q",
            "--workers", "0"]
    _interrupted(args, after=2)
    features = site / ".microscope-features.f32"
    assert features.stat().st_size == 4 * 4 * 200  # 4 images' penultimate features (fc 200)
    if spool == "deleted":
        features.unlink()
    else:
        features.write_bytes(features.read_bytes()[:4 * 200])
    result = cnntool(*args, "--resume")
    assert result.returncode == 1, result.stderr
    assert ("which is gone" if spool == "deleted" else "holds 800 bytes where the resume state "
            "says 3,200 were written") in result.stderr
    assert "drop --resume to start afresh" in result.stderr and "Traceback" not in result.stderr


def _digit_folders(root, names):
    """One MNIST digit of each class 0-9, in folders named `names[digit]`."""
    from cnntool.core.samples import mnist_5k

    images, labels = mnist_5k()
    for digit, name in enumerate(names):
        index = int(np.flatnonzero(labels == digit)[0])
        (root / name).mkdir(parents=True)
        Image.fromarray(images[index]).save(root / name / f"{index}.png")
    return root


def test_folders_that_are_not_the_models_class_names_are_said(cnntool, tmp_path):
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    named = cnntool("predict", "lenet5-mnist", _digit_folders(tmp_path / "named", words), "--workers", "0")
    assert named.returncode == 0, named.stderr
    warning = [line for line in named.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1, named.stderr
    assert ("the folder names are not the model's class names (folders eight, five, four, …; "
            "the model's: 0, 1, 2, …)") in warning[0]
    assert "sorted order" in warning[0] and "eight = 0, five = 1, four = 2" in warning[0]
    summary = named.stderr.strip().splitlines()[-1]
    assert "top-1 accuracy" in summary and "taken in sorted order" in summary
    # the same digits in folders named as the model's classes: no warning, by name
    digits = cnntool("predict", "lenet5-mnist", _digit_folders(tmp_path / "digits", [str(d) for d in range(10)]),
                     "--workers", "0")
    assert digits.returncode == 0 and "warning" not in digits.stderr, digits.stderr
    assert "10 of 10 folder names matched" in digits.stderr
    right = sum(json.loads(line)["correct"] for line in digits.stdout.splitlines())
    assert right >= 9 and f"top-1 accuracy {right}/10" in digits.stderr


def test_logits_that_overflow_are_said_and_counted_wrong(cnntool, tmp_path):
    """Finite weights (1e30) whose logits overflow to inf - inf = NaN."""
    import torch

    import cnntool as library
    from tests.own_models import mean_colour

    net = mean_colour()
    with torch.no_grad():
        net.conv.weight.mul_(1e30)
        net.fc.weight.copy_(torch.tensor([[1e30, -1e30, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    library.save_checkpoint(net, tmp_path / "huge.pt", class_names=["red", "green", "blue"],
                            preprocessing={"input_size": [3, 8, 8], "resize": 8})
    data = tmp_path / "data"
    for name, colour in (("red", (250, 10, 10)), ("green", (10, 250, 10)), ("blue", (10, 10, 250))):
        (data / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), colour).save(data / name / "a.png")
    result = cnntool("predict", tmp_path / "huge.pt", "--arch", "tests.own_models:mean_colour",
                     "--trust-code", data, "--workers", "0")
    assert result.returncode == 0, result.stderr
    assert "3 of 3 images gave non-finite logits (NaN or inf; counted wrong)" in result.stderr
    assert "top-1 accuracy 0/3 = 0.0% (3 with non-finite logits counted wrong)" in result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["nonfinite_logits"] for r in records] == [True] * 3
    assert [r["correct"] for r in records] == [False] * 3


def _portrait(path, square=(30, 10)):
    """A 40×80 (w×h) upright black image with a white 4×4 square at `square` (x, y), saved turned
    90° with EXIF orientation 6 (as a phone saves a portrait photo); the upright pixels."""
    upright = np.zeros((80, 40, 3), np.uint8)
    x, y = square
    upright[y:y + 4, x:x + 4] = 255
    upright[:, :, 1] = np.linspace(0, 120, 80, dtype=np.uint8)[:, None]  # top and bottom differ
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(path, exif=exif.tobytes())
    return upright


def test_exif_orientation_is_applied_in_the_one_decode_path(cnntool, tmp_path):
    import cnntool as library
    from cnntool.core.images import load_image, load_pixels
    from cnntool.core.preprocessing import Preprocessing
    from tests.own_models import mean_colour

    data = tmp_path / "data"
    data.mkdir()
    upright = _portrait(data / "portrait.png")
    assert Image.open(data / "portrait.png").size == (80, 40)  # stored sideways
    assert np.array_equal(np.asarray(load_image(data / "portrait.png")), upright)
    pixels, size = load_pixels(data / "portrait.png", Preprocessing(crop=(80, 40), resize=None))
    assert size == (40, 80)
    assert np.array_equal((pixels.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8), upright)
    # top-patches: the red channel's best 1-px patch is inside the white square, upright
    library.save_checkpoint(mean_colour(), tmp_path / "mean.pt",
                            preprocessing={"input_size": [3, 80, 40], "resize": "none"})
    result = cnntool("visualize", "top-patches", tmp_path / "mean.pt", "--arch", "tests.own_models:mean_colour",
                     "--trust-code", data, "--layer", "conv", "--units", "0", "--top", "1",
                     "-o", tmp_path / "out", "--workers", "0", "-q")
    assert result.returncode == 0, result.stderr
    (hit,) = [json.loads(line) for line in result.stdout.splitlines()]
    x0, y0, x1, y1 = hit["box"]
    assert 30 <= x0 < 34 and 10 <= y0 < 14 and (x1 - x0, y1 - y0) == (1, 1), hit
