"""The README's "Guarantees", command by command, as a user meets them (#13):
- a folder with a decompression bomb, a truncated JPEG, a FIFO and a dangling link: every
  dataset command completes, and its stderr counts the 4 skipped files;
- `cnntool … | head -1`: a closed pipe is a normal end (exit 0, nothing on stderr);
- conflicting or out-of-range options are usage errors (exit 2) found before any model loads;
- a resume state left for other files, a second run into the same folder, an empty state:
  one sentence each, never a merge of stale data.
"""

import errno
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
from tests.helpers import ROOT, cli_env

pytestmark = pytest.mark.slow

# every command that scans DATA, with options that keep it quick on LeNet-5
DATASET_COMMANDS = {
    "predict": ["predict", "lenet5-mnist", "{data}"],
    "attack": ["attack", "fgsm", "lenet5-mnist", "{data}", "--eps", "0.1"],
    "top-patches": [
        "visualize",
        "top-patches",
        "lenet5-mnist",
        "{data}",
        "--layer",
        "conv1",
        "--units",
        "0-1",
        "--top",
        "2",
        "-o",
        "{out}",
    ],
    "features": ["features", "lenet5-mnist", "{data}", "-o", "{out}/f.npz"],
    "embed": ["embed", "lenet5-mnist", "{data}", "--method", "pca"],
    "diagnose": ["diagnose", "lenet5-mnist", "{data}", "--no-correlation"],
    "cam": ["visualize", "cam", "lenet5-mnist", "{data}", "-o", "{out}"],
    "deconv": ["visualize", "deconv", "lenet5-mnist", "{data}", "--layer", "conv2", "-o", "{out}"],
}


def _fill(args, **values):
    return [a.format(**values) for a in args]


@pytest.mark.parametrize("workers", ["0", "2"])
@pytest.mark.parametrize("command", sorted(DATASET_COMMANDS))
def test_every_scan_skips_and_counts_four_bad_files(command, workers, cnntool, tmp_path):
    data = bad_folder(tmp_path / "data")
    result = cnntool(
        *_fill(DATASET_COMMANDS[command], data=data, out=tmp_path / "out"), "--workers", workers
    )
    assert result.returncode == 0, result.stderr
    assert "skipped 4 unreadable image(s) of 7" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["models"],
        ["layers", "lenet5-mnist"],
        ["profile", "lenet5-mnist"],
        ["predict", "lenet5-mnist", "mnist-5k", "--batch-size", "500"],
        ["attack", "fgsm", "lenet5-mnist", "mnist-5k", "--eps", "0.1", "--batch-size", "500"],
        ["embed", "lenet5-mnist", "mnist-5k", "--method", "pca", "--batch-size", "500"],
        ["diagnose", "lenet5-mnist", "mnist-5k", "--limit", "200", "--no-correlation"],
        ["gradcheck", "lenet5-mnist"],
        [
            "visualize",
            "top-patches",
            "lenet5-mnist",
            "mnist-5k",
            "--layer",
            "conv1",
            "--units",
            "0-15",
            "--top",
            "4",
            "--batch-size",
            "500",
            "-o",
            "{out}",
        ],
        ["visualize", "cam", "lenet5-mnist", "mnist-5k", "--limit", "100", "-o", "{out}"],
        [
            "visualize",
            "deconv",
            "lenet5-mnist",
            "mnist-5k",
            "--limit",
            "100",
            "--method",
            "saliency",
            "-o",
            "{out}",
        ],
    ],
    ids=lambda args: args[0] if args[0] != "visualize" else args[1],
)
def test_a_closed_pipe_is_a_normal_end(args, tmp_path):
    # a child process (not tests.helpers.InProcess): the point is a real pipe that closes, and
    # the interpreter's last flush at exit
    command = " ".join([sys.executable, "-m", "cnntool", *_fill(args, out=tmp_path), "-q"])
    result = subprocess.run(
        ["bash", "-c", f"{command} | head -1; exit ${{PIPESTATUS[0]}}"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1
    assert "Error" not in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["attack", "fgsm", "lenet5-mnist", "mnist-5k", "--eps", "-0.1"], "outside [0, 1]"),
        (["attack", "fgsm", "lenet5-mnist", "mnist-5k", "--eps", "1e400"], "too large"),
        (["attack", "fgsm", "lenet5-mnist", "mnist-5k", "--triptychs", "2"], "needs -o"),
        (["gradcheck", "lenet5-mnist", "--params", "--inputs"], "give one"),
        (["gradcheck", "lenet5-mnist", "--input-size", "-5"], "below 1 pixel"),
        (["embed", "--features", "f.npz", "--layer", "conv1"], "--features file already"),
        (["predict", "lenet5-mnist", "mnist-5k", "--arch", "resnet18"], "drop --arch"),
        (["predict", "x.pt", "mnist-5k", "--weights", "y.pt"], "weight file already"),
    ],
)
def test_contradictions_are_usage_errors_before_any_model_loads(args, words, cnntool):
    result = cnntool(*args)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr


