"""The files of `visualize cam` and `visualize occlusion`: overlays with a colour bar and a
titled class, the raw maps as .npy/.npz, and their records.

Per image, `visualize cam -o DIR` writes DIR/NNNNN_STEM.png (the map over the photo as fed to
the model) and DIR/NNNNN_STEM.npy (the raw map: h×w float32 at the layer's resolution, before
the ReLU and any scaling), NNNNN being the image's index in DATA, so that names never collide.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnntool.io.figures import new_figure, save_figure
from cnntool.io.writers import atomic_path

CAM_COLORMAP = "inferno"  # perceptually uniform, colour-blind safe; dark = no evidence
NAMES = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "scorecam": "Score-CAM",
    "layercam": "Layer-CAM",
    "eigencam": "Eigen-CAM",
    "hirescam": "HiResCAM",
}


def target_label(target) -> str:
    """'golden retriever (207)', 'class 207', or 'layer4 unit 17'."""
    if target is None:
        return "first principal component (no target)"
    if target.kind == "unit":
        return f"{target.layer} unit {target.unit}"
    return (
        f"{target.class_name} ({target.class_index})"
        if target.class_name
        else f"class {target.class_index}"
    )


def _gray(pixels: np.ndarray) -> np.ndarray:
    """C×H×W [0, 1] -> H×W luminance."""
    return pixels[0] if pixels.shape[0] == 1 else pixels[:3].mean(axis=0)


def save_cam_overlay(
    path: str | Path, pixels: np.ndarray, heat: np.ndarray, cam, *, alpha: float = 0.55
) -> None:
    """The photo as fed to the model (`pixels` C×H×W in [0, 1]) in grey, the [0, 1] map `heat`
    (H×W) painted over it through CAM_COLORMAP, a colour bar, and a title naming the class,
    the method, the layer and the score. A flat map is drawn as the bare photo and said so."""
    figure = new_figure(width=4.6, height=4.3)
    axes = figure.add_axes((0.03, 0.04, 0.74, 0.76))
    bar_axes = figure.add_axes((0.82, 0.04, 0.04, 0.76))
    axes.imshow(_gray(pixels), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    shown = axes.imshow(
        heat,
        cmap=CAM_COLORMAP,
        vmin=0,
        vmax=1,
        interpolation="nearest",
        alpha=0.0 if cam.flat else alpha,
    )
    axes.axis("off")
    bar = figure.colorbar(shown, cax=bar_axes)
    bar.solids.set_alpha(1.0)
    bar.set_label("relevance (this map's min → max)", fontsize=9)
    bar.ax.tick_params(labelsize=8)
    score = (
        ""
        if cam.score is None
        else f", {'logit' if cam.target.kind == 'class' else 'mean activation'} {cam.score:.3g}"
    )
    figure.text(0.03, 0.955, target_label(cam.target), fontsize=12, weight="bold", va="top")
    subtitle = f"{NAMES[cam.method]} of {cam.layer}{score}"
    if cam.flat:
        subtitle += " — FLAT: nothing left after the ReLU"
    figure.text(
        0.03, 0.875, subtitle, fontsize=9, va="top", color="firebrick" if cam.flat else "black"
    )
    save_figure(figure, path)


def save_raw_map(path: str | Path, raw: np.ndarray) -> None:
    """A raw map as a float32 .npy, atomically."""
    with atomic_path(path) as temp, open(temp, "wb") as handle:
        np.save(handle, np.asarray(raw, dtype=np.float32))


def cam_file_stem(index: int, path: str) -> str:
    return f"{index:05d}_{Path(path).stem}"


def cam_record(path: str, cam, png: Path, npy: Path) -> dict:
    """One image's record: path, target (class index and name, or unit), score, layer, method,
    map shape, whether the map is flat, the files written."""
    return {"path": path, **cam.to_record(), "file": str(png), "raw": str(npy)}


# ---------------------------------------------------------------------------------------------
# occlusion


def _extent(starts: Sequence[int], size: int, stride: int, limit: int) -> tuple[float, float]:
    """The span of the cells centred on each occluder's centre (windows clipped at the border)."""
    centres = [(s + min(s + size, limit)) / 2 for s in starts]
    half = stride / 2
    return centres[0] - half, centres[-1] + half


