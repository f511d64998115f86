"""The HTML of each page of a microscope site, from the records in `model.py`.

Functions here return strings and touch no files (`write.py` does). Each page is a complete
document that works from file:// on its own: its links are relative, the data its script needs
is inlined, and its CSS/JS are the two files under assets/.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence

from cnntool.io.figures import eps_label
from cnntool.io.site import layout
from cnntool.io.site.markup import (
    DASH,
    count,
    curve_svg,
    esc,
    histogram_svg,
    img,
    number,
    shape,
    share,
    url,
)
from cnntool.io.site.model import SEVERITIES, Finding, LayerPage, LayerSummary, Site, Unit


def shell(
    site: Site,
    page: str,
    title: str,
    body: str,
    *,
    kind: str,
    scripts: Sequence[str] = ("site.js",),
) -> str:
    """The frame every page shares: head, the top bar with the site's navigation, the footer."""
    prefix = "../" * layout.depth(page)
    nav = [("Overview", layout.INDEX)]
    nav += [(layer.name, layout.layer_page(layer.name)) for layer in site.layers if layer.page]
    if site.embedding is not None:
        nav.append(("Map", layout.EMBEDDING))
    if site.attack is not None:
        nav.append(("Attack", layout.ATTACK))
    current = ' aria-current="page"'
    links = "".join(
        f'<a href="{url(target, prefix)}"{current if _same_section(page, target) else ""}>'
        f"{esc(name)}</a>"
        for name, target in nav
    )
    tags = "".join(
        f'<script src="{url(layout.ASSETS + "/" + s, prefix)}"></script>' for s in scripts
    )
    data = layout.json_beside(page)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · {esc(site.model.name)} · cnntool microscope</title>
<link rel="stylesheet" href="{url(layout.ASSETS + "/site.css", prefix)}">
</head>
<body class="page-{esc(kind)}">
<a class="skip" href="#main">Skip to content</a>
<header class="topbar">
<a class="brand" href="{url(layout.INDEX, prefix)}"><span class="brand-mark"
aria-hidden="true"></span>microscope</a>
<span class="model-name">{esc(site.model.name)}</span>
<nav aria-label="Site">{links}</nav>
</header>
<main id="main">
{body}
</main>
<footer>Written by {esc(site.generator)} · the records behind this page: <a
href="{url(os.path.basename(data))}">{esc(os.path.basename(data))}</a></footer>
{tags}
</body>
</html>
"""


def _same_section(page: str, target: str) -> bool:
    """The nav entry of a page: a unit page belongs to its layer's entry."""
    return page == target or page.startswith(target[: -len(".html")] + "/")


def _badges(flags: Sequence[str]) -> str:
    shown = {"dead": DEAD_NOTE}
    return "".join(f'<span class="badge {esc(f)}">{esc(shown.get(f, f))}</span>' for f in flags)


def _unit_flags(unit: Unit) -> list[str]:
    stats = unit.stats
    return [
        name
        for name, on in (
            ("dead", stats.dead),
            ("constant", stats.constant),
            ("saturated", stats.saturated),
        )
        if on
    ]


DEAD_NOTE = "dead: never fires on DATA"
NOT_CONVERGED = "did not converge"


def _failed_fv(unit: Unit, prefix: str, large: bool = False) -> str:
    """In place of a feature visualization that failed its check: "did not converge" and why,
    over the picture dimmed and struck through (it is there to see, not shown as a result)."""
    picture = img(
        unit.visualization,
        prefix,
        f"unit {unit.index}'s picture, which did not converge ({unit.visualization_failure})",
        lazy=not large,
    )
    return (
        f'<span class="fv fv-failed{" large" if large else ""}">{picture}'
        f'<span class="fv-mark"><b>{esc(NOT_CONVERGED)}</b> '
        f"{esc(unit.visualization_failure)}</span></span>"
    )


# ---------------------------------------------------------------------------------------------
# index.html


