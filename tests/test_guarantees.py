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
from tests.helpers import ROOT, cli_env

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

        (out / ".cnntool.lock").write_text(f"{socket.gethostname()}\n{sleeper.pid}\n")
        busy = _top_patches(cnntool, data, out)
        assert busy.returncode == 1
        assert f"PID {sleeper.pid}" in busy.stderr and "another -o" in busy.stderr
    finally:
        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()
    # its owner is gone: the lock is taken over with a warning, the scan runs and leaves no lock
    again = _top_patches(cnntool, data, out)
    assert again.returncode == 0, again.stderr
    assert f"took over the lock {out / '.cnntool.lock'} of cnntool process {sleeper.pid}" in again.stderr
    assert not (out / ".cnntool.lock").exists()
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


# --- #21 outputs ---
# Nothing cnntool writes lands outside -o, inside DATA or on an input; one lock per output
# folder in every launch mode; under torchrun only rank 0 writes; one page per layer name.

def _digits(folder, count: int) -> list:
    """`count` MNIST digits as PNGs in `folder` (what lenet5-mnist reads quickly); their paths."""
    from PIL import Image

    from cnntool.core.data import open_data

    folder.mkdir(parents=True, exist_ok=True)
    digits = open_data("mnist-5k").spread(count).arrays
    paths = [folder / f"digit{i:02d}.png" for i in range(count)]
    for digit, path in zip(digits, paths):
        Image.fromarray(digit).save(path)
    return paths


def _one_sentence(result) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def test_a_link_planted_at_the_feature_spool_is_never_followed(cnntool, tmp_path):
    from tests.microscope_models import write_grey_images

    write_grey_images(tmp_path / "data")
    victim = tmp_path / "precious.bin"
    victim.write_bytes(b"keep me" * 100)
    site = tmp_path / "site"
    site.mkdir()
    (site / ".microscope-features.f32").symlink_to(victim)
    result = cnntool("microscope", f"{ROOT}/tests/microscope_models.py:bright_net", "--trust-code",
                     tmp_path / "data", "-o", site, "--no-maximize", "--projections", "0", "-q",
                     "--workers", "0")
    assert "symbolic link" in _one_sentence(result) and "remove it" in result.stderr
    assert victim.read_bytes() == b"keep me" * 100


@pytest.mark.parametrize("listed", [False, True], ids=["folder", "list-file"])
def test_features_onto_an_input_image_is_refused(listed, cnntool, tmp_path):
    images = _digits(tmp_path / "data", 3)
    data = tmp_path / "data"
    if listed:  # a list of paths: the image is an input though DATA is no folder
        data = tmp_path / "list.txt"
        data.write_text("\n".join(map(str, images)) + "\n")
    before = images[1].read_bytes()
    result = cnntool("features", "lenet5-mnist", data, "-o", images[1], "--workers", "0")
    assert "is an input file" in _one_sentence(result) or "inside DATA" in result.stderr
    assert images[1].read_bytes() == before
    list_file = tmp_path / "list.txt"
    if listed:  # nor is the list file itself an output
        kept = list_file.read_bytes()
        result = cnntool("features", "lenet5-mnist", data, "-o", list_file, "--workers", "0")
        assert "is an input file" in _one_sentence(result) and list_file.read_bytes() == kept


@pytest.mark.parametrize("inside", ["", "adv"])
def test_attack_into_data_is_refused(inside, cnntool, tmp_path):
    data = tmp_path / "data"
    _digits(data, 2)
    before = sorted(p.name for p in data.rglob("*"))
    result = cnntool("attack", "fgsm", "lenet5-mnist", data, "--eps", "0.1", "-o", data / inside,
                     "--workers", "0")
    assert "inside DATA" in _one_sentence(result)
    assert sorted(p.name for p in data.rglob("*")) == before


def test_embed_plot_onto_an_input_is_refused(cnntool, tmp_path):
    images = _digits(tmp_path / "elsewhere", 3)
    listed = tmp_path / "list.txt"
    listed.write_text("\n".join(map(str, images)) + "\n")
    before = images[0].read_bytes()
    result = cnntool("embed", "lenet5-mnist", listed, "--method", "pca", "--plot", images[0],
                     "--workers", "0")
    assert f"--plot {images[0]} is an input file" in _one_sentence(result)
    assert images[0].read_bytes() == before
    # from a features file: its images are inputs too
    features = tmp_path / "f.npz"
    assert cnntool("features", "lenet5-mnist", listed, "-o", features, "--workers", "0").returncode == 0
    result = cnntool("embed", "--features", features, "--method", "pca", "--plot", images[0])
    assert "is an input file" in _one_sentence(result) and images[0].read_bytes() == before


