"""Features of a dataset -> a 2-D map (t-SNE or PCA), and how faithful the map is.

Pipeline (van der Maaten & Hinton 2008; the usual recipe for CNN codes, as in Karpathy's maps):
1. standardize each feature to zero mean and unit variance (optional; constant features stay 0);
2. PCA to `pca_dims` (50) dimensions: removes noise and makes the neighbour search cheap;
3. t-SNE to 2-D with openTSNE (FFT-accelerated interpolation for 10k points and more,
   Barnes-Hut below; Poličar et al. 2019) or scikit-learn's Barnes-Hut. Both run the same
   schedule: 250 early-exaggeration iterations, then `iterations` more, PCA initialization,
   learning rate N/12, and both take `seed`: the same seed gives the same map.
   `method="pca"` stops after a 2-component PCA instead (linear, instant).

Quality figures (`quality`), on at most `sample` points (a seeded subsample beyond that, because
scikit-learn's trustworthiness needs all N² distances):
- trustworthiness (Venna & Kaski 2001, scikit-learn): 1.0 when every point's k = 5 nearest
  neighbours in the map are also near it in feature space; low when the map invents neighbours.
- k-NN accuracy (k = 5, leave-one-out): each labelled point's label predicted by the majority
  vote of its 5 nearest other labelled points (ties go to the nearer neighbours), in the 2-D
  map and in the original feature space. Near the feature-space figure: the map keeps the classes
  apart as
  well as the features do.
Both are measured against the features as given (before standardization and PCA).

A task: arrays in, a frozen dataclass out; warnings are returned, never printed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cnntool.errors import CnnToolError

ENGINES = ("opentsne", "sklearn")
METHODS = ("tsne", "pca")
EARLY_EXAGGERATION_ITERATIONS = 250  # openTSNE's and scikit-learn's default
NEIGHBOURS = 5  # k of the quality figures
MIN_TSNE_POINTS = 5
# Below this many points t-SNE threads cost more than they save: each of the 750 iterations
# synchronizes them, and on a busy machine every wait is a scheduler time slice (200 points:
# 0.4 s on one thread, 7-11 s on two while another process holds a core).
PARALLEL_FROM = 5000


@dataclass(frozen=True)
class EmbedSettings:
    """What to compute; defaults are the documented CLI defaults."""

    method: str = "tsne"
    engine: str = "opentsne"
    perplexity: float = 30.0
    exaggeration: float = 12.0  # early exaggeration, for the first 250 iterations
    iterations: int = 500  # after the early exaggeration phase
    seed: int = 0
    pca_dims: int = 50  # 0: no PCA before t-SNE
    standardize: bool = True
    n_jobs: int | None = None  # threads; -1: every core; None: every core from PARALLEL_FROM points


@dataclass(frozen=True)
class Embedding:
    """The map: `coords` (N, 2) float32, and what was really run (`perplexity` may be lower than
    asked for a small set; `pca_dims` is 0 when no PCA was applied). `warnings` are for the
    caller to show."""

    coords: np.ndarray
    method: str
    engine: str | None
    perplexity: float | None
    pca_dims: int
    seconds: float
    warnings: tuple[str, ...] = ()

    def describe(self, count: int, dims: int) -> str:
        """'t-SNE (opentsne, perplexity 30, after PCA to 50) of 5000 images × 200 features in 12.1
        s'."""
        what = (
            "PCA"
            if self.method == "pca"
            else f"t-SNE ({self.engine}, perplexity {self.perplexity:.3g}"
            + (f", after PCA to {self.pca_dims}" if self.pca_dims else "")
            + ")"
        )
        return f"{what} of {count} images × {dims} features in {self.seconds:.1f} s"


@dataclass(frozen=True)
class Quality:
    """Quality figures (None where they cannot be computed: no labels, or too few points)."""

    points: int  # how many points they were measured on
    neighbours: int
    trustworthiness: float | None
    knn_accuracy_2d: float | None
    knn_accuracy_features: float | None
    classes: int = 0
    notes: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        """One line: trustworthiness and the k-NN accuracies (or why there are none)."""
        parts = []
        if self.trustworthiness is not None:
            parts.append(f"trustworthiness (k={self.neighbours}) {self.trustworthiness:.3f}")
        if self.knn_accuracy_2d is not None:
            parts.append(
                f"{self.classes}-class 5-NN accuracy (leave-one-out): 2-D map "
                f"{self.knn_accuracy_2d:.3f}, features {self.knn_accuracy_features:.3f}"
            )
        elif self.classes < 2:
            parts.append("no k-NN accuracy: fewer than two labelled classes")
        return "quality: " + "; ".join(parts) + "".join(f" ({n})" for n in self.notes)