def index_page(site: Site) -> str:
    model, data = site.model, site.data
    severity_counts = Counter(f.severity for f in site.findings)
    findings_summary = (
        " ".join(
            f'<span class="badge {s}">{severity_counts[s]} '
            f"{s}{'s' if severity_counts[s] != 1 else ''}</span>"
            for s in SEVERITIES
            if severity_counts[s]
        )
        or "none"
    )
    accuracy = (
        f"{share(data.accuracy)} <small>on {data.labelled:,} labelled</small>"
        if data.accuracy is not None
        else f"{DASH} <small>no labels</small>"
    )
    facts = [
        ("parameters", count(model.params)),
        ("MACs per image", count(model.macs)),
        ("classes", DASH if model.classes is None else f"{model.classes:,}"),
        (
            "images scanned",
            f"{data.images:,}"
            + (f" <small>{data.skipped:,} skipped</small>" if data.skipped else ""),
        ),
        ("top-1 accuracy", accuracy),
        ("findings", findings_summary),
    ]
    fact_html = "".join(f"<div><dt>{esc(k)}</dt><dd>{v}</dd></div>" for k, v in facts)
    names = ""
    if model.class_names:
        listed = ", ".join(esc(n) for n in model.class_names)
        names = (
            f"<div><dt>class names</dt><dd><details><summary>{len(model.class_names):,} "
            "names</summary>"
            f'<p class="class-names">{listed}</p></details></dd></div>'
        )
    explore = _explore_cards(site)
    body = f"""<section class="hero">
<div class="hero-text">
<p class="eyebrow">What has this network learned?</p>
<h1>{esc(model.name)}</h1>
<p class="lede">Scanned on <b>{esc(data.name)}</b>: the dataset patches that drive each unit, what
each
unit would draw, how its activations are spread, and what looks wrong.</p>
</div>
<dl class="facts">{fact_html}</dl>
</section>
<section class="panel">
<h2>Model</h2>
<dl class="pairs">
<div><dt>source</dt><dd><code>{esc(model.source)}</code></dd></div>
<div><dt>preprocessing</dt><dd>{esc(model.preprocessing)} <span class="from">from
{esc(model.preprocessing_source)}</span></dd></div>
{names}
</dl>
</section>
{explore}
<section class="panel">
<h2 id="layers">Layers</h2>
{_layer_table(site)}
</section>
<section class="panel">
<h2 id="findings">Findings</h2>
{_findings(site.findings, site, "")}
</section>"""
    return shell(site, layout.INDEX, "Overview", body, kind="index")


def _explore_cards(site: Site) -> str:
    cards = []
    if site.embedding is not None:
        emb = site.embedding
        cards.append(
            f'<a class="explore" href="{url(layout.EMBEDDING)}"><b>Map of {esc(emb.layer)}</b>'
            f"<span>{len(emb.points):,} images, {esc(emb.method)}: zoom, hover, click</span></a>"
        )
    if site.attack is not None:
        attack = site.attack
        worst = min(attack.accuracy) if attack.accuracy else None
        cards.append(
            f'<a class="explore" href="{url(layout.ATTACK)}"><b>{esc(attack.method)} attack</b>'
            f"<span>accuracy down to {share(worst)} at ε = "
            f"{esc(eps_label(max(attack.eps)))}</span></a>"
        )
    if not cards:
        return ""
    return f'<section class="explore-row" aria-label="Explore">{"".join(cards)}</section>'