def _held_lock(folder):
    """A live process that 'holds' the lock of `folder` (as a running cnntool would)."""
    import socket

    folder.mkdir(parents=True, exist_ok=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    (folder / ".cnntool.lock").write_text(f"{socket.gethostname()}\n{sleeper.pid}\n")
    return sleeper


def test_a_held_lock_stops_a_second_attack_in_one_sentence(cnntool, tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    _digits(data, 2)
    sleeper = _held_lock(out)
    try:
        busy = cnntool("attack", "fgsm", "lenet5-mnist", data, "--eps", "0.1", "-o", out, "--workers", "0")
        assert f"PID {sleeper.pid}" in _one_sentence(busy)
        assert len(busy.stderr.strip().splitlines()) == 1, busy.stderr
        assert not (out / "adversarial").exists()
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.torchrun
@pytest.mark.parametrize("command", ["attack", "microscope"])
def test_a_held_lock_stops_a_torchrun_run(command, cnntool, tmp_path):
    """A torchrun run and a single-process run share one lock: the folder's, taken by rank 0."""
    from tests.microscope_models import write_grey_images

    data, out = tmp_path / "data", tmp_path / "out"
    write_grey_images(data)
    model = [f"{ROOT}/tests/microscope_models.py:bright_net", "--trust-code"]
    args = {"attack": ["attack", "fgsm", *model, data, "--eps", "0.1"],
            "microscope": ["microscope", *model, data, "--no-maximize", "--projections", "0"]}[command]
    sleeper = _held_lock(out)
    try:
        busy = cnntool.torchrun(*args, "-o", out, "--workers", "0", "-q", cwd=ROOT)
        assert busy.returncode != 0
        assert f"another cnntool run (PID {sleeper.pid}" in busy.stderr, busy.stderr
        assert not (out / "index.html").exists() and not (out / "adversarial").exists()
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.torchrun
def test_torchrun_attack_writes_the_files_one_process_writes(cnntool, tmp_path):
    data = tmp_path / "data"
    _digits(data, 9)
    args = ["attack", "fgsm", "lenet5-mnist", data, "--eps", "0.2", "--triptychs", "3",
            "--batch-size", "2", "--workers", "0", "-q"]
    one = cnntool(*args, "-o", tmp_path / "one", threads=1)
    two = cnntool.torchrun(*args, "-o", tmp_path / "two")
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr

    def written(folder):
        return {kind: sorted(p.name for p in (folder / kind).iterdir()) for kind in ("adversarial", "triptych")}

    assert written(tmp_path / "two") == written(tmp_path / "one")
    assert len(written(tmp_path / "one")["triptych"]) == 3
    single = [json.loads(line) for line in one.stdout.splitlines()]
    double = [json.loads(line) for line in two.stdout.splitlines()]
    for record in single + double:
        record["file"] = os.path.basename(record["file"])
    assert double == single and len(single) == 9


def test_two_layer_names_that_sanitize_alike_get_two_pages(cnntool, tmp_path):
    import re

    from tests.microscope_models import write_grey_images

    write_grey_images(tmp_path / "data")
    site = tmp_path / "site"
    result = cnntool("microscope", f"{ROOT}/tests/microscope_models.py:greek_net", "--trust-code",
                     tmp_path / "data", "-o", site, "--layers", "conv_α,conv_β", "--no-maximize",
                     "--projections", "0", "--top", "2", "-q", "--workers", "0")
    assert result.returncode == 0, result.stderr
    index = (site / "index.html").read_text(encoding="utf-8")
    pages = sorted(set(re.findall(r'href="(layers/[^"/]+\.html)"', index)))
    assert len(pages) == 2, pages
    titles = [[n for n in ("conv_α", "conv_β") if f"<h1>{n}" in (site / page).read_text(encoding="utf-8")]
              for page in pages]
    assert sorted(titles) == [["conv_α"], ["conv_β"]], (pages, titles)



def test_save_checkpoint_never_writes_through_a_link_planted_at_its_scratch_name(tmp_path):
    from torch import nn

    from cnntool import save_checkpoint

    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"keep me")
    (tmp_path / ".m.pt.part").symlink_to(victim)  # the fixed scratch name it used to write
    save_checkpoint(nn.Linear(2, 2), tmp_path / "m.pt")
    assert victim.read_bytes() == b"keep me" and (tmp_path / "m.pt").stat().st_size > 100