def test_profile_refuses_an_absurd_input_size_in_one_sentence(cnntool):
    result = cnntool("profile", "lenet5-mnist", "--input-size", "100000")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def _top_patches(cnntool, data, out, *extra):
    return cnntool(
        "visualize",
        "top-patches",
        "lenet5-mnist",
        data,
        "--layer",
        "conv1",
        "--units",
        "0-1",
        "--top",
        "2",
        "--batch-size",
        "1",
        "--checkpoint-every",
        "1",
        "-o",
        out,
        "-q",
        "--workers",
        "0",
        *extra,
    )


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
    key = dict(
        model="lenet5-mnist",
        layer="conv1",
        units="0-1",
        top=2,
        per_image=1,
        data=dataset.name,
        images=len(dataset),
        world=1,
    )
    StateFile(out, ".top-patches-state.pt", key, dataset_fingerprint(dataset)).save(
        {"topk": None, "next": 2}
    )
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
    assert (
        f"took over the lock {out / '.cnntool.lock'} of cnntool process {sleeper.pid}"
        in again.stderr
    )
    assert not (out / ".cnntool.lock").exists()
    assert len([json.loads(line) for line in again.stdout.splitlines()]) == 4


def test_nan_weights_make_predict_and_gradcheck_refuse_in_one_sentence(cnntool, tmp_path):
    import torch

    from cnntool.core.loading.zoo import load_builtin

    state = load_builtin("lenet5-mnist").state_dict()
    state["linear2.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    for args in (
        ["predict", tmp_path / "nan.pt", "--arch", "lenet5-mnist", "mnist-5k"],
        ["gradcheck", tmp_path / "nan.pt", "--arch", "lenet5-mnist"],
    ):
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
    from cnntool.io.patches import STYLE
    from tests.pixels import grid_cells, png

    (tile, _), (hole, _) = grid_cells(png(tmp_path / "unit_0000.png"), (32, 32), 2, 2, style=STYLE)
    assert tuple(tile[16, 16]) == (200, 30, 30) and tuple(hole[16, 16]) == (255, 255, 255)


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
    for digit, path in zip(digits, paths, strict=True):
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
    result = cnntool(
        "microscope",
        f"{ROOT}/tests/microscope_models.py:bright_net",
        "--trust-code",
        tmp_path / "data",
        "-o",
        site,
        "--no-maximize",
        "--projections",
        "0",
        "-q",
        "--workers",
        "0",
    )
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
    result = cnntool(
        "attack",
        "fgsm",
        "lenet5-mnist",
        data,
        "--eps",
        "0.1",
        "-o",
        data / inside,
        "--workers",
        "0",
    )
    assert "inside DATA" in _one_sentence(result)
    assert sorted(p.name for p in data.rglob("*")) == before


def test_embed_plot_onto_an_input_is_refused(cnntool, tmp_path):
    images = _digits(tmp_path / "elsewhere", 3)
    listed = tmp_path / "list.txt"
    listed.write_text("\n".join(map(str, images)) + "\n")
    before = images[0].read_bytes()
    result = cnntool(
        "embed", "lenet5-mnist", listed, "--method", "pca", "--plot", images[0], "--workers", "0"
    )
    assert f"--plot {images[0]} is an input file" in _one_sentence(result)
    assert images[0].read_bytes() == before
    # from a features file: its images are inputs too
    features = tmp_path / "f.npz"
    assert (
        cnntool("features", "lenet5-mnist", listed, "-o", features, "--workers", "0").returncode
        == 0
    )
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
        busy = cnntool(
            "attack", "fgsm", "lenet5-mnist", data, "--eps", "0.1", "-o", out, "--workers", "0"
        )
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
    args = {
        "attack": ["attack", "fgsm", *model, data, "--eps", "0.1"],
        "microscope": ["microscope", *model, data, "--no-maximize", "--projections", "0"],
    }[command]
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
    args = [
        "attack",
        "fgsm",
        "lenet5-mnist",
        data,
        "--eps",
        "0.2",
        "--triptychs",
        "3",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "-q",
    ]
    one = cnntool(*args, "-o", tmp_path / "one", threads=1)
    two = cnntool.torchrun(*args, "-o", tmp_path / "two")
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr

    def written(folder):
        return {
            kind: sorted(p.name for p in (folder / kind).iterdir())
            for kind in ("adversarial", "triptych")
        }

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
    result = cnntool(
        "microscope",
        f"{ROOT}/tests/microscope_models.py:greek_net",
        "--trust-code",
        tmp_path / "data",
        "-o",
        site,
        "--layers",
        "conv_α,conv_β",
        "--no-maximize",
        "--projections",
        "0",
        "--top",
        "2",
        "-q",
        "--workers",
        "0",
    )
    assert result.returncode == 0, result.stderr
    index = (site / "index.html").read_text(encoding="utf-8")
    pages = sorted(set(re.findall(r'href="(layers/[^"/]+\.html)"', index)))
    assert len(pages) == 2, pages
    titles = [
        [n for n in ("conv_α", "conv_β") if f"<h1>{n}" in (site / page).read_text(encoding="utf-8")]
        for page in pages
    ]
    assert sorted(titles) == [["conv_α"], ["conv_β"]], (pages, titles)