def _layer_table(site: Site) -> str:
    flagged = Counter(f.layer for f in site.findings if f.severity in ("error", "warning"))
    rows = []
    for layer in site.layers:
        name = esc(layer.name)
        if layer.page:
            name = f'<a href="{url(layout.layer_page(layer.name))}">{name}</a>'
        field = DASH if layer.receptive_field is None else f"{layer.receptive_field} px"
        if layer.jump is not None and layer.receptive_field is not None:
            field += f" <small>/{layer.jump}</small>"
        warn = (
            f' <span class="badge warning" title="findings">{flagged[layer.name]}</span>'
            if flagged[layer.name]
            else ""
        )
        preview = "".join(
            img(p, "", f"{layer.name}: preview", cls="thumb", width=32, height=32)
            for p in layer.preview[:6]
        )
        preview = f'<span class="strip">{preview}</span>' if preview else ""
        # data-label: each cell's column name, shown beside it where a phone stacks the row
        rows.append(
            f'<tr><th scope="row">{name}{warn}</th><td data-label="type">{esc(layer.type)}</td>'
            f'<td class="num" data-label="output">{shape(layer.output_shape)}</td>'
            f'<td class="num" data-label="params">{count(layer.params)}</td>'
            f'<td class="num" data-label="MACs">{count(layer.macs)}</td><td class="num" '
            f'data-label="field">{field}</td>'
            f'<td class="num" data-label="units">{layer.units:,}</td>'
            f'<td class="num{_level(layer.dead, 0.1, 0.5)}" '
            f'data-label="dead">{share(layer.dead)}</td>'
            f'<td class="num{_level(layer.constant, 0.1, 2)}" '
            f'data-label="constant">{share(layer.constant)}</td>'
            f'<td class="num{_level(layer.mean_abs_r, 0.5, 2)}" data-label="mean '
            f'|r|">{number(layer.mean_abs_r)}</td>'
            f'<td class="preview">{preview}</td></tr>'
        )
    return (
        '<div class="table-wrap"><table class="layers layer-list"><thead><tr><th '
        'scope="col">layer</th>'
        '<th scope="col">type</th><th scope="col" class="num">output</th><th scope="col" '
        'class="num">params</th>'
        '<th scope="col" class="num">MACs</th><th scope="col" class="num" title="receptive field '
        'size / jump">'
        'field</th><th scope="col" class="num">units</th><th scope="col" class="num">dead</th>'
        '<th scope="col" class="num">constant</th><th scope="col" class="num">mean <span '
        'class="sym">|r|</span></th>'
        f'<th scope="col">top patches</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
    )


def _level(value: float | None, warning: float, error: float) -> str:
    """A table cell's colour class, at the thresholds diagnose uses for its findings."""
    if value is None:
        return ""
    return " error" if value >= error else " warning" if value >= warning else ""


def _findings(findings: Sequence[Finding], site: Site, prefix: str) -> str:
    if not findings:
        return '<p class="empty">No findings: nothing crossed a threshold.</p>'
    pages = {layer.name for layer in site.layers if layer.page}
    parts = []
    for severity in SEVERITIES:
        group = [f for f in findings if f.severity == severity]
        if not group:
            continue
        items = []
        for finding in group:
            where = ""
            if finding.layer is not None:
                where = esc(finding.layer)
                if finding.layer in pages:
                    where = f'<a href="{url(layout.layer_page(finding.layer), prefix)}">{where}</a>'
                where = f'<span class="where">{where}</span> '
            advice = f'<p class="advice">{esc(finding.advice)}</p>' if finding.advice else ""
            command = (
                f'<pre class="command"><code>{esc(finding.command)}</code></pre>'
                if finding.command
                else ""
            )
            items.append(
                f'<li class="finding {severity}"><p class="what">{where}{esc(finding.message)}</p>'
                f"{advice}{command}</li>"
            )
        parts.append(
            f'<h3 class="severity"><span class="badge {severity}">{severity}</span> '
            f'{len(group)}</h3><ul class="findings">{"".join(items)}</ul>'
        )
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# one page per layer


def layer_summary(site: Site, name: str) -> LayerSummary | None:
    return next((layer for layer in site.layers if layer.name == name), None)


