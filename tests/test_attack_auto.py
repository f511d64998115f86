"""`attack auto`: APGD-CE and APGD-T against torchattacks image for image, the DLR losses and the
step-size checkpoints by hand, Square inside the ball, gradient masking found on a rounding
model, the worst case over the attacks, the summary and the bar chart, and the command line."""

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnntool.core.data import BatchStream, open_data
from cnntool.core.loading.models import load_model
from cnntool.errors import CnnToolError
from cnntool.io.auto_report import ATTACK_BLUE, BAR_TOP, save_robustness_bars
from cnntool.io.palette import UNKNOWN, WRONG, rgb
from cnntool.tasks.attack import PixelModel
from cnntool.tasks.attack.apgd import (
    _check_step_size,
    _State,
    apgd,
    apgd_targeted,
    dlr_loss,
    margins,
    step_checkpoints,
    targeted_dlr_loss,
)
from cnntool.tasks.attack.auto import AutoSettings, AutoTally, auto_attack
from cnntool.tasks.attack.square import square, square_fraction
from tests.auto_models import GREYS, ramp_net, rounding_net, write_greys
from tests.pixels import axes_frame, colour_mask, find_plot_text, png, runs

torchattacks = pytest.importorskip("torchattacks")

ROOT = Path(__file__).resolve().parent.parent


def digits(model, count, start=0):
    dataset = open_data("mnist-5k")
    stream = BatchStream(
        dataset,
        model.preprocessing,
        batch_size=count,
        normalize=False,
        indices=range(start, start + count),
    )
    batch = next(iter(stream))
    return batch.inputs, torch.tensor([dataset.labels[i] for i in batch.indices])


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


# --- the losses and the schedule, by hand -----------------------------------------------------


def test_dlr_losses_equal_the_formulas_on_hand_set_logits():
    logits = torch.tensor([[1.0, 4.0, 2.0, 3.0], [5.0, 1.0, 0.0, 2.0], [2.0, 6.0, 1.0, 3.0]])
    labels = torch.tensor([1, 0, 0])
    # sorted: 4 3 2 1 -> −(4 − 3)/(4 − 2); 5 2 1 0 -> −(5 − 2)/(5 − 1); misclassified: the best
    # other class is the top one, 6: −(2 − 6)/(6 − 2)
    assert dlr_loss(logits, labels).tolist() == pytest.approx([-0.5, -0.75, 1.0])
    # targeted: −(z_y − z_t)/(z_π1 − (z_π3 + z_π4)/2)
    targets = torch.tensor([3, 3, 1])
    expected = [-(4 - 3) / (4 - (2 + 1) / 2), -(5 - 2) / (5 - (1 + 0) / 2), -(2 - 6) / (6 - 1.5)]
    assert targeted_dlr_loss(logits, labels, targets).tolist() == pytest.approx(expected)
    # invariant to shifting and (positively) scaling the logits, as the paper designs it
    assert dlr_loss(3 * logits + 7, labels).tolist() == pytest.approx([-0.5, -0.75, 1.0])
    assert margins(logits, labels).tolist() == [1.0, 3.0, -4.0]
    # torchattacks' copies of the authors' losses agree
    reference = torchattacks.APGD(torch.nn.Identity())
    assert torch.allclose(dlr_loss(logits, labels), reference.dlr_loss(logits, labels))
    targeted = torchattacks.APGDT(torch.nn.Identity())
    assert torch.allclose(
        targeted_dlr_loss(logits, labels, targets),
        targeted.dlr_loss_targeted(logits, labels, targets),
    )


def test_step_size_checkpoints_are_the_papers():
    # Croce & Hein 2020 §3.2: p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06),
    # checkpoints w_j = ⌈p_j · N_iter⌉ (exact fractions: no rounding on the way)
    p = [Fraction(0), Fraction(22, 100)]
    while p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100)) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100)))
    papers = [math.ceil(share * 100) for share in p[1:]]
    assert papers == [22, 41, 57, 70, 80, 87, 93, 99]
    assert step_checkpoints(100) == papers
    # other lengths in the reference code's whole numbers: first after int(0.22 N), each
    # interval int(0.03 N) shorter, at least int(0.06 N), none under 1
    assert step_checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert step_checkpoints(50) == [11, 21, 30, 38, 45]
    assert step_checkpoints(1) == [1]


