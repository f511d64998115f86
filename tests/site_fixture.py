"""A realistic microscope site for the site tests, built from real images in a few seconds.

The "model" is a small real computation (torch convolutions, numpy statistics) on 64×64 crops of the
packaged sample
photos, so that every number and picture on the pages is measured, not invented:
- `conv1`: 8 filters of 7×7×3, the leading principal components of the crops' 7×7 patches
  (which look like learned first-layer filters: colour blobs and edges), ReLU; unit 5 has a
  bias of -10 and is dead, as in a broken network;
- `block2`: 8 filters of 24×24×3 at stride 8 (receptive field 24, jump 8), principal components
  of 24×24 patches, ReLU;
- `fc`: 12 units on the pooled conv1/block2 features and the mean colour: the 9 class
  centroids and 3 fixed random directions, ReLU; it feeds `classifier`, a ridge regression onto
  the photo each crop came from (9 classes), so its units vote for classes;
- the map is the 2-D linear discriminant projection of `fc`;
- the attack page is a real FGSM on this model (torch autograd), ε from 0 to 16/255;
- the "guided backprop" row shows gradient × input of the unit on each hit (what guided
  backprop gives for a single linear + ReLU unit at its strongest position).
Each unit's top patches are one per image, the image's strongest position (as in R-CNN).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cnntool.core.samples import photos
from cnntool.io.grids import grid, side_by_side, symmetric_scale
from cnntool.io.overlays import projection_image
from cnntool.io.site import layout
from cnntool.io.site.images import atlas_slot, save_jpeg, save_patch, save_source, write_atlases
from cnntool.io.site.model import (
    Attack,
    Correlated,
    DataCard,
    Embedding,
    Finding,
    Histogram,
    LayerPage,
    LayerSummary,
    ModelCard,
    Patch,
    Point,
    Site,
    Triptych,
    Unit,
    UnitStats,
    Vote,
)

CROP = 64
CROPS_PER_PHOTO = 20
TOP = 6
THUMB = 48
DEAD_UNIT = 5


@dataclass(frozen=True)
class FixtureSite:
    root: Path
    site: Site
    pages: tuple[LayerPage, ...]
    crops: tuple[str, ...]  # the data: paths of the crop files
    labels: np.ndarray  # photo index of each crop
    thumbnails: tuple[Image.Image, ...]


def load_crops(folder: Path, seed: int = 0) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """Seeded 64×64 crops of each sample photo (short side scaled to 160 px), saved as JPEG."""
    rng = np.random.default_rng(seed)
    paths, labels, names, pixels = [], [], [], []
    for label, source in enumerate(photos()):
        name = Path(source).stem.replace("_left", "")
        names.append(name)
        image = Image.open(source).convert("RGB")
        scale = 160 / min(image.size)
        image = image.resize(
            (round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC
        )
        for i in range(CROPS_PER_PHOTO):
            x = int(rng.integers(0, image.width - CROP + 1))
            y = int(rng.integers(0, image.height - CROP + 1))
            crop = image.crop((x, y, x + CROP, y + CROP))
            path = folder / name / f"{i:03d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            crop.save(path, quality=92)
            paths.append(str(path))
            labels.append(label)
            pixels.append(np.asarray(Image.open(path), dtype=np.float32) / 255.0)
    return paths, np.array(labels), names, np.stack(pixels)


def principal_filters(
    images: np.ndarray, size: int, count: int, rng, step: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """The `count` leading principal components of random size×size patches, (count, size, size, 3)
    with unit norm, and the mean patch. With `step` > 1 the components are found on patches
    subsampled by `step` and enlarged back (a 24×24 filter from 12×12 components: 432 dimensions
    instead of 1,728, and as smooth)."""
    n, height, width, _ = images.shape
    picks = zip(
        rng.integers(0, n, 4000),
        rng.integers(0, height - size + 1, 4000),
        rng.integers(0, width - size + 1, 4000),
        strict=True,
    )
    sample = np.stack(
        [images[i, y : y + size : step, x : x + size : step].reshape(-1) for i, y, x in picks]
    )
    mean = sample.mean(axis=0)
    centred = sample - mean
    _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    small = size // step
    components = vectors[:, ::-1][:, :count].T.reshape(count, small, small, 3)
    mean = mean.reshape(small, small, 3)
    if step > 1:
        components = components.repeat(step, axis=1).repeat(step, axis=2) / step
        mean = mean.repeat(step, axis=0).repeat(step, axis=1)
    return components.astype(np.float32), mean


def unit_stats(values: np.ndarray) -> tuple[UnitStats, Histogram]:
    """Diagnose's figures for one unit's samples (every image and position)."""
    n = values.size
    mean, mean_sq = float(values.mean()), float((values**2).mean())
    sparsity = (1 - mean**2 / mean_sq) / (1 - 1 / n) if mean_sq > 0 else None
    counts, edges = np.histogram(values, bins=40)
    dead = bool(values.max() <= 0)
    return (
        UnitStats(
            mean=mean,
            max=float(values.max()),
            lifetime_sparsity=None if dead else sparsity,
            active=float((values > 0).mean()),
            dead=dead,
            constant=False,
            saturated=False,
        ),
        Histogram(edges=tuple(float(e) for e in edges), counts=tuple(int(c) for c in counts)),
    )


def correlations(samples: np.ndarray) -> np.ndarray:
    """Pearson r between units (columns); NaN where a unit never varies."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.corrcoef(samples, rowvar=False)