def test_save_checkpoint_never_writes_through_a_link_planted_at_its_scratch_name(tmp_path):
    from torch import nn

    from cnntool import save_checkpoint

    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"keep me")
    (tmp_path / ".m.pt.part").symlink_to(victim)  # the fixed scratch name it used to write
    save_checkpoint(nn.Linear(2, 2), tmp_path / "m.pt")
    assert victim.read_bytes() == b"keep me" and (tmp_path / "m.pt").stat().st_size > 100


# --- #21 injection ---
# A path, a class name (--classes, a checkpoint, a folder) or an exception's text is shown as it
# is: never Rich markup, never a control sequence for the terminal, never a spreadsheet formula,
# never matplotlib math text.

OSC_LINK = "\x1b]8;;http://evil\x07click\x1b]8;;\x07"  # a terminal hyperlink, raw
HOSTILE_CLASSES = [
    "=cmd|' /C calc'!A0",
    "[link=http://evil]x[/link]",
    OSC_LINK,
    "[bold red]",
    r"$\frac{0}{$",
    "-0.5",
    "-x",
    "@SUM(1)",
    "8",
    "9",
]  # lenet5-mnist's 10 digits
HOSTILE_DATA = r"[bold red]$\frac{0}{$"  # a folder name: titles, progress bars, plots name it


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A folder named HOSTILE_DATA with one MNIST digit per class 0-4 (in folders 0 to 4) and
    a --classes file of HOSTILE_CLASSES (lenet5-mnist reads each digit right)."""
    import numpy as np
    from PIL import Image

    from cnntool.core.data import open_data

    root = tmp_path_factory.mktemp("hostile")
    digits = open_data("mnist-5k")
    labels = np.asarray(digits.labels)
    for digit in range(5):
        (root / HOSTILE_DATA / str(digit)).mkdir(parents=True)
        Image.fromarray(digits.arrays[int(np.flatnonzero(labels == digit)[0])]).save(
            root / HOSTILE_DATA / str(digit) / f"{digit}.png"
        )
    (root / "classes.txt").write_text("\n".join(HOSTILE_CLASSES) + "\n", encoding="utf-8")
    return root


def _no_control_characters(*texts: str) -> None:
    for text in texts:
        assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text, repr(text)


def test_hostile_class_names_reach_predicts_table_as_text_and_its_csv_as_no_formula(
    cnntool, hostile
):
    table = cnntool(
        "predict",
        "lenet5-mnist",
        HOSTILE_DATA,
        "--classes",
        "classes.txt",
        "--format",
        "table",
        "--top",
        "1",
        cwd=hostile,
    )
    assert table.returncode == 0, table.stderr
    _no_control_characters(table.stdout, table.stderr)
    # NO_COLOR: the names are printed as typed, not obeyed as markup (nor dropped as tags)
    for name in ("[link=http://evil]x[/link]", "[bold red]", r"$\frac{0}{$", "=cmd|' /C calc'!A0"):
        assert name in table.stdout, table.stdout
    assert "│ click " in table.stdout and "8;;" not in table.stdout  # the OSC link's text only
    assert f"lenet5-mnist on {HOSTILE_DATA}" in table.stdout  # the table's title

    rows = cnntool(
        "predict",
        "lenet5-mnist",
        HOSTILE_DATA,
        "--classes",
        "classes.txt",
        "--format",
        "csv",
        "--top",
        "1",
        "-q",
        cwd=hostile,
    )
    assert rows.returncode == 0, rows.stderr
    import csv
    import io

    cells = list(csv.DictReader(io.StringIO(rows.stdout)))
    assert [c["top1_name"] for c in cells] == [
        "'=cmd|' /C calc'!A0",
        "[link=http://evil]x[/link]",
        "click",
        "[bold red]",
        r"$\frac{0}{$",
    ]
    assert all(float(c["top1_prob"]) > 0.5 for c in cells)  # numbers stay numbers


def test_hostile_names_in_attack_triptychs_sweep_plot_and_table(cnntool, hostile):
    from tests.pixels import find_plot_text, png

    single = cnntool(
        "attack",
        "fgsm",
        "lenet5-mnist",
        HOSTILE_DATA,
        "--classes",
        "classes.txt",
        "--eps",
        "0.3",
        "-o",
        "single",
        "--triptychs",
        "5",
        "--format",
        "csv",
        cwd=hostile,
    )
    assert single.returncode == 0, single.stderr
    _no_control_characters(single.stdout, single.stderr)
    assert len(single.stdout.splitlines()) == 1 + 5  # the header and a record per image
    assert "'=cmd|' /C calc'!A0" in single.stdout
    # the digit 4's triptych names its class as typed, not as (broken) math text
    (four,) = (hostile / "single" / "triptych").glob("00004_*.png")
    assert find_plot_text(png(four), r"original: \$\frac{0}{\$")

    sweep = cnntool(
        "attack",
        "fgsm",
        "lenet5-mnist",
        HOSTILE_DATA,
        "--classes",
        "classes.txt",
        "--eps",
        "0,0.3",
        "-o",
        "sweep",
        "--format",
        "table",
        cwd=hostile,
    )
    assert sweep.returncode == 0, sweep.stderr
    _no_control_characters(sweep.stdout, sweep.stderr)
    assert f"fgsm on lenet5-mnist, {HOSTILE_DATA}" in " ".join(sweep.stdout.split())  # its title
    assert find_plot_text(
        png(hostile / "sweep" / "sweep.png"),
        r"FGSM on lenet5-mnist, [bold red]\$\frac{0}{\$",
        fontsize=11,
    )


def test_hostile_label_names_in_the_embed_plot_and_csv(cnntool, tmp_path):
    import numpy as np
    from PIL import Image

    from tests.pixels import find_plot_text, png

    names = [r"$\frac{0}{$", "[bold red]", "\x1b]8;;http:evil\x07click\x1b]8;;\x07", "=1+2"]
    for label, name in enumerate(names):
        (tmp_path / "data" / name).mkdir(parents=True)
        for k in range(3):
            pixels = np.full((28, 28), 60 * label + 20 * k, np.uint8)
            pixels[4 * k : 4 * k + 8, 3 * label : 3 * label + 8] = 255
            Image.fromarray(pixels).save(tmp_path / "data" / name / f"{k}.png")
    result = cnntool(
        "embed",
        "lenet5-mnist",
        tmp_path / "data",
        "--method",
        "pca",
        "--plot",
        tmp_path / "map.png",
        "--format",
        "csv",
    )
    assert result.returncode == 0, result.stderr
    _no_control_characters(result.stdout, result.stderr)
    assert len(result.stdout.splitlines()) == 1 + 12
    assert "'=1+2" in result.stdout and "[bold red]" in result.stdout
    pixels = png(tmp_path / "map.png")
    for drawn in (r"\$\frac{0}{\$", "[bold red]", "=1+2"):  # the legend, entries as typed
        assert find_plot_text(pixels, drawn, fontsize=8), drawn


def test_markup_and_control_characters_in_an_error_are_one_sentence(cnntool, tmp_path):
    path = tmp_path / "di[/x]gits[link=https:evil]" / ("a" + OSC_LINK)
    result = cnntool("predict", "lenet5-mnist", path)
    assert result.returncode == 1
    assert "MarkupError" not in result.stderr and "Traceback" not in result.stderr
    _no_control_characters(result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: DATA ") and "di[/x]gits[link=https:evil]/aclick' is not" in line


def test_std_nan_is_a_usage_error_that_quotes_what_was_typed(cnntool):
    result = cnntool("predict", "lenet5-mnist", "mnist-5k", "--std", "nan")
    assert result.returncode == 2, result.stderr
    assert "'nan' is not a comma list of finite numbers" in result.stderr, result.stderr


def test_clicks_usage_errors_show_no_control_characters(cnntool):
    result = cnntool(OSC_LINK, "lenet5-mnist")  # click quotes the unknown command as typed
    assert result.returncode == 2
    assert "No such command" in result.stderr
    _no_control_characters(result.stderr)


@pytest.fixture
def terminal(monkeypatch):
    """cnntool.cli.console bound to a colour terminal (a StringIO): what a user's terminal gets."""
    import io

    from rich.console import Console

    from cnntool.cli import console

    screen = io.StringIO()
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(
        console,
        "_console",
        Console(
            file=screen,
            force_terminal=True,
            color_system="truecolor",
            highlight=False,
            emoji=False,
            width=200,
        ),
    )
    monkeypatch.setattr(console, "_quiet", False)
    monkeypatch.setattr(console, "_silent", False)
    return screen