def layer_page(site: Site, page: LayerPage) -> str:
    target = layout.layer_page(page.name)
    prefix = "../" * layout.depth(target)
    summary = layer_summary(site, page.name)
    facts = [
        f"{len(page.units):,} units shown" + (f" of {summary.units:,}" if summary else ""),
        f"top {page.top} patches each",
    ]
    if page.visualizations:
        facts.append(f"feature visualizations: {page.visualizations}")
    if summary is not None:
        facts.insert(0, f"output {shape(summary.output_shape)}")
        facts.insert(
            1,
            f"receptive field {summary.receptive_field} px, jump {summary.jump}"
            if summary.receptive_field is not None
            else "sees the whole input",
        )
        if summary.dead is not None:
            facts.append(f"{share(summary.dead)} dead")
        if summary.mean_abs_r is not None:
            facts.append(f"mean |r| {number(summary.mean_abs_r)}")
    kind = f' <span class="type">{esc(summary.type)}</span>' if summary else ""
    filters = ""
    if summary is not None and summary.filters_image:
        sheet = img(summary.filters_image, prefix, f"the filters of {page.name}", lazy=False)
        filters = (
            f'<figure class="filters panel">{sheet}'
            f"<figcaption>The learned filters of {esc(page.name)}, each scaled by its own "
            "largest |weight| (0 is white; mid-grey on RGB tiles).</figcaption></figure>"
        )
    findings = [f for f in site.findings if f.layer == page.name]
    finding_html = (
        f'<section class="layer-findings">{_findings(findings, site, prefix)}</section>'
        if findings
        else ""
    )
    cards = "".join(unit_card(page, unit, prefix) for unit in page.units)
    body = f"""<nav class="crumbs" aria-label="Breadcrumb"><a
    href="{url(layout.INDEX, prefix)}">overview</a> › {esc(page.name)}</nav>
<h1>{esc(page.name)}{kind}</h1>
<p class="meta">{" · ".join(esc(f) for f in facts)}</p>
{finding_html}
{filters}
<div class="controls" role="group" aria-label="Sort and filter units">
<label>Sort by <select id="sort">
<option value="unit">unit index</option>
<option value="max">top activation</option>
<option value="mean">mean activation</option>
<option value="sparsity">lifetime sparsity</option>
</select></label>
<label><input type="checkbox" id="hide-dead"> hide dead units</label>
<span id="shown" class="shown" aria-live="polite">{len(page.units):,} units</span>
</div>
<div class="units" data-sortable style="--cols:{_columns(page.top)}">
{cards}
</div>"""
    return shell(site, target, page.name, body, kind="layer")


def _columns(top: int) -> int:
    """Patches per row in a unit card: a square-ish block (9 -> 3, 6 -> 3, 4 -> 2, 16 -> 4)."""
    columns = 1
    while columns * columns < top:
        columns += 1
    return columns


