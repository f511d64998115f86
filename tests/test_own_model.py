"""A user's own model, end to end at the core level: the example's CIFAR-style SmallNet trained
for seconds on built-in data and saved three ways (examples/own_model/train.py), and the rules
for importing user code (--trust-code)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnntool.core.data import BatchStream, open_data
from cnntool.core.loading import code_trust
from cnntool.core.loading.code_trust import untrusted_folder
from cnntool.core.loading.models import check_forward, load_model
from cnntool.core.loading.preprocessing_sources import PreprocessingOptions
from cnntool.errors import ModelLoadError, UntrustedCodeError
from cnntool.tasks.predict import predict
from tests.helpers import InProcess

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "own_model"
FACTORY = f"{EXAMPLE / 'model.py'}:small_net"


@pytest.fixture(scope="module")
def trained(own_model_trained):
    """The example script's output folder and accuracy (conftest trains it once per run)."""
    return own_model_trained


def _by_hand(module, folder: Path, prep: dict) -> float:
    """Accuracy on the 32-px test PNGs, normalized here with numpy (no cnntool involved)."""
    names = sorted(p.name for p in folder.iterdir())
    mean, std = np.array(prep["mean"]), np.array(prep["std"])
    correct = total = 0
    for label, name in enumerate(names):
        files = sorted((folder / name).glob("*.png"))
        pixels = np.stack(
            [np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255 for f in files]
        )
        x = torch.from_numpy(((pixels - mean) / std).astype(np.float32)).permute(0, 3, 1, 2)
        with torch.no_grad():
            correct += int((module(x).argmax(1) == label).sum())
        total += len(files)
    return correct / total


def _predict_accuracy(loaded, folder: Path) -> tuple[float, int]:
    stream = BatchStream(open_data(str(folder)), loaded.preprocessing, batch_size=64)
    judged = [p.correct for p in predict(loaded, stream) if p.correct is not None]
    return sum(judged) / len(judged), len(judged)


def test_every_saved_form_gives_the_accuracy_computed_by_hand(trained):
    out, reported = trained
    test = out / "data" / "test"
    prep = json.loads((out / "preprocessing.json").read_text())
    assert prep["input_size"] == [3, 32, 32] and prep["mean"] != [0.485, 0.456, 0.406]
    assert reported > 0.4  # 8 classes: chance is 12.5% (measured: 63%)
    forms = {
        "state dict + --preprocessing + --classes": load_model(
            str(out / "small_net.pth"),
            arch=FACTORY,
            trust_code=True,
            device="cpu",
            preprocessing=PreprocessingOptions(file=str(out / "preprocessing.json")),
            classes=str(out / "classes.txt"),
        ),
        "save_checkpoint": load_model(
            str(out / "small_net_cnntool.pt"), arch=FACTORY, trust_code=True, device="cpu"
        ),
        "safetensors": load_model(
            str(out / "small_net.safetensors"), arch=FACTORY, trust_code=True, device="cpu"
        ),
        "lightning + --preprocessing": load_model(
            FACTORY,
            weights=str(out / "small_net_lightning.ckpt"),
            trust_code=True,
            device="cpu",
            preprocessing=PreprocessingOptions(file=str(out / "preprocessing.json")),
        ),
    }
    expected = _by_hand(forms["save_checkpoint"].module, test, prep)
    assert expected == pytest.approx(reported, abs=1e-9)
    for form, loaded in forms.items():
        assert not loaded.preprocessing_guessed, form
        assert loaded.preprocessing.describe().startswith(
            "3×32×32, resize 32 bilinear, mean (0.486, 0.373, 0.328)"
        )
        assert loaded.class_names[:2] == ["astronaut", "chelsea"], form
        assert check_forward(loaded) == 8
        accuracy, judged = _predict_accuracy(loaded, test)
        assert judged == 200 and accuracy == pytest.approx(expected, abs=1e-9), form
    assert (
        forms["lightning + --preprocessing"].class_names_source
        == "the checkpoint (hyper_parameters.class_names)"
    )
    assert "stripped the prefix 'model.' from 20 keys" in forms["lightning + --preprocessing"].notes


def test_without_its_preprocessing_the_model_is_fed_a_guess_and_says_so(trained):
    out, _ = trained
    guessed = load_model(str(out / "small_net.pth"), arch=FACTORY, trust_code=True, device="cpu")
    assert guessed.preprocessing_guessed and guessed.preprocessing.input_shape == (3, 224, 224)
    assert "a guess from the first convolution (3 input channels)" in guessed.preprocessing_line()
    assert guessed.class_names is None  # and predict maps the folders in ImageFolder order:
    stream = BatchStream(
        open_data(str(out / "data" / "test")), guessed.preprocessing, batch_size=100
    )
    first = next(predict(guessed, stream))
    assert first.label == "astronaut" and first.label_index == 0


# --- --trust-code ---------------------------------------------------------------------------------

EVIL = """\
from pathlib import Path
Path(__file__).with_name("imported-evilmod").touch()
import torch
net = lambda: torch.nn.Conv2d(3, 3, 1)
"""