def test_the_console_shows_user_text_as_it_is_and_keeps_its_own_styles(terminal):
    from rich.text import Text

    from cnntool.cli import console
    from cnntool.io.records import Column, styled

    gloo = (
        "[/opt/gloo/transport/tcp/pair.cc:545] Connection closed by peer [link=http://evil]x[/link]"
    )
    console.error(f"unexpected RuntimeError: {gloo}")
    console.warn(f"class {OSC_LINK} :warning: [bold red]")
    console.info(Text.assemble(("no findings", "green"), ": in ", "[dim]conv1[/dim]"))
    console.show_table(
        f"title {OSC_LINK}[/x]",
        [Column("name", "name"), Column("verdict", "verdict")],
        [{"name": "[link=http://evil]x[/link]", "verdict": styled("FAIL", "bold red")}],
        caption="caption [/y]",
    )
    with console.progress(f"scan [/z] {OSC_LINK}", total=1) as advance:
        advance()
    shown = terminal.getvalue()
    assert "]8;" not in shown and "\x07" not in shown and "evil\x1b" not in shown  # no hyperlink
    for text in (
        gloo,
        "class click :warning: [bold red]",
        "[dim]conv1[/dim]",
        "title click[/x]",
        "caption [/y]",
        "scan [/z] click",
    ):
        assert text in shown, (text, shown)
    # our styles stay: the red error prefix, yellow warning, green "no findings", a red FAIL cell
    assert "\x1b[1;31merror:\x1b[0m" in shown and "\x1b[33mwarning:\x1b[0m" in shown
    assert "\x1b[32mno findings\x1b[0m" in shown and "\x1b[1;31mFAIL" in shown


