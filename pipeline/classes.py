"""The detector's output classes: person first (the Stage A gate, shadow runs and comparisons are
about person, class id 0), any further classes after it (e.g. the Atvos seed's "no helmet"), and
what is measured per class."""
from __future__ import annotations

import pandas as pd

from pipeline.coco_map import average_precision, precision_recall_at
from pipeline.errors import PipelineInputError

PERSON = "person"
DEFAULT_CLASSES = [PERSON]


def check_classes(classes: list[str], where: str = "annotations config") -> list[str]:
    """The class list, checked: non-empty, distinct, plain names, person first."""
    classes = [str(c) for c in classes]
    if not classes or len(set(classes)) != len(classes) or any(not c.strip() for c in classes):
        raise PipelineInputError(where, "classes", classes, "give a non-empty list of distinct class names",
                                 problem="bad class list")
    if classes[0] != PERSON:
        raise PipelineInputError(where, "classes", classes,
                                 f"put {PERSON!r} first (class id 0), e.g. {[PERSON, *[c for c in classes if c != PERSON]]}: "
                                 "the Stage A gate, the shadow runs and the model comparisons measure person",
                                 problem="person is not the first class")
    return classes


def name_detections(preds: pd.DataFrame, classes: list[str], where: str) -> pd.DataFrame:
    """Detections with a class_name from their class_id (the model's output index into `classes`)."""
    if "class_id" not in preds.columns:
        if len(classes) > 1:
            raise PipelineInputError(where, "class_id", None, "detect with every class kept (person_class=None)",
                                     problem="several classes but detections without a class id")
        return preds.assign(class_name=classes[0])
    ids = preds["class_id"].astype(int)
    unknown = sorted(set(ids) - set(range(len(classes))))
    if unknown:
        raise PipelineInputError(where, "class_id", unknown[0],
                                 f"the model was trained for more classes than {classes}: evaluate it with the "
                                 "class list it was trained on (annotations config `classes`)",
                                 problem="detection of an unknown class")
    return preds.assign(class_name=ids.map(dict(enumerate(classes))))


def of_class(table: pd.DataFrame, name: str) -> pd.DataFrame:
    """The rows of one class (a table without class_name is all person)."""
    if "class_name" not in table.columns:
        return table if name == PERSON else table.iloc[:0]
    return table[table["class_name"] == name]


def per_class_metrics(gt: pd.DataFrame, preds: pd.DataFrame, classes: list[str], conf: float) -> dict:
    """AP@0.5, AP@0.5:0.95, precision and recall at `conf` and box counts for each class, each
    measured on that class's labels and detections alone (COCO's per-category rule)."""
    result = {}
    for name in classes:
        g, p = of_class(gt, name), of_class(preds, name)
        ap, pr = average_precision(g, p), precision_recall_at(g, p, conf)
        result[name] = {"map50": ap["ap50"], "map50_95": ap["ap50_95"], "precision": pr["precision"],
                        "recall": pr["recall"], "n_gt": int(len(g)), "n_pred": int((p["conf"] >= conf).sum())}
    return result
