"""The one scan session (core.session): several analyses share one forward pass per batch, the
report counts every unreadable file once, and the commands that go through it give under
torchrun (2 gloo ranks) exactly what one process gives, attack included."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnntool.core.data import DataSet, open_data
from cnntool.core.loading.models import LoadedModel
from cnntool.core.preprocessing import Preprocessing
from cnntool.core.session import Consumer, ScanSession
from cnntool.errors import DataError
from tests.bad_files import bad_folder


class _Counting(nn.Module):
    """conv 1→2 (identity and negation), ReLU, then a linear head; counts its forwards."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.conv.weight.data = torch.tensor([[[[1.0]]], [[[-1.0]]]])
        self.relu = nn.ReLU()
        self.head = nn.Linear(2, 3)
        self.batches = []  # the batch size of each forward

    def forward(self, x):
        self.batches.append(x.shape[0])
        return self.head(self.relu(self.conv(x)).mean((2, 3)))


class _Sums(Consumer):
    def __init__(self, layer, needs_output=False):
        self.layers, self.needs_output, self.total, self.outputs = (layer,), needs_output, 0.0, 0

    def observe(self, layer, output):
        self.total += float(output.sum())

    def end(self, batch, output):
        self.outputs += output is not None


def _loaded(module) -> LoadedModel:
    prep = Preprocessing(crop=(4, 4), resize=4, mean=(0.0,), std=(1.0,), channels=1)
    return LoadedModel(module.eval(), "counting", prep, None, "test", torch.device("cpu"))


def _digits(count: int) -> DataSet:
    return open_data("mnist-5k").spread(count)


def test_consumers_share_one_forward_per_batch_and_see_the_same_tensors():
    module = _Counting()
    dataset = _digits(10)
    relu, conv, logits = _Sums("relu"), _Sums("conv"), _Sums("head", needs_output=True)
    with ScanSession.open(_loaded(module), dataset, batch_size=4, workers=0) as session:
        session.run([relu, conv, logits], "test")
        report = session.finish()
    # 10 images in batches of 4: one forward each, for all three consumers (the first forward,
    # of one image, decides the memory layout: core.runtime.layout)
    assert module.batches == [1, 4, 4, 2]
    assert report.read == 10 and not report.skipped
    assert logits.outputs == relu.outputs == 3  # one consumer needs the output: all get it
    pixels = torch.stack(
        [
            Preprocessing(crop=(4, 4), resize=4, mean=(0.0,), std=(1.0,), channels=1).to_pixels(
                dataset.load(i)
            )
            for i in range(10)
        ]
    )
    assert conv.total == pytest.approx(0.0, abs=1e-4)  # the two channels cancel
    assert relu.total == pytest.approx(float(pixels.sum()), rel=1e-5)  # only +x survives


def test_the_report_counts_listing_and_reading_skips_once_and_a_second_pass_reads_nothing_new(
    tmp_path,
):
    folder = bad_folder(tmp_path / "data", good=3)
    with ScanSession.open(
        _loaded(_Counting()), open_data(str(folder)), batch_size=2, workers=0
    ) as session:
        session.run([_Sums("relu")], "first")
        session.run([_Sums("relu")], "again")  # e.g. the microscope's attack pass
        report = session.finish()
    assert (report.total, report.read, len(report.skipped)) == (7, 3, 4)
    assert [p.rsplit("/", 1)[1] for p, _ in report.skipped] == [
        "bomb.png",
        "dangling.jpg",
        "pipe.png",
        "truncated.jpg",
    ]


def test_nothing_readable_is_one_sentence(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"not a png")
    with (
        pytest.raises(DataError, match="none of the 1 images"),
        ScanSession.open(_loaded(_Counting()), open_data(str(folder)), workers=0) as session,
    ):
        session.run([_Sums("relu")], "test")
        session.finish()


@pytest.mark.torchrun
@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["attack", "fgsm", "lenet5-mnist", "{data}", "--eps", "0.1,0.3", "--batch-size", "7"],
        ["predict", "lenet5-mnist", "{data}", "--batch-size", "7"],
    ],
    ids=["fgsm-sweep", "predict"],
)
def test_two_ranks_write_what_one_process_writes(args, cnntool, tmp_path):
    digits, labels = (
        open_data("mnist-5k").spread(40).arrays,
        open_data("mnist-5k").spread(40).labels,
    )
    data = tmp_path / "digits"
    for i, (digit, label) in enumerate(zip(digits, labels, strict=True)):
        (data / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(digit).save(data / str(label) / f"{i:03d}.png")
    command = [a.format(data=data) for a in args] + ["--workers", "0", "-q"]
    one = cnntool(*command, threads=1)
    two = cnntool.torchrun(*command)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    single = [json.loads(line) for line in one.stdout.splitlines()]
    double = [json.loads(line) for line in two.stdout.splitlines()]
    assert len(single) in (2, 40) and double == single
    if args[0] == "attack" and len(single) == 40:  # per-image records: every image once, in order
        assert [r["path"] for r in double] == sorted(str(p) for p in data.rglob("*.png"))
        assert np.mean([r["success"] for r in double]) > 0.2