def unit_card(page: LayerPage, unit: Unit, prefix: str) -> str:
    stats = unit.stats
    flags = _unit_flags(unit)
    patches = "".join(
        img(p.image, prefix, f"unit {unit.index}, hit {rank + 1}: {number(p.value)}", cls="patch")
        for rank, p in enumerate(unit.patches)
    )
    fv = ""
    if unit.visualization and unit.visualization_failure:
        fv = _failed_fv(unit, prefix)
    elif unit.visualization:
        fv = img(
            unit.visualization, prefix, f"feature visualization of unit {unit.index}", cls="fv"
        )
    body = (
        f'<span class="patches">{patches}</span>'
        if unit.patches
        else '<span class="no-patches">no positive activation on DATA</span>'
    )
    if stats.dead:  # nothing to draw: the badge says why (no grey square, no empty frames)
        fv = ""
        body = body if unit.patches else ""
    if fv and unit.visualization_failure:
        flags = flags + [NOT_CONVERGED]
    card_body = f'<span class="card-body">{fv}{body}</span>' if fv or body else ""
    sparsity = "" if stats.lifetime_sparsity is None else f"{stats.lifetime_sparsity:.6g}"
    numbers = [("max", number(stats.max)), ("mean", number(stats.mean))]
    if stats.lifetime_sparsity is not None:
        numbers.append(("sparsity", f"{stats.lifetime_sparsity:.2f}"))
    if stats.active is not None:
        numbers.append(("on", share(stats.active)))
    stat_html = "".join(f"<span>{esc(k)} <b>{v}</b></span>" for k, v in numbers)
    dead = " is-dead" if stats.dead else ""
    return (
        f'<a class="unit-card{dead}" href="{url(layout.unit_page(page.name, unit.index), prefix)}" '
        f'data-unit="{unit.index}" data-max="{stats.max:.6g}" data-mean="{stats.mean:.6g}" '
        f'data-sparsity="{sparsity}" data-dead="{int(stats.dead)}" '
        f'aria-label="unit {unit.index}: top activation '
        f'{esc(number(stats.max))}{", " + ", ".join(flags) if flags else ""}">'
        '<span class="card-head"><span class="unit-name">unit '
        f"{unit.index}</span>{_badges(_unit_flags(unit))}</span>"
        f"{card_body}"
        f'<span class="card-stats">{stat_html}</span></a>\n'
    )


# ---------------------------------------------------------------------------------------------
# one page per unit


