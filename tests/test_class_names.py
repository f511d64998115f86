"""Class names from --classes files, and a data set's labels mapped onto a model's outputs."""

import json

import pytest

from cnntool.core.class_indices import map_labels
from cnntool.core.data import DataSet
from cnntool.core.loading.class_names import ClassNamesError, read_class_names_file


@pytest.mark.parametrize(
    "name, text",
    [
        ("names.txt", "cat\ndog\n\nfox\n"),
        ("names.json", json.dumps(["cat", "dog", "fox"])),
        ("class_to_idx.json", json.dumps({"fox": 2, "cat": 0, "dog": 1})),
        ("id2label.json", json.dumps({"1": "dog", "0": "cat", "2": "fox"})),
    ],
)
def test_classes_file_formats(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert read_class_names_file(path) == ["cat", "dog", "fox"]


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "is empty"),
        ("[1, 2]", "holds no class names"),
        ('{"a": 0, "b": 0}', "the same index"),
        ('{"a": 0, "b": 2}', "index 1 is missing"),
        ('["a", ', "not valid"),
    ],
)
def test_bad_classes_files_are_one_sentence(tmp_path, text, words):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ClassNamesError, match=words) as info:
        read_class_names_file(path)
    assert "\n" not in str(info.value)


def _folders(*labels):
    return DataSet(
        name="data",
        paths=[f"{label}/{i}.png" for i, label in enumerate(labels)],
        labels=list(labels),
    )


def test_folder_names_map_by_name_case_insensitively():
    mapping = map_labels(_folders("dog", "Cat", "emu"), ["cat", "dog", "fox"], 3)
    assert mapping.labels == (1, 0, None) and mapping.mapped == 2
    assert (
        mapping.description
        == "labels: 2 of 3 folder names matched to the model's class names (not: emu)"
    )


def test_unnamed_model_maps_sorted_folders_like_imagefolder():
    mapping = map_labels(_folders("zebra", "ant", "mole", "ant"), None, 3)
    assert mapping.labels == (2, 0, 1, 0)
    assert "sorted order as torchvision's ImageFolder" in mapping.description
    assert "(ant = 0 … zebra = 2)" in mapping.description
    # a different number of outputs: no mapping, and the line says how to give names
    other = map_labels(_folders("zebra", "ant"), None, 5)
    assert other.labels == (None, None) and "--classes" in other.description
    # names that do not match, but as many folders as outputs: ImageFolder order, said so
    mismatch = map_labels(_folders("b", "a"), ["x", "y"], 2)
    assert mismatch.labels == (1, 0) and mismatch.description.startswith(
        "labels: no folder name is one of the model's class names, but its 2 outputs"
    )


def test_integer_labels_and_sample_sets():
    digits = DataSet(
        name="mnist-5k",
        paths=["a", "b", "c"],
        labels=[3, 9, 12],
        label_names=[str(d) for d in range(10)],
    )
    same = map_labels(digits, [str(d) for d in range(10)], 10)
    assert (
        same.labels == (3, 9, None)
        and same.description == "labels: mnist-5k's class indices are the model's (10 outputs)"
    )
    renamed = map_labels(digits, [str(d) for d in reversed(range(10))], 10)
    assert renamed.labels == (6, 0, None)
    assert (
        map_labels(DataSet(name="x", paths=["a"], labels=[None]), None, 3).description
        == "the images have no labels"
    )
