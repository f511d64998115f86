"""The tasks behind the thin attack and predict commands: attack_method and PredictionTally."""

import pytest
import torch

from cnntool.core.data import BatchStream, open_data
from cnntool.core.loading.models import load_model
from cnntool.errors import CnnToolError
from cnntool.tasks.attack import attack_method, bim, fgsm, pgd
from cnntool.tasks.predict import ClassScore, Prediction, PredictionTally


def test_attack_method_is_the_attack_with_its_settings_and_checks_eps():
    lenet = load_model("lenet5-mnist", device="cpu")
    dataset = open_data("mnist-5k")
    batch = next(iter(BatchStream(dataset, lenet.preprocessing, batch_size=16, normalize=False)))
    images, labels = batch.inputs, torch.tensor([dataset.labels[i] for i in batch.indices])
    assert attack_method("fgsm", [0.1]) is fgsm
    ours = attack_method("bim", [0.2], steps=3, step_size=0.05)(lenet, images, labels, 0.2)
    assert torch.equal(ours, bim(lenet, images, labels, 0.2, steps=3, step_size=0.05))
    ours = attack_method("pgd", steps=2, norm="l2", random_start=False)(lenet, images, labels, 1.5)
    assert torch.equal(
        ours, pgd(lenet, images, labels, 1.5, steps=2, norm="l2", random_start=False)
    )
    with pytest.raises(CnnToolError, match="outside"):
        attack_method("fgsm", [0.1, 1.5])
    attack_method("pgd", [1.5], norm="l2")  # an L2 radius may exceed 1
    with pytest.raises(CnnToolError, match="unknown attack 'cw'"):
        attack_method("cw")


def test_prediction_tally_counts_judged_predictions_and_keeps_the_first():
    def prediction(index, label_index, top):
        return Prediction(
            index, f"{index}.png", label_index, label_index, (ClassScore(top, None, 0.9),)
        )

    tally = PredictionTally(keep=2)
    tally.add([prediction(0, 1, 1), prediction(1, 2, 0), prediction(2, None, 3)])
    tally.add([prediction(3, 4, 4)])
    assert (tally.count, tally.judged, tally.correct) == (4, 3, 2)
    assert [p.index for p in tally.kept] == [0, 1]
    everything = PredictionTally()
    everything.add([prediction(i, None, 0) for i in range(30)])
    assert len(everything.kept) == 30 and everything.judged == 0
