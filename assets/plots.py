"""Plots an operator would rather look at than read, as markdown images in asset metadata."""

import base64

import dagster as dg
import numpy as np
import pandas as pd

from pipeline import figures
from pipeline.explanations import explain
from pipeline.preview import contact_sheet as tile_sheet


def image_md(data: bytes, alt: str, about: str | None = None, link: str | None = None,
             mime: str = "image/png") -> dg.MetadataValue:
    """An inline image, with the operator's one-line explanation above it and a link to the stored file."""
    parts = [f"*{about}*"] if about else []
    parts.append(f"![{alt}](data:{mime};base64,{base64.b64encode(data).decode()})")
    if link:
        parts.append(f"stored: `{link}`")
    return dg.MetadataValue.md("\n\n".join(parts))


def _png_md(fig, alt: str, about: str | None = None) -> dg.MetadataValue:
    return image_md(figures.png(fig), alt, about)


def confusion_figure(cm: dict, title: str = "", link: str | None = None) -> dg.MetadataValue:
    return image_md(figures.confusion_png(cm, title), "confusion matrix", explain("confusion_matrix"), link)


def training_curves_figure(curves, title: str = "", link: str | None = None) -> dg.MetadataValue:
    return image_md(figures.training_curves_png(curves, title), "training curves", explain("training_curves"), link)


def _figure(width: float = 6, height: float = 3.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def confidence_histogram(table: pd.DataFrame) -> dg.MetadataValue:
    """Distribution of the best person-box confidence per labelled frame with a person."""
    fig, ax = _figure()
    values = table.loc[table["n_gt"] > 0, "best_conf"].to_numpy(float)
    ax.hist(values, bins=np.linspace(0, 1, 21), color="#4C72B0", edgecolor="white")
    if len(values):
        ax.axvline(float(np.median(values)), color="#C44E52", label=f"median {np.median(values):.2f}")
        ax.legend()
    ax.set_xlabel("confidence of the best person box")
    ax.set_ylabel("frames")
    return _png_md(fig, "confidence histogram", explain("confidence_histogram"))


def recall_by_operation(table: pd.DataFrame, n_boot: int = 500, seed: int = 0) -> dg.MetadataValue:
    """Per-frame recall per operation, with 95% bootstrap-by-video error bars."""
    fig, ax = _figure(7, 3.4)
    rng = np.random.default_rng(seed)
    names, means, lows, highs = [], [], [], []
    for op, g in table[table["n_gt"] > 0].groupby("operation"):
        videos = [v["recall"].to_numpy(float) for _, v in g.groupby("video_id")]
        boots = [np.concatenate([videos[i] for i in rng.integers(0, len(videos), len(videos))]).mean()
                 for _ in range(n_boot)] if len(videos) > 1 else [g["recall"].mean()]
        mean = g["recall"].mean()
        names.append(op)
        means.append(mean)
        lows.append(mean - np.percentile(boots, 2.5))
        highs.append(np.percentile(boots, 97.5) - mean)
    ax.bar(range(len(names)), means, yerr=[np.clip(lows, 0, None), np.clip(highs, 0, None)], capsize=4,
           color="#55A868")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("per-frame recall @ IoU 0.5")
    return _png_md(fig, "recall by operation", explain("recall_by_operation"))


def contact_sheet(store, frame_keys: list[str], columns: int = 8, thumb_width: int = 160,
                  max_frames: int = 48) -> dg.MetadataValue:
    """Thumbnails of sampled frames, labelled with their key's last two parts."""
    import cv2

    tiles = []
    for key in frame_keys[:max_frames]:
        image = cv2.imdecode(np.frombuffer(store.read_bytes(key), np.uint8), cv2.IMREAD_COLOR)
        scale = thumb_width / image.shape[1]
        thumb = cv2.resize(image, (thumb_width, int(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        label = "/".join(key.split("/")[-2:])
        cv2.putText(thumb, label[-26:], (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 255, 255), 1, cv2.LINE_AA)
        tiles.append(thumb)
    if not tiles:
        return dg.MetadataValue.md("(no frames)")
    jpeg = tile_sheet(tiles, columns=columns, quality=80)
    return dg.MetadataValue.md(f"![contact sheet](data:image/jpeg;base64,{base64.b64encode(jpeg).decode()})")


def paired_plot(table: pd.DataFrame) -> dg.MetadataValue:
    """Recall difference (fine-tuned - baseline) per operation with its bootstrap-by-video CI."""
    fig, ax = _figure(7, 3.4)
    names = [str(n) for n in table.iloc[:, 0]]
    diffs = table["recall_diff"].to_numpy(float)
    lows = np.array([d - ci[0] if ci[0] == ci[0] else 0.0 for d, ci in zip(diffs, table["recall_diff_ci"])])
    highs = np.array([ci[1] - d if ci[1] == ci[1] else 0.0 for d, ci in zip(diffs, table["recall_diff_ci"])])
    ax.bar(range(len(names)), diffs, yerr=[np.clip(lows, 0, None), np.clip(highs, 0, None)], capsize=4,
           color=["#55A868" if d >= 0 else "#C44E52" for d in diffs])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("recall difference (fine-tuned - baseline)")
    return _png_md(fig, "paired recall difference by operation", explain("paired_plot"))


def worst_frames(store, table: pd.DataFrame, gt: pd.DataFrame, preds: pd.DataFrame, n: int = 6,
                 conf: float = 0.25) -> dg.MetadataValue:
    """The frames the detector did worst on (lowest recall, then lowest best-box confidence), with
    labelled persons in green and detections at or above `conf` in red."""
    import cv2

    worst = table[table["n_gt"] > 0].sort_values(["recall", "best_conf"]).head(n)
    tiles = []
    for row in worst.itertuples():
        image = cv2.imdecode(np.frombuffer(store.read_bytes(row.frame_key), np.uint8), cv2.IMREAD_COLOR)
        for b in gt[gt["frame_key"] == row.frame_key].itertuples():
            cv2.rectangle(image, (int(b.x1), int(b.y1)), (int(b.x2), int(b.y2)), (0, 200, 0), 2)
        for p in preds[(preds["frame_key"] == row.frame_key) & (preds["conf"] >= conf)].itertuples():
            cv2.rectangle(image, (int(p.x1), int(p.y1)), (int(p.x2), int(p.y2)), (0, 0, 255), 2)
            cv2.putText(image, f"{p.conf:.2f}", (int(p.x1) + 2, int(p.y1) + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (0, 0, 255), 1, cv2.LINE_AA)
        scale = 320 / image.shape[1]
        image = cv2.resize(image, (320, int(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        cv2.putText(image, f"recall {row.recall:.2f} best {row.best_conf:.2f}", (4, image.shape[0] - 6),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(image)
    if not tiles:
        return dg.MetadataValue.md("(no labelled frames)")
    height = max(t.shape[0] for t in tiles)
    tiles = [cv2.copyMakeBorder(t, 0, height - t.shape[0], 0, 0, cv2.BORDER_CONSTANT) for t in tiles]
    while len(tiles) % 3:
        tiles.append(np.zeros_like(tiles[0]))
    sheet = np.vstack([np.hstack(tiles[i:i + 3]) for i in range(0, len(tiles), 3)])
    ok, jpeg = cv2.imencode(".jpg", sheet, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return dg.MetadataValue.md(f"*{explain('worst_frames')}*\n\n"
                               f"![worst frames](data:image/jpeg;base64,{base64.b64encode(jpeg.tobytes()).decode()})")