def _cnntool(args, cwd, env_extra=None, module=True):
    """A child process (not tests.helpers.InProcess): what code is trusted depends on the
    import path the interpreter builds at start-up (PYTHONPATH, the current folder) and on the
    modules not yet imported."""
    env = {**os.environ, **(env_extra or {})}
    command = (
        [sys.executable, "-m", "cnntool", *args]
        if module
        else [str(Path(sys.executable).with_name("cnntool")), *args]
    )
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture()
def evil_folder(tmp_path):
    (tmp_path / "evilmod.py").write_text(EVIL)
    Image.new("RGB", (16, 16)).save(tmp_path / "x.png")
    return tmp_path


def test_a_module_in_the_current_folder_is_not_imported_without_trust(evil_folder):
    done = _cnntool(["predict", "evilmod:net", "x.png"], evil_folder)
    assert done.returncode == 1, done.stderr
    assert "--trust-code" in done.stderr and "Traceback" not in done.stderr
    assert not (evil_folder / "imported-evilmod").exists()
    if Path(sys.executable).with_name("cnntool").exists():  # the console script, PYTHONPATH=.
        done = _cnntool(
            ["predict", "evilmod:net", "x.png"], evil_folder, {"PYTHONPATH": "."}, module=False
        )
        assert done.returncode == 1 and "--trust-code" in done.stderr
        assert not (evil_folder / "imported-evilmod").exists()


def test_a_relative_or_absolute_pythonpath_is_no_trust(evil_folder, monkeypatch):
    """Python makes PYTHONPATH entries absolute at start-up: trust goes by where the module's
    file lies (installed library folders), not by the order or form of sys.path (#21)."""
    below = evil_folder / "sub"
    below.mkdir()
    (evil_folder / "mlxtend.py").write_text(EVIL)  # shadows an installed package's name

    def refused(done):
        assert done.returncode == 1, done.stderr
        assert "--trust-code" in done.stderr and str(evil_folder.resolve()) in done.stderr
        assert "a folder on the import path" in done.stderr and "Traceback" not in done.stderr
        assert not (evil_folder / "imported-evilmod").exists()

    # the start-up path needs a child process: a relative entry, as the red team planted it
    refused(_cnntool(["layers", "evilmod:net"], below, {"PYTHONPATH": ".."}))
    # what start-up made of it (an absolute entry in front), in this process: a module of the
    # folder and one shadowing an installed package's name are refused alike
    monkeypatch.syspath_prepend(str(evil_folder))
    monkeypatch.delitem(sys.modules, "mlxtend", raising=False)
    run = InProcess()
    for spec in ("evilmod:net", "mlxtend:net"):
        refused(run("layers", spec, cwd=below))
    try:
        assert run("layers", "evilmod:net", "--trust-code", cwd=below).returncode == 0
        assert (evil_folder / "imported-evilmod").exists()
    finally:
        sys.modules.pop("evilmod", None)


def test_an_editable_install_trusts_only_its_own_packages(monkeypatch):
    """cnntool is installed editable from ROOT: its own package is trusted there, but a
    module that merely lies in that folder (tests/) is not."""
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    assert code_trust._editable_roots("cnntool") == [ROOT.resolve()]
    assert code_trust._installed("cnntool", (ROOT / "cnntool").resolve())
    assert not code_trust._installed("tests", (ROOT / "tests").resolve())
    assert not code_trust._installed("evilmod", (ROOT / "evilmod.py").resolve())


def test_the_decision_is_made_before_importing(evil_folder, monkeypatch):
    monkeypatch.chdir(evil_folder)
    monkeypatch.syspath_prepend("")  # what `python -c` and `python -m` give
    assert untrusted_folder("evilmod") == str(evil_folder.resolve())
    with pytest.raises(UntrustedCodeError, match="current folder"):
        load_model("evilmod:net", device="cpu")
    assert not (evil_folder / "imported-evilmod").exists() and "evilmod" not in sys.modules
    # installed packages need no flag, even from a folder whose .venv holds them
    monkeypatch.chdir(ROOT)
    for installed in ("torchvision", "mlxtend", "json"):
        assert untrusted_folder(installed) is None
    assert load_model("torchvision.models:resnet18", device="cpu").module.fc.out_features == 1000
    # with the flag the user vouched for it, and it runs
    monkeypatch.chdir(evil_folder)
    try:
        load_model("evilmod:net", device="cpu", trust_code=True)
        assert (evil_folder / "imported-evilmod").exists()
    finally:
        sys.modules.pop("evilmod", None)


def test_a_model_file_can_import_its_sibling(tmp_path):
    (tmp_path / "blocks_for_test.py").write_text("WIDTH = 6\n")
    (tmp_path / "netfile.py").write_text(
        "import torch\nfrom blocks_for_test import WIDTH\n"
        "def make():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, WIDTH, 1), "
        "torch.nn.AdaptiveAvgPool2d(1))\n"
    )
    before = list(sys.path)
    try:
        loaded = load_model(f"{tmp_path / 'netfile.py'}:make", device="cpu", trust_code=True)
        assert loaded.module[0].out_channels == 6
        assert sys.path == before  # the folder was on the path only while importing
    finally:
        sys.modules.pop("blocks_for_test", None)
    with pytest.raises(UntrustedCodeError):
        load_model(f"{tmp_path / 'netfile.py'}:make", device="cpu")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(f"{tmp_path / 'missing.py'}:make", device="cpu", trust_code=True)