def build_layer(
    root: Path,
    name: str,
    maps: np.ndarray,
    crops: list[str],
    images: np.ndarray,
    *,
    field: int | None,
    jump: int,
    visualizations: list[Image.Image],
    projections=None,
    votes=None,
) -> tuple[LayerPage, float | None]:
    """maps: (N, rows, cols, units) activations; returns the page and the layer's mean |r|."""
    n, rows, cols, units = maps.shape
    samples = maps.reshape(-1, units)
    r = correlations(samples[:: max(1, len(samples) // 200_000)])  # a strided 200k is plenty
    off_diagonal = np.abs(r[~np.eye(units, dtype=bool)])
    mean_abs_r = float(np.nanmean(off_diagonal)) if np.isfinite(off_diagonal).any() else None
    per_image = maps.reshape(n, rows * cols, units)
    best_position = per_image.argmax(axis=1)  # (N, units)
    best_value = per_image.max(axis=1)
    result = []
    for u in range(units):
        stats, histogram = unit_stats(maps[..., u])
        order = np.lexsort((np.arange(n), -best_value[:, u]))[:TOP]
        patches = []
        for rank, index in enumerate(order):
            row, col = divmod(int(best_position[index, u]), cols)
            box = (
                (0, 0, CROP, CROP)
                if field is None
                else (col * jump, row * jump, col * jump + field, row * jump + field)
            )
            source = Image.open(crops[index])
            patch_path = layout.patch_image(name, u, rank)
            save_patch(source, box, root / patch_path)
            source_path = layout.source_image(int(index))
            size = save_source(source, root / source_path)
            projection = None
            if projections is not None:
                projection = layout.projection_image(name, u, rank)
                save_jpeg(
                    projections(u, images[index], box).resize((96, 96), Image.Resampling.NEAREST),
                    root / projection,
                )
            patches.append(
                Patch(
                    image=patch_path,
                    value=float(best_value[index, u]),
                    source_index=int(index),
                    source_path=crops[index],
                    box=box,
                    source_image=source_path,
                    source_size=size,
                    projection=projection,
                )
            )
        neighbours = [(v, float(r[u, v])) for v in range(units) if v != u and np.isfinite(r[u, v])]
        neighbours.sort(key=lambda item: -abs(item[1]))
        fv_path = layout.visualization_image(name, u)
        save_jpeg(visualizations[u], root / fv_path)
        result.append(
            Unit(
                index=u,
                patches=tuple(patches),
                stats=stats,
                histogram=histogram,
                correlated=tuple(Correlated(v, c) for v, c in neighbours[:4]),
                votes=votes(u, stats) if votes else (),
                visualization=fv_path,
            )
        )
    return LayerPage(
        name=name,
        top=TOP,
        units=tuple(result),
        histogram_of="activation at every position" if field else "activation per image",
    ), mean_abs_r


def filter_tile(weights: np.ndarray) -> np.ndarray:
    return symmetric_scale(weights)


def enlarge(tile: np.ndarray, side: int = 112, smooth: bool = False) -> Image.Image:
    image = Image.fromarray(np.clip(np.rint(tile * 255), 0, 255).astype(np.uint8))
    return image.resize(
        (side, side), Image.Resampling.BICUBIC if smooth else Image.Resampling.NEAREST
    )


class PcaNet:
    """The fixture's model as torch ops (so that FGSM has real gradients)."""

    def __init__(self, w1, b1, w2, b2, w3, mean, std, v):
        import torch

        self.w1 = torch.from_numpy(w1).permute(0, 3, 1, 2).contiguous()
        self.b1 = torch.from_numpy(b1)
        self.w2 = torch.from_numpy(w2).permute(0, 3, 1, 2).contiguous()
        self.b2 = torch.from_numpy(b2)
        self.w3 = None if w3 is None else torch.from_numpy(w3)
        self.mean, self.std = mean, std
        self.v = None if v is None else torch.from_numpy(v.astype(np.float32))

    def features(self, x):
        import torch
        import torch.nn.functional as F

        conv1 = F.relu(F.conv2d(x, self.w1, self.b1))
        block2 = F.relu(F.conv2d(x, self.w2, self.b2, stride=8))
        pooled = torch.cat(
            [conv1.mean(dim=(2, 3)), block2.mean(dim=(2, 3)), x.mean(dim=(2, 3))], dim=1
        )
        return conv1, block2, pooled

    def fc(self, pooled):
        import torch.nn.functional as F

        return F.relu(((pooled - self.mean) / self.std) @ self.w3.T)

    def logits(self, x):
        import torch

        fc = self.fc(self.features(x)[2])
        return torch.cat([fc, torch.ones(len(fc), 1)], dim=1) @ self.v


def build_site(root: Path, data_folder: Path, seed: int = 0) -> FixtureSite:
    import torch

    rng = np.random.default_rng(seed)
    crops, labels, names, images = load_crops(data_folder, seed)
    n, classes = len(crops), len(names)

    # conv1: 7×7 principal filters, ReLU; one unit's bias sunk so that it never fires.
    # block2: 24×24 principal filters of mean-removed patches at stride 8, ReLU.
    w1, _ = principal_filters(images, 7, 8, rng)
    b1 = np.zeros(8, dtype=np.float32)
    b1[DEAD_UNIT] = -10.0
    w2, mean2 = principal_filters(images, 24, 8, rng, step=2)
    b2 = -(w2.reshape(8, -1) @ mean2.reshape(-1)).astype(np.float32)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    net = PcaNet(w1, b1, w2, b2, None, 0.0, 1.0, None)
    with torch.no_grad():
        conv1_t, block2_t, pooled_t = net.features(x)
    conv1 = conv1_t.permute(0, 2, 3, 1).numpy()  # (N, 58, 58, 8)
    block2 = block2_t.permute(0, 2, 3, 1).numpy()  # (N, 6, 6, 8)
    pooled = pooled_t.numpy()

    # fc: the standardized pooled features onto the class centroids and 3 random directions,
    # ReLU; the classifier is a ridge regression of the one-hot labels on fc
    mean, std = pooled.mean(axis=0), pooled.std(axis=0) + 1e-6
    z = (pooled - mean) / std
    centroids = np.stack([z[labels == c].mean(axis=0) for c in range(classes)])
    w3 = np.concatenate([centroids, rng.standard_normal((3, z.shape[1]))]).astype(np.float32)
    w3 /= np.linalg.norm(w3, axis=1, keepdims=True)
    fc = np.maximum(z @ w3.T, 0.0)  # (N, 12)
    design = np.concatenate([fc, np.ones((n, 1))], axis=1)
    v = np.linalg.solve(
        design.T @ design + 0.1 * np.eye(design.shape[1]), design.T @ np.eye(classes)[labels]
    )
    predictions = (design @ v).argmax(axis=1)
    accuracy = float((predictions == labels).mean())
    net = PcaNet(w1, b1, w2, b2, w3, torch.from_numpy(mean), torch.from_numpy(std), v)

    conv1_fv = [enlarge(filter_tile(w1[u])) for u in range(8)]
    block2_fv = [enlarge(filter_tile(w2[u]), smooth=True) for u in range(8)]
    fc_fv = [
        enlarge(images[np.argsort(-fc[:, u], kind="stable")[:TOP]].mean(axis=0), smooth=True)
        for u in range(12)
    ]

    def gradient_times_input(weights):
        def projection(u, image, box):
            x0, y0, x1, y1 = box
            return projection_image((image[y0:y1, x0:x1] * weights[u]).transpose(2, 0, 1), "guided")

        return projection

    def votes(u, stats):
        scores = v[u, :classes] * stats.mean
        return tuple(Vote(int(c), names[c], float(scores[c])) for c in np.argsort(-scores)[:5])

    pages, mean_r = [], {}
    for name, maps, field, jump, fv, projections, vote in (
        ("conv1", conv1, 7, 1, conv1_fv, gradient_times_input(w1), None),
        ("block2", block2, 24, 8, block2_fv, gradient_times_input(w2), None),
        ("fc", fc[:, None, None, :], None, 1, fc_fv, None, votes),
    ):
        page, mean_r[name] = build_layer(
            root,
            name,
            maps,
            crops,
            images,
            field=field,
            jump=jump,
            visualizations=fv,
            projections=projections,
            votes=vote,
        )
        pages.append(page)

    filters_path = layout.filters_image("conv1")
    (root / filters_path).parent.mkdir(parents=True, exist_ok=True)
    grid(
        [filter_tile(w1[u]) for u in range(8)], [str(u) for u in range(8)], columns=8, tile_size=42
    ).save(root / filters_path)

    def share_dead(page):
        return sum(u.stats.dead for u in page.units) / len(page.units)

    def preview(page):
        return tuple(u.patches[0].image for u in page.units if u.patches and not u.stats.dead)[:6]

    summaries = (
        LayerSummary(
            "conv1",
            "Conv2d",
            (8, 58, 58),
            8 * 147 + 8,
            58 * 58 * 147 * 8,
            7,
            1,
            8,
            share_dead(pages[0]),
            0.0,
            mean_r["conv1"],
            filters_image=filters_path,
            preview=preview(pages[0]),
        ),
        LayerSummary(
            "block2",
            "Conv2d",
            (8, 6, 6),
            8 * 1728 + 8,
            36 * 1728 * 8,
            24,
            8,
            8,
            share_dead(pages[1]),
            0.0,
            mean_r["block2"],
            preview=preview(pages[1]),
        ),
        LayerSummary(
            "fc",
            "Linear",
            (12,),
            12 * 19,
            12 * 19,
            None,
            None,
            12,
            share_dead(pages[2]),
            0.0,
            mean_r["fc"],
            preview=preview(pages[2]),
        ),
        LayerSummary(
            "classifier",
            "Linear",
            (classes,),
            13 * classes,
            12 * classes,
            None,
            None,
            classes,
            None,
            None,
            None,
            page=False,
        ),
    )
    params = sum(s.params for s in summaries)
    findings = [
        Finding(
            "warning",
            "conv1",
            f"1 of 8 units (12.5%) never > 0 over {n} images ({n * 58 * 58:,} samples; "
            f"threshold 10%): unit {DEAD_UNIT}",
            "bad training: many hidden units ignore the input",
            f"cnntool visualize top-patches MODEL DATA --layer conv1 --units {DEAD_UNIT}",
        ),
        Finding(
            "info",
            None,
            f"the model has {params:,} parameters (< 50,000)",
            "compute flops and nr. params -> if too small, make net larger",
            "cnntool profile MODEL",
        ),
    ]
    if mean_r["fc"] is not None and mean_r["fc"] >= 0.5:
        findings.append(
            Finding(
                "warning",
                "fc",
                f"mean |r| {mean_r['fc']:.2f} between units (threshold 0.5)",
                "feature maps need to be uncorrelated and have high variance",
                "cnntool diagnose MODEL DATA --layers fc",
            )
        )

    thumbnails = tuple(Image.open(p).convert("RGB") for p in crops)
    atlases = write_atlases(root / layout.ATLASES, thumbnails, THUMB, site_root=root)
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    xy = LinearDiscriminantAnalysis(n_components=2).fit_transform(fc, labels)
    points = tuple(
        Point(
            x=float(xy[i, 0]),
            y=float(xy[i, 1]),
            label=int(labels[i]),
            prediction=int(predictions[i]),
            correct=bool(labels[i] == predictions[i]),
            path=crops[i],
            atlas=atlas_slot(i, THUMB)[0],
            cell=atlas_slot(i, THUMB)[1],
            href=Path(crops[i]).as_uri(),
        )
        for i in range(n)
    )
    embedding = Embedding(
        layer="fc", method="LDA", points=points, label_names=tuple(names), atlases=tuple(atlases)
    )

    site = Site(
        model=ModelCard(
            name="pca-net (test fixture)",
            source="tests/site_fixture.py",
            preprocessing="64×64 crops, no resize, pixels in [0, 1], no normalization",
            preprocessing_source="the fixture",
            params=params,
            macs=sum(s.macs for s in summaries),
            classes=classes,
            class_names=tuple(names),
        ),
        data=DataCard(
            name="crops of the sample photos", images=n, skipped=0, labelled=n, accuracy=accuracy
        ),
        layers=summaries,
        findings=tuple(findings),
        embedding=embedding,
        attack=fgsm_attack(root, net, x, labels, names),
    )
    return FixtureSite(
        root=root,
        site=site,
        pages=tuple(pages),
        crops=tuple(crops),
        labels=labels,
        thumbnails=thumbnails,
    )


def fgsm_attack(root: Path, net: PcaNet, x, labels: np.ndarray, names: list[str]) -> Attack:
    """FGSM (x + ε·sign(∇x loss), clamped to [0, 1]) at a few ε; triptychs of the first 3
    images that the largest ε fools."""
    import torch
    import torch.nn.functional as F

    target = torch.from_numpy(labels)
    x = x.clone().requires_grad_(True)
    F.cross_entropy(net.logits(x), target).backward()
    direction = x.grad.sign()
    eps = (0.0, 2 / 255, 4 / 255, 8 / 255, 16 / 255)
    accuracy, triptychs = [], []
    with torch.no_grad():
        for e in eps:
            adversarial = (x + e * direction).clamp(0, 1)
            predicted = net.logits(adversarial).argmax(dim=1).numpy()
            accuracy.append(float((predicted == labels).mean()))
        for i in np.flatnonzero(predicted != labels)[:3]:
            clean, adv = x[i].permute(1, 2, 0).numpy(), adversarial[i].permute(1, 2, 0).numpy()
            delta = adv - clean
            delta = delta / (2 * max(float(np.abs(delta).max()), 1e-12)) + 0.5
            panels = [enlarge(a, 160) for a in (clean, delta, adv)]
            path = f"attack/triptych_{i:04d}.jpg"
            save_jpeg(side_by_side(panels), root / path)
            triptychs.append(Triptych(path, eps[-1], names[labels[i]], names[predicted[i]]))
    return Attack(method="FGSM", eps=eps, accuracy=tuple(accuracy), triptychs=tuple(triptychs))


_BUILT: dict[str, FixtureSite] = {}


def shared_site(tmp_path_factory) -> FixtureSite:
    """The fixture site, built and rendered once per test process (both site test modules use
    it; building takes a few seconds)."""
    if "site" not in _BUILT:
        from cnntool.io.site import write_site

        base = tmp_path_factory.mktemp("microscope")
        fixture = build_site(base / "site", base / "data")
        write_site(fixture.root, fixture.site, fixture.pages)
        _BUILT["site"] = fixture
    return _BUILT["site"]