def embed(features: np.ndarray, settings: EmbedSettings = EmbedSettings()) -> Embedding:
    """2-D coordinates of the rows of `features` (N, D), finite (see features.check_finite)."""
    if settings.method not in METHODS:
        raise CnnToolError(f"unknown method '{settings.method}'; use {' or '.join(METHODS)}")
    if settings.engine not in ENGINES:
        raise CnnToolError(f"unknown t-SNE engine '{settings.engine}'; use {' or '.join(ENGINES)}")
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[0] == 0:
        raise CnnToolError(f"there are no features to embed (shape {features.shape})")
    start = time.perf_counter()
    data = standardized(features) if settings.standardize else features.astype(np.float32)
    if settings.method == "pca":
        coords = pca(data, 2, settings.seed)
        return Embedding(coords, "pca", None, None, 2, time.perf_counter() - start)
    count = data.shape[0]
    if count < MIN_TSNE_POINTS:
        raise CnnToolError(
            f"t-SNE needs at least {MIN_TSNE_POINTS} images, not {count}; "
            "use --method pca for fewer"
        )
    warnings = []
    perplexity = settings.perplexity
    largest = usable_perplexity(count, settings.engine)
    if perplexity > largest:
        warnings.append(
            f"perplexity {perplexity:g} needs at least "
            f"{needed_points(perplexity, settings.engine)} images; with {count}, "
            f"perplexity {largest:.3g} is used"
        )
        perplexity = largest
    dims = 0
    if settings.pca_dims and settings.pca_dims < data.shape[1]:
        dims = min(settings.pca_dims, count)
        data = pca(data, dims, settings.seed)
    run = _opentsne if settings.engine == "opentsne" else _sklearn
    coords = run(data, perplexity, settings, threads(settings.n_jobs, count))
    return Embedding(
        np.ascontiguousarray(coords, dtype=np.float32),
        "tsne",
        settings.engine,
        perplexity,
        dims,
        time.perf_counter() - start,
        tuple(warnings),
    )


def embed_features(
    feature_set,
    settings: EmbedSettings = EmbedSettings(),
    *,
    quality_sample: int = 5000,
    announce: Callable[[str], None] | None = None,
) -> tuple[Embedding, Quality | None]:
    """The map of a FeatureSet's rows (an error naming the images whose features are NaN or
    infinite) and its quality figures on at most `quality_sample` points (0: none). `announce`
    is told when a t-SNE long enough to be worth saying (2,000 images or more) starts."""
    from cnntool.tasks.features import check_finite

    features = np.asarray(feature_set.features, dtype=np.float32)
    check_finite(features, feature_set.paths)
    if announce is not None and settings.method == "tsne" and len(features) >= 2000:
        announce(
            f"t-SNE ({settings.engine}) of {len(features)} images × {features.shape[1]} features …"
        )
    result = embed(features, settings)
    figures = (
        quality(
            features, result.coords, feature_set.labels, sample=quality_sample, seed=settings.seed
        )
        if quality_sample
        else None
    )
    return result, figures