def test_printable_removes_escape_sequences_and_control_characters():
    from cnntool.io.untrusted import printable

    assert (
        printable("plain: ünïcode, [tags], tab\there\nnewline")
        == "plain: ünïcode, [tags], tab\there\nnewline"
    )
    assert printable(OSC_LINK) == "click"
    assert (
        printable("\x1b[31mred\x1b[0m \x1b]0;title\x1b\\x \x9b31my\x7f\r\x00\x08z") == "red x 31myz"
    )
    assert printable("unended \x1b]8;;http://evil") == "unended "
    assert printable(42) == "42"


def test_csv_cells_never_start_a_formula_but_numbers_stay_numbers():
    import csv
    import io

    from cnntool.io.records import csv_text
    from cnntool.io.untrusted import csv_cell

    record = {
        "a": "=cmd|' /C calc'!A0",
        "b": "+1+2",
        "c": "-x",
        "d": "@SUM(1)",
        "e": "\tx",
        "f": "\r=1",
        "g": -0.5,
        "h": "-3",
        "i": "-1e-5",
        "j": -3,
        "k": "plain",
        "l": None,
        "m": ["=x"],
        "n": f"{OSC_LINK}=y",
        "o": True,
    }
    (row,) = list(csv.DictReader(io.StringIO(csv_text([record]))))
    assert row == {
        "a": "'=cmd|' /C calc'!A0",
        "b": "'+1+2",
        "c": "'-x",
        "d": "'@SUM(1)",
        "e": "'\tx",
        "f": "'=1",
        "g": "-0.5",
        "h": "-3",
        "i": "-1e-5",
        "j": "-3",
        "k": "plain",
        "l": "",
        "m": '["=x"]',
        "n": "click=y",
        "o": "True",
    }
    assert (
        csv_cell("-inf") == "-inf" and csv_cell("-1.5.2") == "'-1.5.2" and csv_cell("- 3") == "'- 3"
    )


def test_jsonl_escapes_c1_controls_losslessly():
    from cnntool.io.records import jsonl_line

    line = jsonl_line({"name": "a\x9b31m\x1b]8;;x\x07\x7f"})
    assert all(ord(c) < 0x7F or ord(c) > 0x9F for c in line) and "\x1b" not in line
    assert json.loads(line) == {"name": "a\x9b31m\x1b]8;;x\x07\x7f"}


