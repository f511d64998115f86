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

import pytest

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
