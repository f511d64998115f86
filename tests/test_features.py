"""`cnntool features`: pooling, chunked spooling, assembly across ranks, the .npz, NaN detection."""

import json
import threading

import numpy as np
import pytest
import torch
from torch import nn

from cnntool.core.data import Batch, BatchStream, open_data
from cnntool.core.hooks import hook_count
from cnntool.core.sharding import Shard
from cnntool.errors import CnnToolError
from cnntool.io import npz
from cnntool.tasks import features as feats


class TwoChannels(nn.Module):
    """1x1 conv 1 -> 2 channels with weights 2 and -1, no bias; the scan must stop after it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([2.0, -1.0]).reshape(2, 1, 1, 1))

    def forward(self, x):
        self.conv(x)
        raise AssertionError("the scan ran past its layer")


def _batches(values, batch_size):
    """Batches of 1x2x2 inputs: image i is [[1, 2], [3, 4]] * values[i]."""
    base = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    inputs = torch.stack([base * v for v in values])[:, None]
    return [
        Batch(
            indices=list(range(s, min(s + batch_size, len(values)))),
            inputs=inputs[s : s + batch_size],
            sizes=[(2, 2)] * len(inputs[s : s + batch_size]),
        )
        for s in range(0, len(values), batch_size)
    ]


@pytest.mark.parametrize(
    "pooling, expected",
    [
        ("avg", [[5.0, -2.5], [-5.0, 2.5]]),
        ("max", [[8.0, -1.0], [-2.0, 4.0]]),
        (
            "flatten",
            [
                [2.0, 4.0, 6.0, 8.0, -1.0, -2.0, -3.0, -4.0],
                [-2.0, -4.0, -6.0, -8.0, 1.0, 2.0, 3.0, 4.0],
            ],
        ),
    ],
)
def test_pooling_modes_give_exact_numbers_and_stop_at_the_layer(tmp_path, pooling, expected):
    model = TwoChannels().eval()
    with feats.FeatureSpool(tmp_path) as spool:
        feats.extract(model, "conv", _batches([1.0, -1.0], 1), spool, pooling=pooling)
        assert spool.indices == [0, 1] and spool.width == len(expected[0])
        np.testing.assert_array_equal(spool.rows(), np.array(expected, dtype=np.float32))
    assert not list(tmp_path.iterdir())  # the scratch file is gone
    assert hook_count(model) == 0


def test_vector_layers_are_kept_as_they_are():
    vectors = torch.arange(6.0).reshape(2, 3)
    for pooling in feats.POOLINGS:
        assert torch.equal(feats.pool(vectors, pooling), vectors)
    with pytest.raises(CnnToolError, match="unknown pooling"):
        feats.pool(vectors, "median")


def test_chunked_spool_equals_one_batch_in_memory(tmp_path):
    values = np.linspace(-3, 3, 23)
    model = TwoChannels().eval()
    with feats.FeatureSpool(tmp_path) as chunked, feats.FeatureSpool(tmp_path) as whole:
        feats.extract(model, "conv", _batches(values, 4), chunked, pooling="flatten")
        feats.extract(model, "conv", _batches(values, 23), whole, pooling="flatten")
        assert isinstance(chunked.rows(), np.memmap)
        np.testing.assert_array_equal(chunked.rows(), whole.rows())
        assert chunked.indices == list(range(23))


def test_nonfinite_rows_are_found_and_named(tmp_path):
    with feats.FeatureSpool(tmp_path) as spool:
        spool.append([4, 5, 6], np.array([[1, 2], [np.nan, 0], [np.inf, 1]], dtype=np.float32))
        assert spool.nonfinite == [5, 6]
    features = np.zeros((6, 3), dtype=np.float32)
    features[[1, 2, 4, 5], 0] = [np.nan, np.inf, -np.inf, np.nan]
    paths = [f"img{i}.png" for i in range(6)]
    with pytest.raises(CnnToolError) as error:
        feats.check_finite(features, paths)
    message = str(error.value)
    assert message.startswith(
        "4 image(s) have NaN or infinite features: img1.png, img2.png, img4.png and 1 more"
    )
    feats.check_finite(np.ones((3, 2), dtype=np.float32), paths[:3])  # finite: no error


def test_assemble_across_two_fake_ranks_in_small_chunks(tmp_path, monkeypatch):
    """Two threads play two ranks (a barrier-based gather), with chunks of 3 rows: rank 0 gets
    the rows in dataset order, skipped images left out."""
    import cnntool.core.sharding as scan

    rows = np.arange(11 * 4, dtype=np.float32).reshape(11, 4)
    skipped = {3, 8}
    barrier = threading.Barrier(2)
    slots = [None, None]

    def fake_gather(obj, shard):
        slots[shard.rank] = obj
        barrier.wait()
        result = list(slots)
        barrier.wait()
        return result

    monkeypatch.setattr(scan, "gather", fake_gather)
    monkeypatch.setattr(feats, "_CHUNK_BYTES", 3 * 4 * 4)
    results, errors = {}, []

    def rank(r):
        try:
            shard = Shard(r, 2)
            with feats.FeatureSpool(tmp_path) as spool, feats.FeatureSpool(tmp_path) as merged:
                for i in shard.indices(11):
                    if i not in skipped:
                        spool.append([i], rows[i : i + 1])
                out = feats.assemble(spool, shard, merged)
                results[r] = None if out is None else (list(out.indices), np.array(out.rows()))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    kept = [i for i in range(11) if i not in skipped]
    assert results[1] is None
    assert results[0][0] == kept
    np.testing.assert_array_equal(results[0][1], rows[kept])


def test_integer_labels_from_folders_sets_and_nothing():
    labels, names = feats.integer_labels(["dog", None, "cat", "dog"], None)
    assert labels.tolist() == [1, -1, 0, 1] and names == ["cat", "dog"]
    labels, names = feats.integer_labels([1, 0, None], ["non-face", "face"])
    assert labels.tolist() == [1, 0, -1] and names == ["non-face", "face"]
    labels, names = feats.integer_labels([None, None], None)
    assert labels.tolist() == [-1, -1] and names == []


def test_features_cli_writes_the_npz_of_an_in_memory_forward(tmp_path, cnntool):
    """lenet5-mnist relu3 of the faces set (200 images) in batches of 7: the file equals one
    forward pass of all images at once, labels and names from the sample set."""
    out = tmp_path / "sub" / "faces.npz"
    result = cnntool(
        "features",
        "lenet5-mnist",
        "faces",
        "--layer",
        "penultimate",
        "-o",
        str(out),
        "--batch-size",
        "7",
        threads=1,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "200 images × 200 features of lenet5-mnist relu3" in result.stderr
    assert [p.name for p in out.parent.iterdir()] == ["faces.npz"]  # no scratch files left
    from cnntool.core.loading.models import load_model

    loaded = load_model("lenet5-mnist", device="cpu")
    dataset = open_data("faces")
    inputs = next(iter(BatchStream(dataset, loaded.preprocessing, batch_size=200))).inputs
    with torch.no_grad():
        module = loaded.module
        expected = module.relu3(
            module.linear1(
                module.flatten(
                    module.maxpool2(
                        module.relu2(
                            module.conv2(module.maxpool1(module.relu1(module.conv1(inputs))))
                        )
                    )
                )
            )
        )
    saved = npz.read_npz(out)
    np.testing.assert_allclose(saved.features, expected.numpy(), rtol=1e-5, atol=1e-5)
    assert saved.features.dtype == np.float32
    assert saved.paths == dataset.paths and saved.labels.tolist() == dataset.labels
    assert saved.label_names == ["non-face", "face"]
    assert (saved.model, saved.layer, saved.pooling) == ("lenet5-mnist", "relu3", "avg")
    with np.load(out, allow_pickle=False) as raw:  # plain arrays: no pickle needed
        assert set(raw.files) == {
            "features",
            "paths",
            "labels",
            "label_names",
            "model",
            "layer",
            "pooling",
        }


def test_features_cli_errors_are_one_sentence(tmp_path, cnntool):
    result = cnntool(
        "features",
        "lenet5-mnist",
        "faces",
        "--layer",
        "relu33",
        "-o",
        str(tmp_path / "f.npz"),
        threads=1,
    )
    assert result.returncode == 1
    assert "did you mean 'relu3'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "f.npz").exists()
    with pytest.raises(CnnToolError, match="does not exist"):
        npz.read_npz(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", something=np.zeros(3))
    with pytest.raises(CnnToolError, match="has no 'features' array"):
        npz.read_npz(tmp_path / "bad.npz")


@pytest.mark.slow
@pytest.mark.torchrun
def test_torchrun_two_cpu_ranks_write_the_same_file_as_one_process(tmp_path, cnntool):
    """20 ImageNet photos and an unreadable file, through lenet5-mnist conv2 flattened (12,544
    values per image): 2 gloo ranks give the arrays one process gives, bit for bit.

    One image per batch, so that both runs compute the very same forwards: with batches of
    different sizes the CPU convolution may take another algorithm and round differently (about
    1e-7), which is the forward's business, not the assembly's (tested exactly above)."""
    listing = tmp_path / "list.txt"
    (tmp_path / "bad.png").write_bytes(b"not an image")
    paths = open_data("imagenet-samples").paths
    listing.write_text("\n".join(paths[:7] + [str(tmp_path / "bad.png")] + paths[7:]))
    args = [
        "features",
        "lenet5-mnist",
        str(listing),
        "--layer",
        "conv2",
        "--pooling",
        "flatten",
        "--batch-size",
        "1",
    ]
    single = cnntool(*args, "-o", str(tmp_path / "one.npz"), threads=1)
    assert single.returncode == 0, single.stderr
    double = cnntool.torchrun(*args, "-o", str(tmp_path / "two.npz"))
    assert double.returncode == 0, double.stderr
    assert double.stderr.count("skipped 1 unreadable image") == 1
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert one["features"].shape == (20, 64 * 14 * 14)
    for key in one.files:
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)
    assert str(tmp_path / "bad.png") not in one["paths"].tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bad.png",
        "list.txt",
        "one.npz",
        "two.npz",
    ]
    assert json.loads(json.dumps(one["labels"].tolist())) == [-1] * 20