def test_plot_text_is_drawn_literally_never_as_math():
    from matplotlib.text import Text as PlotText

    from cnntool.io.untrusted import plot_text

    for typed in (r"$\frac{0}{$", "$x$", "$", r"a\$b", r"\\$c", "cost $5 or $6", "no dollar"):
        text = PlotText(0, 0, plot_text(typed))
        assert text._preprocess_math(text.get_text()) == (typed, False), typed
    assert plot_text(f"a{OSC_LINK}") == "aclick"


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

    from cnntool.core.loading.models import load_model

    root = tmp_path_factory.mktemp("resume21")
    data, out, weights = root / "data", root / "out", root / "w.pt"
    data.mkdir()
    write_good(data, 4)
    torch.save(load_model("lenet5-mnist", device="cpu").module.state_dict(), weights)
    _interrupted(_resume_args(weights, data, out), after=2)
    assert (out / ".top-patches-state.pt").is_file()
    return data, out, weights


def _resume_args(weights, data, out, *extra):
    return [
        "visualize",
        "top-patches",
        weights,
        "--arch",
        "lenet5-mnist",
        data,
        "--layer",
        "conv1",
        "--units",
        "0-1",
        "--top",
        "2",
        "--batch-size",
        "1",
        "--checkpoint-every",
        "1",
        "-o",
        out,
        "-q",
        "--workers",
        "0",
        *extra,
    ]


@pytest.mark.parametrize(
    "change, words",
    [
        (["--mean", "0.5"], "the preprocessing changed (mean (0) -> (0.5))"),
        (["--precision", "bf16"], "the precision changed (fp32 -> bf16)"),
        (["--no-fold-bn"], "BatchNorm folding changed (on -> off)"),
        ("weights", "the weights changed (digest"),
        ([], None),
    ],
)
def test_resume_refuses_a_state_saved_for_another_model_setting(
    change, words, interrupted_top_patches, cnntool, tmp_path
):
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
        args = _resume_args(
            weights, data, out, "--resume", *(change if isinstance(change, list) else [])
        )
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
    args = [
        "microscope",
        "lenet5-mnist",
        data,
        "-o",
        site,
        "--no-maximize",
        "--projections",
        "0",
        "--units",
        "2",
        "--top",
        "2",
        "--batch-size",
        "2",
        "--checkpoint-every",
        "1",
        "-q",
        "--workers",
        "0",
    ]
    _interrupted(args, after=2)
    features = site / ".microscope-features.f32"
    assert features.stat().st_size == 4 * 4 * 200  # 4 images' penultimate features (fc 200)
    if spool == "deleted":
        features.unlink()
    else:
        features.write_bytes(features.read_bytes()[: 4 * 200])
    result = cnntool(*args, "--resume")
    assert result.returncode == 1, result.stderr
    assert (
        "which is gone"
        if spool == "deleted"
        else "holds 800 bytes where the resume state says 3,200 were written"
    ) in result.stderr
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
    named = cnntool(
        "predict", "lenet5-mnist", _digit_folders(tmp_path / "named", words), "--workers", "0"
    )
    assert named.returncode == 0, named.stderr
    warning = [line for line in named.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1, named.stderr
    assert (
        "the folder names are not the model's class names (folders eight, five, four, …; "
        "the model's: 0, 1, 2, …)"
    ) in warning[0]
    assert "sorted order" in warning[0] and "eight = 0, five = 1, four = 2" in warning[0]
    summary = named.stderr.strip().splitlines()[-1]
    assert "top-1 accuracy" in summary and "taken in sorted order" in summary
    # the same digits in folders named as the model's classes: no warning, by name
    digits = cnntool(
        "predict",
        "lenet5-mnist",
        _digit_folders(tmp_path / "digits", [str(d) for d in range(10)]),
        "--workers",
        "0",
    )
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
    library.save_checkpoint(
        net,
        tmp_path / "huge.pt",
        class_names=["red", "green", "blue"],
        preprocessing={"input_size": [3, 8, 8], "resize": 8},
    )
    data = tmp_path / "data"
    for name, colour in (("red", (250, 10, 10)), ("green", (10, 250, 10)), ("blue", (10, 10, 250))):
        (data / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), colour).save(data / name / "a.png")
    result = cnntool(
        "predict",
        tmp_path / "huge.pt",
        "--arch",
        "tests.own_models:mean_colour",
        "--trust-code",
        data,
        "--workers",
        "0",
    )
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
    upright[y : y + 4, x : x + 4] = 255
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
    assert np.array_equal(
        (pixels.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8), upright
    )
    # top-patches: the red channel's best 1-px patch is inside the white square, upright
    library.save_checkpoint(
        mean_colour(),
        tmp_path / "mean.pt",
        preprocessing={"input_size": [3, 80, 40], "resize": "none"},
    )
    result = cnntool(
        "visualize",
        "top-patches",
        tmp_path / "mean.pt",
        "--arch",
        "tests.own_models:mean_colour",
        "--trust-code",
        data,
        "--layer",
        "conv",
        "--units",
        "0",
        "--top",
        "1",
        "-o",
        tmp_path / "out",
        "--workers",
        "0",
        "-q",
    )
    assert result.returncode == 0, result.stderr
    (hit,) = [json.loads(line) for line in result.stdout.splitlines()]
    x0, y0, x1, y1 = hit["box"]
    assert 30 <= x0 < 34 and 10 <= y0 < 14 and (x1 - x0, y1 - y0) == (1, 1), hit