def test_the_step_halves_when_the_loss_stalls_and_the_iterate_goes_back_to_the_best():
    # four images at a checkpoint 22 steps after the last; ρ = 0.75: at most 16.5 rises halve
    state = _State(
        rises=torch.tensor([16.0, 17.0, 17.0, 17.0]),
        reduced=torch.tensor([False, False, False, True]),
        checked_loss=torch.tensor([1.0, 1.0, 2.0, 2.0]),
        best_loss=torch.tensor([3.0, 3.0, 2.0, 2.0]),  # images 2 and 3 made no progress
        step=torch.full((4,), 0.6),
        x=torch.zeros(4, 1, 2, 2),
        best_x=torch.ones(4, 1, 2, 2),
        grad=torch.zeros(4, 1, 2, 2),
        best_grad=torch.ones(4, 1, 2, 2),
    )
    _check_step_size(state, 0.75 * 22)
    # 0: too few rises; 1: kept; 2: no progress with an unchanged step; 3: no progress, but
    # its step was just halved
    assert state.step.tolist() == pytest.approx([0.3, 0.6, 0.3, 0.6])
    assert state.reduced.tolist() == [True, False, True, False]
    assert state.x.flatten(1).amax(dim=1).tolist() == [1, 0, 1, 0]
    assert state.grad.flatten(1).amax(dim=1).tolist() == [1, 0, 1, 0]
    assert state.rises.tolist() == [0, 0, 0, 0] and state.checked_loss.tolist() == [3, 3, 2, 2]


@pytest.mark.parametrize("attack", [apgd, apgd_targeted])
def test_apgd_finds_the_worst_point_of_a_linear_model(attack):
    model, grey = ramp_net(), torch.full((2, 1, 4, 4), 0.5)
    labels = torch.zeros(2, dtype=torch.long)
    extra = {"target_classes": 3} if attack is apgd_targeted else {}
    # L∞: the worst point is every pixel +ε, margin 1 − 10ε: fooled past ε = 0.1, else at it
    found = attack(model, grey, labels, 0.08, steps=10, generator=seeded(), **extra)
    assert margins(model(found), labels).tolist() == pytest.approx([0.2, 0.2], abs=1e-5)
    found = attack(model, grey, labels, 0.12, steps=10, generator=seeded(), **extra)
    assert (model(found).argmax(dim=1) != 0).all()
    # L2: every pixel +ε/4, margin 1 − 2.5ε
    found = attack(model, grey, labels, 0.3, norm="l2", steps=20, generator=seeded(), **extra)
    assert margins(model(found), labels).tolist() == pytest.approx([0.25, 0.25], abs=2e-3)
    assert (found - grey).flatten(1).norm(dim=1).max() <= 0.3 + 1e-6


# --- against torchattacks (the authors' code) ---------------------------------------------------


@pytest.fixture(scope="module")
def lenet():
    return load_model("lenet5-mnist", device="cpu")


@pytest.mark.parametrize(
    "norm, eps, count", [("linf", 0.15, 16), pytest.param("l2", 2.0, 32, marks=pytest.mark.slow)]
)
def test_apgd_ce_and_apgd_t_fool_the_images_torchattacks_fools(lenet, norm, eps, count):
    images, labels = digits(lenet, count)
    pixels, name = PixelModel(lenet), {"linf": "Linf", "l2": "L2"}[norm]
    fooled = lambda adv: (pixels(adv).argmax(dim=1) != labels).tolist()  # noqa: E731
    theirs = torchattacks.APGD(pixels, norm=name, eps=eps, steps=10, seed=0)(images, labels)
    ours = apgd(lenet, images, labels, eps, norm=norm, steps=10, generator=seeded(0))
    # neither all nor none (measured 9 of 16, 17 of 32): the comparison means something
    assert count // 4 <= sum(fooled(ours)) <= count * 3 // 4
    print(f"{norm}: APGD-CE fooled {sum(fooled(ours))} of {count} digits, as torchattacks")
    assert fooled(ours) == fooled(theirs)
    # APGD-T towards the 3 classes ranked next (torchattacks: n_classes − 1 targets)
    theirs = torchattacks.APGDT(pixels, norm=name, eps=eps, steps=10, seed=0, n_classes=4)(
        images, labels
    )
    ours = apgd_targeted(
        lenet, images, labels, eps, norm=norm, steps=10, target_classes=3, generator=seeded(0)
    )
    assert fooled(ours) == fooled(theirs)
    bound = (lambda d: d.abs().amax(dim=1)) if norm == "linf" else (lambda d: d.norm(dim=1))
    assert bound((ours - images).flatten(1)).max() <= eps * (1 + 1e-6)