def standardized(features: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per column (float64 statistics); constant columns become 0."""
    mean = features.mean(axis=0, dtype=np.float64)
    std = features.std(axis=0, dtype=np.float64)
    std[std == 0] = 1.0
    return ((features - mean) / std).astype(np.float32)


def pca(data: np.ndarray, dims: int, seed: int) -> np.ndarray:
    """The first `dims` principal components (columns past the data's rank are zeros), with
    signs fixed by scikit-learn so that the result is deterministic."""
    from sklearn.decomposition import PCA

    count, width = data.shape
    possible = min(dims, count, width)
    out = np.zeros((count, dims), dtype=np.float32)
    if possible >= 1 and count >= 2:
        out[:, :possible] = PCA(n_components=possible, random_state=seed).fit_transform(data)
    return out


def usable_perplexity(count: int, engine: str) -> float:
    """The largest perplexity an engine accepts for `count` points: openTSNE uses 3·perplexity
    neighbours and needs that many other points; scikit-learn needs perplexity < count."""
    if engine == "opentsne":
        return max(1.0, (count - 1) / 3)
    return max(1.0, count - 1.0)


def needed_points(perplexity: float, engine: str) -> int:
    return int(3 * perplexity) + 1 if engine == "opentsne" else int(perplexity) + 1


def threads(n_jobs: int | None, count: int) -> int:
    """The n_jobs handed to the engine: as asked, or by default -1 (every core) from
    PARALLEL_FROM points and 1 below."""
    if n_jobs is not None:
        return n_jobs
    return -1 if count >= PARALLEL_FROM else 1


def _opentsne(
    data: np.ndarray, perplexity: float, settings: EmbedSettings, n_jobs: int
) -> np.ndarray:
    import logging

    import openTSNE

    # openTSNE logs its own perplexity adjustments; ours already happened and are reported
    logging.getLogger("openTSNE").setLevel(logging.ERROR)
    tsne = openTSNE.TSNE(
        n_components=2,
        perplexity=perplexity,
        early_exaggeration=settings.exaggeration,
        early_exaggeration_iter=EARLY_EXAGGERATION_ITERATIONS,
        n_iter=settings.iterations,
        initialization="pca",
        random_state=settings.seed,
        n_jobs=n_jobs,
        verbose=False,
    )
    return np.asarray(tsne.fit(data.astype(np.float64)))


def _sklearn(
    data: np.ndarray, perplexity: float, settings: EmbedSettings, n_jobs: int
) -> np.ndarray:
    from sklearn.manifold import TSNE

    # scikit-learn counts the early exaggeration iterations in max_iter and learns at N/12
    # ("auto") as openTSNE does (N / early exaggeration)
    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        early_exaggeration=settings.exaggeration,
        max_iter=EARLY_EXAGGERATION_ITERATIONS + settings.iterations,
        init="pca",
        learning_rate="auto",
        method="barnes_hut",
        random_state=settings.seed,
        n_jobs=n_jobs,
    )
    return tsne.fit_transform(data)


# ---------------------------------------------------------------------------------------------
# quality


def quality(
    features: np.ndarray,
    coords: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    sample: int = 5000,
    seed: int = 0,
    neighbours: int = NEIGHBOURS,
) -> Quality:
    """Trustworthiness and leave-one-out k-NN accuracies (see the module docstring).

    Labels < 0 mean "unlabelled": such points are left out of the k-NN accuracies (which need
    at least two classes) but not out of the trustworthiness.
    """
    from sklearn.manifold import trustworthiness

    features = np.asarray(features, dtype=np.float32)
    coords = np.asarray(coords, dtype=np.float32)
    count = features.shape[0]
    notes = []
    chosen = np.arange(count)
    if count > sample:
        chosen = np.sort(np.random.default_rng(seed).choice(count, size=sample, replace=False))
        notes.append(f"measured on a random subsample of {sample} of the {count} points")
    features, coords = features[chosen], coords[chosen]
    labels = None if labels is None else np.asarray(labels)[chosen]
    points = len(chosen)
    k = min(neighbours, (points - 1) // 2)  # trustworthiness requires k < points / 2
    trust = float(trustworthiness(features, coords, n_neighbors=k)) if k >= 1 else None
    classes = 0 if labels is None else len(np.unique(labels[labels >= 0]))
    knn_2d = knn_features = None
    if classes >= 2:
        knn_2d = knn_accuracy(coords, labels, neighbours)
        knn_features = knn_accuracy(features, labels, neighbours)
    return Quality(points, k, trust, knn_2d, knn_features, classes, tuple(notes))


def knn_accuracy(points: np.ndarray, labels: np.ndarray, k: int = NEIGHBOURS) -> float | None:
    """Leave-one-out k-NN accuracy among the labelled points (labels >= 0): each predicted from
    its k nearest OTHER labelled points (a point is never its own neighbour); a tie between
    labels goes to the one that holds the nearer neighbour. None with k or fewer such points."""
    from sklearn.neighbors import NearestNeighbors

    labels = np.asarray(labels)
    labelled = labels >= 0
    points, labels = np.asarray(points)[labelled], labels[labelled]
    if len(labels) <= k:
        return None
    index = NearestNeighbors(n_neighbors=k).fit(points)
    _, neighbours = index.kneighbors()  # no query: each point's neighbours exclude itself
    votes = labels[neighbours]  # (N, k), nearest first
    scores = np.zeros((len(labels), int(labels.max()) + 1))
    rows = np.arange(len(labels))
    for rank in range(k):
        # one vote each plus a bonus 2**-rank / 1000: sums of distinct powers of two differ,
        # so a tie goes to the label that holds the nearest neighbour where the two differ
        np.add.at(scores, (rows, votes[:, rank]), 1.0 + 1e-3 * 2.0**-rank)
    return float((scores.argmax(axis=1) == labels).mean())