# --- #21 faults ---
# A full disk, a read-only output, a name too long, a peer that died: one sentence each, exit 1,
# and no scratch file left behind.


def _features_in_process(capsys, data, out):
    """`cnntool features` in this process (so that a writer can be made to fail): its exit code
    and stderr."""
    from cnntool.cli.main import main

    with pytest.raises(SystemExit) as ended:
        main(["features", "lenet5-mnist", str(data), "-o", str(out), "-q", "--workers", "0"])
    return ended.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "code, words",
    [
        (errno.ENOSPC, "the disk is full (errno 28)"),
        (errno.EROFS, "the file system is read-only (errno 30)"),
        (errno.EACCES, "permission denied (errno 13)"),
        (errno.ENAMETOOLONG, "the name is too long (errno 36)"),
    ],
)
def test_an_output_that_cannot_be_written_is_one_sentence_and_leaves_no_scratch_file(
    code, words, capsys, monkeypatch, tmp_path
):
    import cnntool.io.npz

    data, out = _data_and_out(tmp_path, 3)

    def failing(handle, *args, **kwargs):  # half a file written, then the disk says no
        handle.write(b"PK" * 1000)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(cnntool.io.npz, "write_npz", failing)
    status, stderr = _features_in_process(capsys, data, out / "f.npz")
    assert status == 1
    assert stderr.strip() == f"error: cannot write {out / 'f.npz'}: {words}", stderr
    assert os.listdir(out) == []  # neither the .part of the output nor the features' spools


def test_a_spool_on_a_full_disk_is_one_sentence_and_is_removed(capsys, monkeypatch, tmp_path):
    """A buffered file on a full disk fails at the write and again when it is closed (its
    buffer cannot be flushed); the scratch file must go all the same."""
    from cnntool.tasks.features import FeatureSpool

    class FullDisk:  # what a BufferedWriter does when the disk is full
        def __init__(self, file):
            self.file = file
            self.closed = False

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def close(self):
            self.closed = True
            self.file.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.file, name)

    made = FeatureSpool.__init__

    def on_a_full_disk(self, folder=None):
        made(self, folder)
        self._file = FullDisk(self._file)

    monkeypatch.setattr(FeatureSpool, "__init__", on_a_full_disk)
    data, out = _data_and_out(tmp_path, 3)
    status, stderr = _features_in_process(capsys, data, out / "f.npz")
    assert status == 1
    assert stderr.startswith(f"error: cannot write the scratch file {out}/.cnntool-features."), (
        stderr
    )
    assert stderr.strip().endswith("the disk is full (errno 28)") and len(stderr.splitlines()) == 1
    assert os.listdir(out) == []


def test_a_file_size_limit_for_real_is_one_sentence_and_leaves_no_scratch_file(cnntool, tmp_path):
    """`ulimit -f`: the kernel refuses writes past the limit (EFBIG) as it does on a full disk."""
    import resource

    data, out = _data_and_out(tmp_path, 3)

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error from write(), not a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    # a child process: the limit is the kernel's, on the process that writes
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnntool",
            "features",
            "lenet5-mnist",
            data,
            "--layer",
            "conv1",
            "--pooling",
            "flatten",
            "-o",
            out / "f.npz",
            "-q",
            "--workers",
            "0",
        ],
        preexec_fn=limited,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
    )
    assert result.returncode == 1
    assert "cannot write the scratch file" in result.stderr and "(errno 27)" in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert os.listdir(out) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_stdout_on_a_full_device_is_one_sentence(tmp_path):
    data, _ = _data_and_out(tmp_path, 3, out_exists=False)
    # a child process: its file descriptor 1 is the full device, and the interpreter's flush at
    # exit is part of what is tested
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "cnntool", "predict", "lenet5-mnist", data, "-q"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
            timeout=300,
        )
    assert result.returncode == 1
    assert result.stderr == "error: cannot write stdout: the disk is full (errno 28)\n"