@pytest.mark.slow
def test_apgd_robust_accuracy_within_a_point_of_torchattacks_on_500_adversarially_trained():
    model = load_model("lenet5-mnist-adv", device="cpu")
    images, labels = digits(model, 500)
    pixels = PixelModel(model)
    theirs = torchattacks.APGD(pixels, eps=0.3, steps=10, n_restarts=1, seed=0)(images, labels)
    ours = apgd(model, images, labels, 0.3, steps=10, restarts=1, generator=seeded(0))
    robust_theirs = (pixels(theirs).argmax(dim=1) == labels).float().mean().item()
    robust_ours = (pixels(ours).argmax(dim=1) == labels).float().mean().item()
    print(f"APGD-CE ε = 0.3, 10 steps: robust {robust_ours:.1%} (torchattacks {robust_theirs:.1%})")
    assert abs(robust_ours - robust_theirs) <= 0.01
    assert 0.9 <= robust_ours < 1.0  # measured 98.6%, the same 7 digits fooled as torchattacks


# --- Square -------------------------------------------------------------------------------------


def test_square_schedule_halves_p_at_the_authors_query_counts():
    # p_init until query 10 of 10,000, then /2, /4, … /512 after 8,000; rescaled to `queries`
    at = {0: 1, 10: 1, 11: 2, 50: 2, 51: 4, 201: 8, 501: 16, 1001: 32, 2001: 64, 4001: 128}
    for query, divisor in {**at, 6001: 256, 8001: 512, 9999: 512}.items():
        assert square_fraction(0.8, query, 10000) == pytest.approx(0.8 / divisor)
    assert square_fraction(0.8, 5, 100) == pytest.approx(0.8 / 8)  # 5 of 100 is 500 of 10,000