def save_occlusion_figure(path: str | Path, pixels: np.ndarray, result, *, image_name: str) -> None:
    """Zeiler & Fergus 2014, Fig. 7, in titled panels with colour bars: the input (with the
    occluder's size drawn at the top-left), the probability of the class as a function of the
    occluder's position, the most probable class there, and a unit's mean activation."""
    from matplotlib import colormaps
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Rectangle

    height, width = pixels.shape[1:]
    panels = 4 if result.unit_map is not None else 3
    figure = new_figure(width=3.7 * panels, height=4.0)
    x0, x1 = _extent(result.cols, result.size, result.stride, width)
    y0, y1 = _extent(result.rows, result.size, result.stride, height)
    extent = (x0, x1, y1, y0)
    rgb = np.transpose(pixels, (1, 2, 0)) if pixels.shape[0] == 3 else pixels[0]

    axes = figure.add_subplot(1, panels, 1)
    axes.imshow(
        rgb, cmap="gray" if rgb.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest"
    )
    axes.add_patch(
        Rectangle(
            (-0.5, -0.5),
            result.size,
            result.size,
            facecolor=result.fill_rgb,
            edgecolor="yellow",
            linewidth=1.5,
        )
    )
    axes.set_title(
        f"{image_name}\noccluder {result.size} px, stride {result.stride}, fill {result.fill}",
        fontsize=10,
    )
    axes.axis("off")

    def heat_panel(column, values, title, label, cmap="viridis", vmin=None, vmax=None):
        ax = figure.add_subplot(1, panels, column)
        drawn = ax.imshow(
            values, cmap=cmap, vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest"
        )
        _frame(ax, width, height)
        ax.set_title(title, fontsize=10)
        bar = figure.colorbar(drawn, ax=ax, fraction=0.046, pad=0.03)
        bar.set_label(label, fontsize=9)
        bar.ax.tick_params(labelsize=8)
        return ax

    heat_panel(
        2,
        result.probability.numpy(),
        f"p({target_label(result.target)})\nunoccluded: {result.clean_probability:.3f}",
        "probability of the class, occluder centred here",
    )

    classes = result.top_classes()
    palette = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    colours = ListedColormap([palette(i % palette.N) for i in range(len(classes))])
    codes = {c: i for i, (c, _, _) in enumerate(classes)}
    coded = np.vectorize(codes.get)(result.top_class.numpy())
    ax = figure.add_subplot(1, panels, 3)
    drawn = ax.imshow(
        coded,
        cmap=colours,
        norm=BoundaryNorm(np.arange(len(classes) + 1) - 0.5, len(classes)),
        extent=extent,
        interpolation="nearest",
    )
    _frame(ax, width, height)
    ax.set_title("most probable class, occluder centred here", fontsize=10)
    bar = figure.colorbar(drawn, ax=ax, fraction=0.046, pad=0.03, ticks=range(len(classes)))
    bar.ax.set_yticklabels(
        [_short(name or f"class {c}") + f" {share:.0%}" for c, name, share in classes], fontsize=8
    )

    if result.unit_map is not None:
        heat_panel(
            4,
            result.unit_map.numpy(),
            f"{target_label(result.unit)}\nunoccluded: {result.unit_clean:.3g}",
            "mean activation, occluder centred here",
        )
    figure.tight_layout()
    save_figure(figure, path)


def _frame(axes, width: int, height: int) -> None:
    axes.set_xlim(-0.5, width - 0.5)
    axes.set_ylim(height - 0.5, -0.5)
    axes.set_xlabel("occluder centre x (px)", fontsize=8)
    axes.set_ylabel("occluder centre y (px)", fontsize=8)
    axes.tick_params(labelsize=7)


def _short(name: str, limit: int = 22) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def save_occlusion_maps(path: str | Path, result) -> None:
    """The occlusion maps as an .npz: probability, top_class, top_probability (positions ×
    positions), rows and cols (the occluders' top-left corners in model-input pixels), and
    unit (when a unit was measured)."""
    arrays = {
        "probability": result.probability.numpy().astype(np.float32),
        "top_class": result.top_class.numpy().astype(np.int64),
        "top_probability": result.top_probability.numpy().astype(np.float32),
        "rows": np.asarray(result.rows),
        "cols": np.asarray(result.cols),
    }
    if result.unit_map is not None:
        arrays["unit"] = result.unit_map.numpy().astype(np.float32)
    with atomic_path(path) as temp, open(temp, "wb") as handle:
        np.savez(handle, **arrays)