def test_an_output_name_of_250_bytes_works_and_a_longer_one_is_refused_before_the_scan(
    cnntool, tmp_path
):
    data, out = _data_and_out(tmp_path, 2)
    name = "n" * 246 + ".npz"  # its scratch name, with PID, host and suffix, is over 255 bytes
    result = cnntool("features", "lenet5-mnist", data, "-o", out / name, "-q", "--workers", "0")
    assert result.returncode == 0, result.stderr
    assert os.listdir(out) == [name]
    longer = out / ("n" * 252 + ".npz")
    result = cnntool("features", "lenet5-mnist", data, "-o", longer, "--workers", "0")
    assert result.returncode == 1
    assert result.stderr == f"error: cannot write {longer}: the name is too long (errno 36)\n"
    assert os.listdir(out) == [name]


def test_names_that_are_not_utf8_are_read_and_printed_and_resumed(tmp_path):
    """b'\\xff.png' in a DATA folder is an image like any other: predicted, printed as its bytes
    (also where stdout would refuse them), fingerprinted for --resume."""
    from PIL import Image

    data, out = _data_and_out(tmp_path, 2)
    Image.new("RGB", (40, 30), (10, 200, 30)).save(os.fsencode(data) + b"/\xff.png")
    # child processes: PYTHONIOENCODING is read when the interpreter starts
    env = cli_env(PYTHONIOENCODING="utf-8")  # a strict stdout, as in en_US.UTF-8
    predicted = subprocess.run(
        [sys.executable, "-m", "cnntool", "predict", "lenet5-mnist", data, "-q"],
        capture_output=True,
        env=env,
        timeout=300,
    )
    assert predicted.returncode == 0, predicted.stderr
    paths = [
        json.loads(line.decode("utf-8", "surrogateescape"))["path"]
        for line in predicted.stdout.splitlines()
    ]
    assert [os.fsencode(p) for p in paths] == [
        os.fsencode(data / n) for n in ("good0.png", "good1.png")
    ] + [os.fsencode(data) + b"/\xff.png"]
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnntool",
            "visualize",
            "top-patches",
            "lenet5-mnist",
            data,
            "--layer",
            "conv1",
            "--units",
            "0",
            "--top",
            "3",
            "-o",
            out,
            "--resume",
            "-q",
            "--workers",
            "0",
        ],
        capture_output=True,
        env=env,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count(b"\xff.png") == 1


def test_a_nul_byte_in_a_path_list_is_skipped_and_counted(cnntool, tmp_path):
    data, _ = _data_and_out(tmp_path, 2, out_exists=False)
    listing = "\n".join([str(data / "good0.png"), "bad\x00name.png", str(data / "good1.png")])
    result = cnntool("predict", "lenet5-mnist", "-", "-q", stdin=listing)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    assert "skipped 1 unreadable image(s) of 3" in result.stderr
    assert "the name contains a NUL byte" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_rank_whose_peers_never_come_gives_up_in_one_sentence(how, tmp_path):
    """Started by srun or mpirun (RANK and WORLD_SIZE, no torchrun agent to stop it), a rank
    whose peer died waited torch's 30 minutes; now --dist-timeout (CNNTOOL_DIST_TIMEOUT)."""
    from tests.helpers import CnnTool, free_port

    data, _ = _data_and_out(tmp_path, 2, out_exists=False)
    env = cli_env(
        RANK="0",
        WORLD_SIZE="2",
        LOCAL_RANK="0",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        **({"CNNTOOL_DIST_TIMEOUT": "2"} if how == "environment" else {}),
    )
    extra = ["--dist-timeout", "2"] if how == "option" else []
    # a child process: RANK and WORLD_SIZE make it join a process group (process-wide state)
    result = CnnTool(env=env, timeout=90)("predict", "lenet5-mnist", data, "-q", *extra)
    assert result.returncode == 1
    assert (
        "error: rank 0 waited 2 s for the other ranks; one of them may have died" in result.stderr
    )
    assert "Traceback" not in result.stderr and not result.stdout


@pytest.mark.parametrize(
    "message, words",
    [
        (
            "[gloo/transport/tcp/unbound_buffer.cc:129] Timed out waiting 4000ms for send "
            "operation to complete",
            "waited 600 s for the other ranks; one of them may have died",
        ),
        (
            "[gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:10396: Connection reset by "
            "peer.",
            "lost its connection to the other ranks; one of them may have died",
        ),
    ],
)
def test_a_peer_that_dies_or_hangs_during_a_merge_is_one_sentence(message, words, monkeypatch):
    """What gloo raises at a collective when a peer is gone (at once) or hangs (after the
    timeout), seen by core.sharding.gather."""
    import torch.distributed

    from cnntool.core.sharding import Shard, gather
    from cnntool.errors import DistributedError

    def gone(*_args):
        raise RuntimeError(message)

    monkeypatch.setattr(torch.distributed, "all_gather_object", gone)
    with pytest.raises(DistributedError, match=f"^rank 1 {words}$"):
        gather({"state": 1}, Shard(1, 2, timeout=600))
