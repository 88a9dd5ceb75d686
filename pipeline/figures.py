"""Figures an operator looks at before the numbers, rendered to PNG bytes (matplotlib, Agg).

Each function takes the plain data the metrics core produced and returns the PNG; assets put the
bytes inline in their metadata and in the store.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig) -> bytes:
    plt = _plt()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def confusion_png(cm: dict, title: str = "") -> bytes:
    """Counts with each true-class row's share as colour (confusion.confusion_matrix output)."""
    from pipeline.confusion import normalized

    plt = _plt()
    labels, counts = cm["labels"], np.asarray(cm["matrix"])
    share = normalized(cm["matrix"])
    size = 1.2 + 0.9 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if i == len(labels) - 1 and j == len(labels) - 1:
                ax.text(j, i, "-", ha="center", va="center", color="grey")
                continue
            ax.text(j, i, f"{counts[i, j]}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=9,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (labelled)")
    ax.set_title(title or f"conf >= {cm['conf']:.2f}, IoU >= {cm['iou_threshold']:.2f}", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the row")
    return png(fig)


def pr_f1_png(curve: pd.DataFrame, by_conf: pd.DataFrame, point: dict | None, title: str = "") -> bytes:
    """Left: precision-recall (AP@0.5 envelope); right: F1, precision, recall against confidence.
    The chosen operating point is marked on both."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(curve["recall"], curve["precision"], color="#4C72B0")
    left.set_xlim(0, 1.01)
    left.set_ylim(0, 1.05)
    left.set_xlabel("recall")
    left.set_ylabel("precision")
    left.set_title("precision-recall @ IoU 0.5", fontsize=9)
    right.plot(by_conf["conf"], by_conf["f1"], color="#C44E52", label="F1")
    right.plot(by_conf["conf"], by_conf["precision"], color="#4C72B0", alpha=0.5, label="precision")
    right.plot(by_conf["conf"], by_conf["recall"], color="#55A868", alpha=0.5, label="recall")
    right.set_xlim(0, 1)
    right.set_ylim(0, 1.05)
    right.set_xlabel("confidence threshold")
    right.set_title("F1 / precision / recall vs confidence", fontsize=9)
    if point:
        label = f"operating point conf {point['conf']:.2f}: P {point['precision']:.2f} R {point['recall']:.2f}"
        left.plot([point["recall"]], [point["precision"]], "o", color="black", label=label)
        right.axvline(point["conf"], color="black", linestyle="--", linewidth=1)
        right.plot([point["conf"]], [point.get("f1", 0.0)], "o", color="black")
        left.legend(fontsize=7, loc="lower left")
    right.legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=10)
    return png(fig)


def sweep_png(sweep: list[dict], point: dict | None, title: str = "") -> bytes:
    """The configured confidence sweep: precision, recall, F1 per threshold, operating point marked."""
    plt = _plt()
    table = pd.DataFrame(sweep)
    p, r = table["precision"].astype(float), table["recall"].astype(float)
    f1 = np.where((p + r) > 0, 2 * p * r / (p + r).replace(0, np.nan), 0.0)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(table["conf"], p, "o-", label="precision", color="#4C72B0")
    ax.plot(table["conf"], r, "o-", label="recall", color="#55A868")
    ax.plot(table["conf"], f1, "o-", label="F1", color="#C44E52")
    if point:
        ax.axvline(point["conf"], color="black", linestyle="--", linewidth=1, label=f"chosen {point['conf']:.2f}")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("confidence threshold")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return png(fig)


TRAIN_PANELS = [("box loss", "box_loss"), ("class loss", "cls_loss"), ("DFL loss", "dfl_loss"),
                ("precision", "metrics/precision"), ("recall", "metrics/recall"), ("mAP@0.5", "metrics/mAP50("),
                ("mAP@0.5:0.95", "metrics/mAP50-95")]


def training_curves_png(curves: list[dict] | pd.DataFrame, title: str = "") -> bytes:
    """Ultralytics results.csv rows: train and val losses, precision, recall, mAP@0.5 and
    mAP@0.5:0.95 per epoch, one panel each (Ultralytics' results.png, drawn from the same rows)."""
    plt = _plt()
    table = pd.DataFrame(curves)
    if table.empty:
        raise ValueError("no training curves: the run wrote no results.csv rows")
    fig, axes = plt.subplots(2, 4, figsize=(13, 5.2))
    epochs = table["epoch"] if "epoch" in table.columns else pd.Series(range(1, len(table) + 1))
    for ax, (name, needle) in zip(axes.flat, TRAIN_PANELS):
        for column in [c for c in table.columns if needle in c]:
            style = "--" if column.startswith("val/") else "-"
            ax.plot(epochs, table[column], style, marker=".", label=column.split("/")[0])
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        if "loss" in name:
            ax.legend(fontsize=7)
    lr = [c for c in table.columns if c.startswith("lr/")]
    for column in lr[:1]:
        axes.flat[-1].plot(epochs, table[column], marker=".")
    axes.flat[-1].set_title("learning rate", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return png(fig)


def domain_gap_png(gap: dict) -> bytes:
    """Test split vs post-install recordings: each measure side by side, the gap and its CI."""
    plt = _plt()
    names = [("recall", "per-frame recall"), ("median_best_conf", "median best conf"), ("map50", "mAP@0.5")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    x = np.arange(len(names))
    left.bar(x - 0.2, [gap["test"][m] for m, _ in names], 0.4, label="test split", color="#4C72B0")
    left.bar(x + 0.2, [gap["deployment_test"][m] for m, _ in names], 0.4, label="post-install", color="#DD8452")
    left.set_xticks(x, [n for _, n in names])
    left.set_ylim(0, 1.05)
    left.legend(fontsize=7)
    diffs = np.array([gap["gap"][m] for m, _ in names], float)
    cis = np.array([gap["gap_ci"][m] for m, _ in names], float)
    low = np.nan_to_num(np.clip(diffs - cis[:, 0], 0, None))
    high = np.nan_to_num(np.clip(cis[:, 1] - diffs, 0, None))
    right.bar(x, diffs, yerr=[low, high], capsize=4, color=["#55A868" if d >= 0 else "#C44E52" for d in diffs])
    right.axhline(0, color="black", linewidth=0.8)
    right.set_xticks(x, [n for _, n in names])
    right.set_title("gap: post-install - test (95% CI, by video)", fontsize=9)
    return png(fig)