def unit_page(site: Site, page: LayerPage, position: int) -> str:
    unit = page.units[position]
    target = layout.unit_page(page.name, unit.index)
    prefix = "../" * layout.depth(target)
    stats = unit.stats
    neighbours = []
    if position > 0:
        prev = page.units[position - 1].index
        neighbours.append(
            f'<a rel="prev" href="{url(layout.unit_page(page.name, prev), prefix)}">← unit '
            f"{prev}</a>"
        )
    if position + 1 < len(page.units):
        nxt = page.units[position + 1].index
        neighbours.append(
            f'<a rel="next" href="{url(layout.unit_page(page.name, nxt), prefix)}">unit {nxt} →</a>'
        )
    pager = f'<nav class="pager" aria-label="Units">{"".join(neighbours)}</nav>'
    if stats.dead:
        fv = (
            '<p class="note dead-note">The unit is never above 0 on DATA: it has no top patches, '
            "and no picture of what it would draw is shown.</p>"
        )
    elif unit.visualization and unit.visualization_failure:
        fv = (
            f'<figure class="fv-large">{_failed_fv(unit, prefix, large=True)}'
            f"<figcaption>The search for the input that maximizes the unit {esc(NOT_CONVERGED)} "
            f"({esc(_failure_text(unit.visualization_failure))}): this is not what the unit would "
            "draw."
            "</figcaption></figure>"
        )
    elif unit.visualization:
        picture = img(
            unit.visualization, prefix, f"feature visualization of unit {unit.index}", lazy=False
        )
        fv = (
            f'<figure class="fv-large">{picture}'
            "<figcaption>What the unit would draw: the input that maximizes it (contrast stretched "
            "to its 1st–99th percentile"
            + (f"; {esc(page.visualizations)}" if page.visualizations else "")
            + ").</figcaption></figure>"
        )
    else:
        fv = ""
    rows = [
        ("mean", number(stats.mean)),
        ("max", number(stats.max)),
        (
            "lifetime sparsity",
            DASH if stats.lifetime_sparsity is None else f"{stats.lifetime_sparsity:.3f}",
        ),
        ("active on", share(stats.active)),
        ("flags", _badges(_unit_flags(unit)) or "none"),
    ]
    table = "".join(f'<tr><th scope="row">{esc(k)}</th><td>{v}</td></tr>' for k, v in rows)
    histogram = ""
    if unit.histogram is not None:
        title = f"histogram of unit {unit.index}'s {page.histogram_of} (counts on a log scale)"
        histogram = (
            f'<figure class="hist">{histogram_svg(unit.histogram, title)}'
            f"<figcaption>{esc(page.histogram_of)}, counts on a log scale</figcaption></figure>"
        )
    shown = {u.index for u in page.units}
    correlated = ""
    if unit.correlated:
        chips = []
        for other in unit.correlated:
            label = f"unit {other.unit}"
            if other.unit in shown:
                label = (
                    f'<a href="{url(layout.unit_page(page.name, other.unit), prefix)}">{label}</a>'
                )
            chips.append(f'<li>{label} <span class="r">r {other.r:+.2f}</span></li>')
        correlated = (
            '<div class="side"><h2>Most correlated units</h2>'
            f'<ul class="chips">{"".join(chips)}</ul></div>'
        )
    votes = ""
    if unit.votes:
        largest = max(abs(v.score) for v in unit.votes) or 1.0
        bars = "".join(
            f'<li class="{"neg" if v.score < 0 else "pos"}"><span '
            f'class="vote-name">{esc(v.name)}</span>'
            '<span class="vote-bar"><span '
            f'style="width:{abs(v.score) / largest * 100:.1f}%"></span></span>'
            f'<span class="vote-score">{number(v.score)}</span></li>'
            for v in unit.votes
        )
        votes = (
            '<div class="side"><h2>Votes for classes</h2><p class="note">weight × mean '
            "activation</p>"
            f'<ol class="votes">{bars}</ol></div>'
        )
    hits = "".join(_hit(unit, rank, prefix) for rank in range(len(unit.patches)))
    has_projection = any(p.projection for p in unit.patches)
    legend = (
        "patch · guided backprop · where it is in its image"
        if has_projection
        else "patch · where it is in its image"
    )
    patches_panel = _patches_panel(unit, hits, legend)
    body = f"""<nav class="crumbs" aria-label="Breadcrumb"><a
    href="{url(layout.INDEX, prefix)}">overview</a> › <a
    href="{url(layout.layer_page(page.name), prefix)}">{esc(page.name)}</a> › unit
    {unit.index}</nav>
<div class="unit-head"><h1>{esc(page.name)} <span class="unit-number">unit
{unit.index}</span></h1>{pager}</div>
<section class="unit-overview">
{fv}
<div class="side"><h2>Statistics</h2><table class="stats">{table}</table>{histogram}</div>
{correlated}
{votes}
</section>
{patches_panel}
<p class="keys">Keys: <kbd>←</kbd>/<kbd>k</kbd> previous unit, <kbd>→</kbd>/<kbd>j</kbd> next
unit.</p>"""
    return shell(site, target, f"{page.name} unit {unit.index}", body, kind="unit")


def _patches_panel(unit: Unit, hits: str, legend: str) -> str:
    """The top patches; none for a dead unit (its badge says why), a note for a unit that is
    never positive on DATA but not judged dead."""
    if unit.patches:
        return (
            f'<section class="panel">\n<h2>Top {len(unit.patches)} patches '
            f"<small>{esc(legend)}</small></h2>\n"
            f'<div class="hits">{hits}</div>\n</section>'
        )
    if unit.stats.dead:
        return ""
    return '<p class="note">No image of DATA makes this unit positive: no top patches.</p>'


def _failure_text(failure: str) -> str:
    """A failure reason (tasks.maximize.judge.Check.reason) in a sentence."""
    return {
        "flat": "the picture is flat: no contrast to show",
        "below the data's best": "the unit is weaker on the picture than on its best image of DATA",
    }.get(failure, failure)


