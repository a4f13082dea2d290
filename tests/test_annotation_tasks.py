"""Task payloads, labeling configs and the parsing/validation of exported annotations."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from madseg.annotation.brush import mask_to_results
from madseg.annotation.tasks import (
    LEVELS,
    SCORE_COLUMNS,
    AnnotationError,
    check_receipt,
    drawing_cost,
    effort,
    index_tasks,
    parse_pixel,
    parse_weak,
    pixel_label_config,
    pixel_roles,
    pixel_task,
    progress,
    weak_label_config,
)
from madseg.labels import IGNORE_INDEX, make_class_list

CLASSES = make_class_list("demo")


def _ann(aid: int, who: int, rating: str | None, ood: bool = False, cancelled: bool = False, lead: float = 2.0):
    result = []
    if rating is not None:
        result.append({"from_name": "rating", "to_name": "image", "type": "choices", "value": {"choices": [rating]}})
    if ood:
        result.append(
            {
                "from_name": "ood",
                "to_name": "image",
                "type": "choices",
                "value": {"choices": ["out of domain"]},
            }
        )
    return {"id": aid, "completed_by": who, "result": result, "was_cancelled": cancelled, "lead_time": lead}


def _task(tid: int, image: str, annotations: list) -> dict:
    return {"id": tid, "data": {"image_id": image, "image": "/x"}, "annotations": annotations}


def test_weak_config_has_five_levels_with_aliases_and_an_ood_flag():
    root = ET.fromstring(weak_label_config())
    rating, ood = root.findall("Choices")
    assert [c.get("value") for c in rating] == list(LEVELS)
    assert [c.get("alias") for c in rating] == ["1", "2", "3", "4", "5"]
    assert rating.get("required") == "true" and rating.get("choice") == "single-radio"
    assert ood.get("choice") == "multiple" and len(ood) == 1


def test_pixel_config_lists_classes_in_palette_colours():
    root = ET.fromstring(pixel_label_config(CLASSES))
    labels = root.find("BrushLabels").findall("Label")
    assert [lab.get("value") for lab in labels] == [*CLASSES.names, "ignore"]
    r, g, b = CLASSES.palette[1]
    assert labels[1].get("background") == f"#{r:02x}{g:02x}{b:02x}"


def test_parse_weak_reads_aliases_names_vetoes_and_skips_cancelled():
    tasks = {
        "a": _task(1, "a", [_ann(10, 2, "1"), _ann(11, 3, "excellent", ood=True), _ann(12, 4, None, cancelled=True)]),
        "b": _task(2, "b", [_ann(13, 2, "3", lead=4.5)]),
    }
    table = parse_weak(tasks, {2: "ann1@x", 3: "ann2@x"})
    assert list(table.columns) == SCORE_COLUMNS
    assert table.values.tolist() == [
        ["a", "ann1@x", 1, False, 2.0],
        ["a", "ann2@x", 5, True, 2.0],
        ["b", "ann1@x", 3, False, 4.5],
    ]
    assert progress(tasks, 2).done == 1 and progress(tasks, 2).remaining == 1
    assert progress(tasks, 1).remaining == 0


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ([_ann(10, 2, "7")], "exactly one rating"),
        ([_ann(10, 2, None, ood=True)], "exactly one rating"),
        ([_ann(10, 2, "2"), _ann(11, 2, "3")], "annotated this task twice"),
        (
            [{**_ann(10, 2, "2"), "result": [{"type": "labels", "from_name": "rating"}]}],
            "unexpected result type",
        ),
        (
            [{**_ann(10, 2, "2"), "result": [{"type": "choices", "from_name": "x", "value": {}}]}],
            "unexpected control",
        ),
    ],
)
def test_malformed_ratings_name_the_task(annotations, message):
    with pytest.raises(AnnotationError, match=message) as e:
        parse_weak({"a": _task(41, "a", annotations)})
    assert "task 41" in str(e.value) and "image a" in str(e.value)


def test_index_tasks_checks_coverage_and_duplicates():
    tasks = [_task(1, "a", []), _task(2, "b", []), _task(3, "zzz", [])]
    assert sorted(index_tasks(tasks, ["a", "b"])) == ["a", "b"]  # other images are left out
    with pytest.raises(AnnotationError, match="1 exported images have no task"):
        index_tasks(tasks, ["a", "c"])
    with pytest.raises(AnnotationError, match="both hold image a"):
        index_tasks([*tasks, _task(4, "a", [])], ["a"])
    with pytest.raises(AnnotationError, match="no image_id"):
        index_tasks([{"id": 5, "data": {}}], ["a"])


def test_pixel_roles_label_shared_images_once():
    roles = pixel_roles(["b", "a", "c"], ["c", "d"])
    assert roles.values.tolist() == [["a", "S"], ["b", "S"], ["c", "both"], ["d", "T"]]
    assert pixel_roles([], ["x"]).values.tolist() == [["x", "T"]]


def test_pixel_task_preannotation_and_role_check():
    task = pixel_task("a", "/u", "0", "S", [{"x": 1}], "target_0")
    assert task["predictions"] == [{"model_version": "target_0", "result": [{"x": 1}]}]
    assert "predictions" not in pixel_task("a", "/u", "0", "T", None, "target_0")
    with pytest.raises(ValueError, match="role must be one of"):
        pixel_task("a", "/u", "0", "X", None, "m")


def test_parse_pixel_takes_the_latest_submitted_annotation():
    old = np.zeros((3, 4), np.uint8)
    new = old.copy()
    new[1, 1:3] = 2
    anns = [
        {"id": 5, "completed_by": 2, "result": mask_to_results(old, CLASSES), "lead_time": 10.0},
        {"id": 9, "completed_by": 3, "result": mask_to_results(new, CLASSES), "lead_time": 20.0},
        {"id": 11, "completed_by": 2, "result": [], "was_cancelled": True},
    ]
    table, masks = parse_pixel({"a": _task(1, "a", anns)}, {"a": "T"}, {"a": (3, 4)}, CLASSES, {3: "b@x"})
    assert table.values.tolist() == [["a", "T", "b@x", 20.0]]
    np.testing.assert_array_equal(masks["a"], new)
    with pytest.raises(AnnotationError, match="no submitted annotation"):
        parse_pixel({"a": _task(1, "a", anns[2:])}, {"a": "T"}, {"a": (3, 4)}, CLASSES)
    with pytest.raises(AnnotationError, match=r"task 1 \(image a\).*3x4 image, expected 5x4"):
        parse_pixel({"a": _task(1, "a", anns[1:2])}, {"a": "T"}, {"a": (5, 4)}, CLASSES)


def test_receipt_check_and_effort():
    with pytest.raises(AnnotationError, match="re-run the export stage"):
        check_receipt({"backend": "simulated", "kind": "weak"}, "labelstudio", "weak")
    table = parse_weak({"a": _task(1, "a", [_ann(1, 2, "2", lead=3.0), _ann(2, 3, "2", lead=5.0)])})
    assert effort(table, 6, "ratings") == {
        "ratings_requested": 6,
        "ratings_received": 2,
        "ratings_lead_time_total_s": 8.0,
        "ratings_lead_time_mean_s": 4.0,
    }
    assert effort(table.iloc[:0], 6, "ratings")["ratings_lead_time_mean_s"] is None


def test_drawing_cost_counts_regions_and_object_pixels():
    a = np.zeros((6, 6), dtype=np.uint8)
    a[0:2, 0:2] = 1  # one region of class 1 ...
    a[4:6, 4:6] = 1  # ... and a second, apart from it
    a[2, 2] = 2  # touches the first diagonally, but it is another class: its own region
    a[3, 3] = 2  # diagonal to the pixel above: the same 8-connected region
    b = np.full((2, 3), IGNORE_INDEX, dtype=np.uint8)
    b[0, 0] = 0
    b[1, :] = 3
    assert drawing_cost({"a": a, "b": b}) == {
        "regions": 4,
        "object_pixels": 8 + 2 + 3,
        "object_share": 13 / (36 + 4),
    }
    assert drawing_cost({})["object_share"] is None
