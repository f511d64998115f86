"""The public Python API: every re-export resolves, and `import cnntool` stays light."""

import subprocess
import sys

import pytest

import cnntool


def test_every_public_name_resolves():
    for name in cnntool.__all__:
        assert getattr(cnntool, name) is not None, name


def test_import_does_not_load_torch():
    code = (
        "import sys, cnntool; assert 'torch' not in sys.modules; cnntool.capture; "
        "assert 'torch' in sys.modules"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def _readme_python_blocks() -> list[str]:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_every_name_the_readme_uses_resolves():
    """Not only __all__: each `cnntool.NAME` and `from cnntool… import NAME` in the README's
    Python examples exists."""
    import importlib
    import re

    blocks = "\n".join(_readme_python_blocks())
    names = set(re.findall(r"\bcnntool\.([A-Za-z_][A-Za-z0-9_]*)\b", blocks))
    assert {
        "features",
        "top_patches",
        "diagnose",
        "attack_dataset",
        "layers",
        "save_checkpoint",
        "Target",
        "SmoothGrad",
    } <= names
    for name in names:
        if name in {"tasks", "io", "core"}:
            continue
        assert hasattr(cnntool, name), name
    for module, imported in re.findall(r"from (cnntool[.\w]*) import ([\w, ]+)", blocks):
        for name in imported.split(","):
            assert hasattr(importlib.import_module(module), name.strip()), (module, name)


@pytest.mark.slow
def test_the_readme_python_api_example_runs(tmp_path, monkeypatch):
    """The "Python API" section, as written, on LeNet-5 and the MNIST digits."""
    from PIL import Image

    from cnntool.core.samples import mnist_5k

    example = next(b for b in _readme_python_blocks() if "cnntool.features(" in b)
    monkeypatch.chdir(tmp_path)
    Image.fromarray(mnist_5k()[0][0]).save("digit.png")
    scope: dict = {}
    exec(compile(example, "README.md", "exec"), scope)
    assert scope["features"].features.shape == (1000, 200)
    assert [len(h) for h in scope["patches"].hits] == [9] * 8
    assert scope["diagnosis"].images == 1000
    assert [s.eps for s in scope["summaries"]] == [0.1, 0.3]
    assert scope["summaries"][1].adv_accuracy < scope["summaries"][0].adv_accuracy
    assert scope["coords"].shape == (1000, 2)
    assert scope["cka"].values["linear"].shape == (4, 4) and scope["cka"].images == 1000
    assert scope["saliency"].map.shape == (1, 28, 28) and scope["guided"].shape == (1, 28, 28)
    assert scope["maps"].shape == (1, 64, 14, 14)  # conv2 after the first 2×2 pooling
    assert cnntool.load_model("run.pt", arch="lenet5-mnist").preprocessing.crop == (28, 28)