def _hit(unit: Unit, rank: int, prefix: str) -> str:
    patch = unit.patches[rank]
    name = "/".join(
        patch.source_path.replace("\\", "/").split("/")[-2:]
    )  # folder/file: the class, often
    top = img(
        patch.image,
        prefix,
        f"hit {rank + 1}: the patch, activation {number(patch.value)}",
        cls="patch",
    )
    if patch.projection:
        top += img(patch.projection, prefix, f"hit {rank + 1}: guided backprop", cls="patch")
    source = ""
    if patch.source_image and patch.source_size and not _covers(patch.box, patch.source_size):
        width, height = patch.source_size
        x0, y0, x1, y1 = patch.box
        left, right = max(x0, 0) / width * 100, min(x1, width) / width * 100
        top_, bottom = max(y0, 0) / height * 100, min(y1, height) / height * 100
        box = (
            f'<span class="box" style="left:{left:.2f}%;top:{top_:.2f}%;'
            f'width:{max(right - left, 0):.2f}%;height:{max(bottom - top_, 0):.2f}%"></span>'
        )
        source = (
            f'<span class="source" style="aspect-ratio:{width}/{height}">'
            + img(patch.source_image, prefix, f"hit {rank + 1}: the receptive field in {name}")
            + f"{box}</span>"
        )
    cols = " two" if patch.projection else ""
    return (
        f'<figure class="hit"><span class="hit-top{cols}">{top}</span>{source}'
        f'<figcaption><b>{number(patch.value)}</b> <span class="rank">#{rank + 1}</span> '
        '<span class="path" '
        f'title="{esc(patch.source_path)}">{esc(name)}</span></figcaption></figure>'
    )


def _covers(box: tuple[int, int, int, int], size: tuple[int, int]) -> bool:
    """Whether a box holds the whole image (a unit that sees all of it): then the patch IS the
    source, and drawing the box again would show the same picture twice."""
    x0, y0, x1, y1 = box
    return x0 <= 0 and y0 <= 0 and x1 >= size[0] and y1 >= size[1]


# ---------------------------------------------------------------------------------------------
# attack.html


def _amplified(eps: float) -> str:
    """A triptych caption's note on its middle panel: how much the perturbation is amplified."""
    return f" (perturbation ×{1 / (2 * eps):.3g})" if eps > 0 else ""


def attack_page(site: Site) -> str:
    attack = site.attack
    eps, accuracy = list(attack.eps), list(attack.accuracy)
    if attack.clean_accuracy is not None and 0 not in eps:  # the clean point, ε = 0
        eps, accuracy = [0.0, *eps], [attack.clean_accuracy, *accuracy]
    labels = [eps_label(e) for e in eps]
    title = f"accuracy against {attack.method} as ε grows"
    rows = "".join(
        f'<tr><td class="num">{esc(label)}</td><td class="num">{share(a)}</td></tr>'
        for label, a in zip(labels, accuracy, strict=True)
    )
    triptychs = "".join(
        '<figure class="triptych">'
        + img(t.image, "", f"{t.label} becomes {t.adversarial} at ε = {eps_label(t.eps)}")
        + f"<figcaption>{esc(t.label)} → <b>{esc(t.adversarial)}</b> at ε = {esc(eps_label(t.eps))}"
        f"{_amplified(t.eps)}</figcaption></figure>"
        for t in attack.triptychs
    )
    body = f"""<h1>{esc(attack.method)} <span class="type">adversarial examples</span></h1>
<p class="meta">ε in pixel units of [0, 1] (8/255 = 8 steps of an 8-bit image), applied before the
model's normalization; ε = 0 is the clean accuracy. In the triptychs the perturbation is amplified
so that −ε is black, no change grey and +ε white.</p>
<section class="attack-top">
<figure class="panel">{curve_svg(eps, accuracy, labels, title)}
<figcaption>{esc(title)}</figcaption></figure>
<table class="layers attack"><thead><tr><th scope="col" class="num sym">ε</th><th scope="col"
class="num">accuracy</th></tr></thead><tbody>{rows}</tbody></table>
</section>
<section class="panel"><h2>Original · perturbation · adversarial</h2><div
class="triptychs">{triptychs}</div></section>"""
    return shell(site, layout.ATTACK, "Attack", body, kind="attack")