class Recorder(torch.nn.Module):
    """A small random conv net that keeps every batch it is asked about."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(5)
        )
        self.net(torch.zeros(1, 3, 12, 12))
        self.queries = []

    def forward(self, x):
        self.queries.append(x.detach().clone())
        return self.net(x)


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.5)])
def test_square_never_leaves_the_ball_or_0_1(norm, eps):
    generator = seeded(3)
    images = torch.rand(6, 3, 12, 12, generator=generator)
    images[:2] = torch.round(images[:2])  # pixels at 0 and 1: the clamp is needed
    model = Recorder()
    labels = model(images).argmax(dim=1)
    model.queries.clear()
    found = square(model, images, labels, eps, norm=norm, queries=60, generator=generator)
    asked = len(model.queries)
    assert 2 <= asked <= 60
    for batch in [*model.queries, found]:
        # every query: a subset of the images still standing, so check against each original
        delta = (batch[:, None] - images[None]).flatten(2)
        size = delta.abs().amax(dim=2) if norm == "linf" else delta.norm(dim=2)
        assert (size.min(dim=1).values <= eps + 1e-6).all()
        assert batch.min() >= 0 and batch.max() <= 1
    size = (found - images).flatten(1)
    size = size.abs().amax(dim=1) if norm == "linf" else size.norm(dim=1)
    assert (size <= eps + 1e-6).all()
    # the margin never goes up: what it returns is no worse than its start
    assert (margins(model(found), labels) <= margins(model(images), labels) + 10).all()


# --- gradient masking ---------------------------------------------------------------------------


def greys():
    return torch.stack([torch.full((1, 8, 8), level / 255) for level in GREYS])


@pytest.mark.parametrize("norm, eps, queries", [("linf", 0.15, 100), ("l2", 1.0, 1000)])
def test_square_breaks_a_rounding_model_that_apgd_cannot(norm, eps, queries):
    model, images = rounding_net(), greys()
    labels = torch.zeros(len(images), dtype=torch.long)  # "plain"
    assert (model(images).argmax(dim=1) == 0).all()
    for attack in (apgd, apgd_targeted):
        found = attack(model, images, labels, eps, norm=norm, steps=10, generator=seeded())
        assert (model(found).argmax(dim=1) == 0).all()  # a zero gradient goes nowhere
    # L2 needs more queries: its squares move mass around as ± bumps, most of them no change
    # to a piecewise-constant margin
    found = square(model, images, labels, eps, norm=norm, queries=queries, generator=seeded())
    assert (model(found).argmax(dim=1) == 1).all()
    if norm == "l2":
        return
    batch = auto_attack(
        model, images, labels, eps, settings=AutoSettings(steps=10, queries=100), generator=seeded()
    )
    assert [d["fooled_by"] for d in batch.details] == [["square"]] * 4
    assert all(d["worst_attack"] == "square" and not d["robust"] for d in batch.details)
    assert all(d["margin"] < 0 for d in batch.details)
    tally = AutoTally(("apgd-ce", "apgd-t", "square"))
    for details in batch.details:
        tally.add(True, details)
    assert tally.masked == 4 and tally.robust == 0
    assert tally.standing == {"apgd-ce": 4, "apgd-t": 4, "square": 0}


def test_the_worst_case_over_attacks_and_the_counts_alone_and_in_turn():
    model, grey = ramp_net(), torch.full((3, 1, 4, 4), 0.5)
    grey[2] = 0.7  # margin 6 − 7 − 0 < 0: misclassified before any attack
    labels = torch.zeros(3, dtype=torch.long)
    settings = AutoSettings(attacks=("apgd-ce", "square"), steps=10, queries=50)
    batch = auto_attack(model, grey, labels, 0.08, settings=settings, generator=seeded())
    first, _, clean = batch.details
    # no attack can fool at ε = 0.08 (worst margin 0.2, which APGD reaches exactly)
    assert first["robust"] and first["fooled_by"] == [] and first["worst_attack"] == "apgd-ce"
    assert first["margin"] == pytest.approx(0.2, abs=1e-5)
    assert torch.equal(batch.adversarial[2], grey[2])  # not attacked: wrong already
    assert clean["margin"] == pytest.approx(-1.0, abs=1e-5)
    assert clean == {**clean, "robust": False, "worst_attack": None, "fooled_by": []}
    # in turn (AutoAttack's standard), an attack's row counts the images neither it nor any
    # attack before it fooled; alone, those it did not fool; the worst case is every attack
    # failing either way, and the image only Square fooled is the one sign of masking
    cases = {
        False: ([["apgd-ce"], ["square"], []], {"apgd-ce": 2, "square": 1}),
        True: ([["apgd-ce"], ["square"], [], ["apgd-ce", "square"]], {"apgd-ce": 2, "square": 2}),
    }
    for independent, (fooled, standing) in cases.items():
        tally = AutoTally(("apgd-ce", "square"), independent)
        for names in fooled:
            tally.add(True, {"robust": not names, "fooled_by": names})
        tally.add(False, {"robust": False, "fooled_by": []})  # wrong before any attack
        assert tally.standing == standing and tally.masked == 1
        rows = {row["attack"]: row for row in tally.rows()}
        assert rows["worst case"]["robust_accuracy"] == pytest.approx(1 / tally.images)
        assert rows["apgd-ce"]["robust_accuracy"] == pytest.approx(2 / tally.images)


def test_bar_chart_heights_are_the_accuracies(tmp_path):
    values = [0.98, 0.8, 0.55, 0.3, 0.25]
    names = ["clean (no attack)", "APGD-CE", "+ APGD-T", "+ Square", "worst case"]
    save_robustness_bars(tmp_path / "bars.png", list(zip(names, values, strict=True)), title="t")
    pixels = png(tmp_path / "bars.png")
    left, top, right, bottom = axes_frame(pixels)
    tops = []
    for colour in (UNKNOWN, ATTACK_BLUE, WRONG):
        mask = colour_mask(pixels, [round(255 * c) for c in rgb(colour)], tolerance=3)
        for start, stop in runs(mask.any(axis=0)):
            column = mask[:, (start + stop) // 2]
            tops.append((start, np.nonzero(column)[0].min(), stop - start))
    tops.sort()
    assert len(tops) == 5 and len({width for _, _, width in tops}) <= 2  # 5 equal bars
    drawn = [(bottom - y) / (bottom - top) * BAR_TOP / 100 for _, y, _ in tops]
    assert drawn == pytest.approx(values, abs=0.01)


# --- the command line ---------------------------------------------------------------------------


def test_cli_warns_of_gradient_masking_and_writes_records_chart_and_summary(tmp_path, cnntool):
    write_greys(tmp_path / "greys")
    model = [f"{ROOT}/tests/auto_models.py:rounding_net", "--trust-code"]
    result = cnntool(
        "attack", "auto", *model, tmp_path / "greys", "--eps", "0.15", "--steps", "5",
        "--queries", "40", "-o", tmp_path / "out", "--triptychs", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 4 and all(r["label_source"] == "prediction" for r in rows)
    assert all(r["fooled_by"] == ["square"] and r["worst_attack"] == "square" for r in rows)
    assert all(not r["robust"] and r["success"] and r["margin"] < 0 for r in rows)
    assert all(0.0 < r["linf"] <= 0.15 + 1e-6 for r in rows)
    stderr = " ".join(result.stderr.split())  # rich wraps long lines
    assert "Square (gradient-free) broke 4 images on which APGD-CE and APGD-T failed" in stderr
    assert "gradient masking" in stderr and "APGD-T (3 target classes × 5 steps)" in stderr
    summary = json.loads((tmp_path / "out" / "robustness.json").read_text())
    assert summary["clean_accuracy"] == 1.0 and summary["robust_accuracy"] == 0.0
    assert [a["robust_accuracy"] for a in summary["attacks"]] == [1.0, 1.0, 0.0]
    assert summary["square_only"] == 4
    assert len(list((tmp_path / "out" / "adversarial").iterdir())) == 4
    assert len(list((tmp_path / "out" / "triptych").iterdir())) == 1
    pixels = png(tmp_path / "out" / "robustness.png")
    _, top, _, bottom = axes_frame(pixels)
    blue = colour_mask(pixels, [round(255 * c) for c in rgb(ATTACK_BLUE)], tolerance=3)
    bars = runs(blue.any(axis=0))
    assert len(bars) == 2  # APGD-CE and + APGD-T at 100%; + Square at 0 has no height
    height = np.nonzero(blue[:, (bars[0][0] + bars[0][1]) // 2])[0]
    assert (bottom - height.min()) / (bottom - top) * BAR_TOP == pytest.approx(100, abs=1.5)
    masking = (
        "Square alone broke 4 images the gradient attacks could not: a sign of gradient masking"
    )
    assert find_plot_text(pixels, masking, fontsize=8)


def in_process(monkeypatch, capsys, *args):
    """`cnntool ARGS` through the real entry point in this process (no second torch import):
    (exit code, stdout, stderr)."""
    from cnntool.cli import console
    from cnntool.cli.main import main

    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setattr(console, "_console", None)  # a console bound to the captured stderr
    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    console.set_quiet(False)
    return exit_info.value.code, out, err


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--eps", "1.5"], 2, "eps 1.5 is outside [0, 1]"),
        (["--eps", "0.1,0.2"], 2, "give one ε"),
        (["--attacks", "apgd-ce,fab"], 2, "attacks must be some of apgd-ce, apgd-t, square"),
        (["--triptychs", "2"], 2, "--triptychs needs -o DIR"),
        (["--norm", "l2", "--eps", "-1"], 2, "is outside ≥ 0"),
    ],
)
def test_cli_bad_input_is_one_sentence(args, code, message, monkeypatch, capsys, tmp_path):
    write_greys(tmp_path / "greys")
    model = [f"{ROOT}/tests/auto_models.py:rounding_net", "--trust-code"]
    status, _, err = in_process(monkeypatch, capsys, "attack", "auto", *model, tmp_path, *args)
    assert status == code, err
    assert message in " ".join(err.split()) and "Traceback" not in err


def test_cli_refuses_apgd_t_on_two_classes_in_one_sentence(monkeypatch, capsys, tmp_path):
    Image.fromarray(np.full((8, 8), 30, dtype=np.uint8), mode="L").save(tmp_path / "dark.png")
    model = [f"{ROOT}/tests/microscope_models.py:bright_net", "--trust-code"]  # 2 classes
    status, _, err = in_process(monkeypatch, capsys, "attack", "auto", *model, tmp_path, "-q")
    assert status == 1 and "apgd-t needs a model with at least 4 classes, not 2" in err
    assert "Traceback" not in err


def test_apgd_t_on_a_model_with_too_few_classes_is_refused():
    with pytest.raises(CnnToolError, match="at least 4 classes"):
        AutoSettings().for_classes(3)
    assert AutoSettings().for_classes(4).target_classes == 3
    assert AutoSettings(attacks=("apgd-ce", "square")).for_classes(2).attacks[0] == "apgd-ce"


@pytest.mark.torchrun
def test_torchrun_gives_the_records_and_summary_of_one_process(cnntool, tmp_path):
    write_greys(tmp_path / "greys")
    model = [f"{ROOT}/tests/auto_models.py:rounding_net", "--trust-code"]
    args = ["attack", "auto", *model, tmp_path / "greys", "--eps", "0.15", "--steps", "3"]
    args += ["--queries", "40", "--batch-size", "1", "--workers", "0", "-q"]
    one = cnntool(*args, "-o", tmp_path / "one", threads=1)
    two = cnntool.torchrun(*args, "-o", tmp_path / "two")
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    fields = ("path", "robust", "worst_attack", "fooled_by", "success")
    single, ranked = ([json.loads(line) for line in r.stdout.splitlines()] for r in (one, two))
    assert [[r[f] for f in fields] for r in ranked] == [[r[f] for f in fields] for r in single]
    assert len(single) == 4  # every rank's images, in dataset order
    summaries = [json.loads((tmp_path / d / "robustness.json").read_text()) for d in ("one", "two")]
    assert summaries[0] == summaries[1] and summaries[0]["square_only"] == 4
    assert "gradient masking" in " ".join(two.stderr.split())
