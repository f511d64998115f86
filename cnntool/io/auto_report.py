"""What `cnntool attack auto` reports: its record columns and tables, the per-attack summary,
the gradient-masking warning, and the files of -o DIR (robustness.png, robustness.json)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cnntool.io.adversarial import class_label
from cnntool.io.attack_report import RECORD_COLUMNS
from cnntool.io.figures import eps_label, new_figure, save_figure, title_block
from cnntool.io.palette import UNKNOWN, WRONG
from cnntool.io.records import Column, percent
from cnntool.io.untrusted import plot_text
from cnntool.io.writers import write_json

AUTO_FIELDS = ["robust", "worst_attack", "fooled_by", "margin"]
_SHARED = [c for c in RECORD_COLUMNS if c != "target" and "full_res" not in c]  # untargeted
_AFTER = _SHARED.index("success") + 1
RECORD_COLUMNS_AUTO = _SHARED[:_AFTER] + AUTO_FIELDS + _SHARED[_AFTER:]
IMAGE_TABLE = [
    Column("path", lambda r: Path(r["path"]).name, fold=True),
    Column("label", "label", fold=True),
    Column(
        "clean",
        lambda r: f"{class_label(r['clean_name'], r['clean_pred'])} {percent(r['clean_conf'])}",
        fold=True,
    ),
    Column(
        "worst case",
        lambda r: f"{class_label(r['adv_name'], r['adv_pred'])} {percent(r['adv_conf'])}",
        fold=True,
    ),
    Column("robust", lambda r: "✓" if r["robust"] else "✗"),
    Column("by", lambda r: r["worst_attack"] or "—"),
    Column("margin", lambda r: f"{r['margin']:.3f}", right=True),
    Column("linf", lambda r: f"{r['linf']:.4f}", right=True),
    Column("l2", lambda r: f"{r['l2']:.3f}", right=True),
]
SUMMARY_TABLE = [
    Column("attack", "name"),
    Column("robust accuracy", lambda r: percent(r["robust_accuracy"]), right=True),
    Column("images it fooled", "fooled", right=True),
]
ATTACK_BLUE = "#0072b2"  # Okabe & Ito's blue: the attacks' bars (clean grey, worst case vermillion)
BAR_TOP = 112  # the chart's y axis ends here (%), leaving room for the labels over 100% bars
NORM_NAMES = {"linf": "L∞", "l2": "L2"}


def attack_rows(tally, titles: dict, clean_accuracy: float | None) -> list[dict]:
    """The summary's rows: clean, each attack (alone, or after those before it), worst case."""
    rows = [{"name": "clean (no attack)", "robust_accuracy": clean_accuracy, "fooled": None}]
    for row in tally.rows():
        name = row["attack"]
        title = titles.get(name, name)
        if name != "worst case" and not tally.independent and name != tally.attacks[0]:
            title = f"+ {title}"
        rows.append({"name": title, **row})
    return rows


def summary_lines(
    tally, *, norm: str, eps: float, settings: Sequence[str], label_sources: str
) -> list[str]:
    """The evaluation summed up: the setting, clean and robust accuracy, how the attacks ran."""
    how = (
        "each attack on every correctly classified image"
        if tally.independent
        else "each attack on the images the ones before it left standing"
    )
    return [
        f"AutoAttack-style evaluation, {NORM_NAMES[norm]} ε = {eps_label(eps)}, on "
        f"{tally.images} images ({label_sources}): clean accuracy "
        f"{percent(tally.accuracy(tally.clean_correct))}, robust accuracy "
        f"{percent(tally.accuracy(tally.robust))} (an image counts only if every attack fails)",
        f"attacks: {', '.join(settings)}; {how}",
    ]


def masking_warning(tally, titles: dict) -> str | None:
    """The warning when the gradient-free attack broke images every gradient attack failed on."""
    if not tally.masked:
        return None
    gradient = [titles[name] for name in tally.attacks if name != "square"]
    return (
        f"Square (gradient-free) broke {tally.masked} image{'s' * (tally.masked != 1)} on which "
        f"{' and '.join(gradient)} failed: a sign of gradient masking, so the model's gradients "
        "are not to be trusted to find its adversarial examples (Athalye et al. 2018)"
    )


def write_files(
    out: str | Path,
    rows: Sequence[dict],
    *,
    tally,
    model_name: str,
    data_name: str,
    norm: str,
    eps: float,
    settings: dict,
    scale: int = 1,
) -> tuple[Path, Path]:
    """OUT/robustness.json (the summary's numbers and settings) and OUT/robustness.png (the bar
    chart). Returns both paths."""
    out = Path(out)
    summary = {
        "model": model_name,
        "data": data_name,
        "norm": norm,
        "eps": eps,
        "images": tally.images,
        "clean_accuracy": rows[0]["robust_accuracy"],
        "robust_accuracy": rows[-1]["robust_accuracy"],
        "attacks": [
            {"attack": r["attack"], "robust_accuracy": r["robust_accuracy"], "fooled": r["fooled"]}
            for r in rows[1:-1]
        ],
        "independent": tally.independent,
        "square_only": tally.masked,
        "settings": settings,
    }
    write_json(out / "robustness.json", summary)
    title = (
        f"{model_name} on {data_name} ({tally.images:,} images), "
        f"{NORM_NAMES[norm]} ε = {eps_label(eps)}"
    )
    note = (
        "each attack alone; worst case: an image counts only if every attack fails"
        if tally.independent
        else "+: after the attacks before it; worst case: every attack fails"
    )
    if tally.masked:
        note += (
            f"\nSquare alone broke {tally.masked} image{'s' * (tally.masked != 1)} the gradient "
            "attacks could not: a sign of gradient masking"
        )
    save_robustness_bars(
        out / "robustness.png",
        [(r["name"], r["robust_accuracy"]) for r in rows],
        title=title,
        note=note,
        scale=scale,
    )
    return out / "robustness.json", out / "robustness.png"


def save_robustness_bars(
    path: str | Path,
    bars: Sequence[tuple[str, float | None]],
    *,
    title: str,
    note: str = "",
    scale: int = 1,
) -> list[float]:
    """Accuracy (%) as vertical bars, left to right: the first (clean) grey, the last (worst
    case) vermillion, the attacks between them blue; each labelled with its value. The y axis
    runs from 0 to BAR_TOP %. Returns the heights drawn (%)."""
    figure = new_figure(width=1.6 + 1.15 * len(bars), height=4.0, scale=scale)
    axes = figure.add_subplot(1, 1, 1)
    heights = [float("nan") if v is None else 100.0 * v for _, v in bars]
    colours = [UNKNOWN] + [ATTACK_BLUE] * (len(bars) - 2) + [WRONG]
    positions = range(len(bars))
    axes.bar(positions, [0 if h != h else h for h in heights], color=colours, width=0.65)
    for x, height in zip(positions, heights, strict=True):
        text = "—" if height != height else f"{height:.1f}%"
        axes.annotate(
            text,
            (x, 0 if height != height else height),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    axes.set_xticks(list(positions), [plot_text(name) for name, _ in bars], fontsize=8)
    axes.set_ylim(0, BAR_TOP)
    axes.set_yticks(range(0, 101, 20))
    axes.set_ylabel("accuracy (%)", fontsize=10)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    top = title_block(figure, title, scale=scale)  # one line, cut to the figure's width
    if note:
        axes.set_xlabel(plot_text(note), fontsize=8)
    figure.tight_layout(rect=(0, 0, 1, 1 - top))
    save_figure(figure, path)
    return heights
