"""PNG figures a person would rather look at than JSON: confusion matrix, training curves, and a
contact sheet of the worst predictions.

matplotlib is used through its object API on the Agg backend (no display, no global pyplot
state), so plotting works in a service, a test and a headless CI job alike.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

PRED_COLOR = (0.9, 0.1, 0.1)   # red: predicted box
TRUE_COLOR = (0.1, 0.75, 0.1)  # green: true box


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Constrained layout places titles and labels without overlap or large empty margins.
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    log.info("wrote %s", path)
    return path


def plot_confusion_matrix(cm: Sequence[Sequence[int]], labels: Sequence[str],
                          path: str | Path, title: str = "Confusion matrix") -> Path:
    """Draw a confusion matrix with counts in every cell.

    Args:
        cm: (n, n) counts, rows = true class, columns = predicted class.
        labels: n class names (the last usually "none").
        path: PNG to write.
    Returns:
        The path written.
    """
    cm = np.asarray(cm, dtype=np.int64)
    n = len(labels)
    fig = _figure(1.2 + 0.9 * n, 1.0 + 0.8 * n)
    ax = fig.add_subplot(1, 1, 1)
    # Normalise colours per true class so a rare class's mistakes are as visible as a common one's.
    rows = cm.sum(axis=1, keepdims=True)
    shade = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    ax.imshow(shade, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if shade[i, j] > 0.5 else "black", fontsize=12)
    ax.set_xticks(range(n), labels=list(labels))
    ax.set_yticks(range(n), labels=list(labels))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, path)


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """Epoch records from a run's `metrics.jsonl` (one JSON object per line) or a JSON list."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    return data if isinstance(data, list) else data.get("history", [])


def plot_training_curves(history: Sequence[dict[str, Any]] | str | Path, path: str | Path) -> Path:
    """Loss terms (train and val), validation accuracy metrics and learning rate per epoch.

    Args:
        history: epoch records as `train.trainer.fit` writes them to `metrics.jsonl`
            (`epoch`, `lr`, `train` {loss terms}, `val` {metrics and loss terms}), or the file.
        path: PNG to write.
    Returns:
        The path written.
    """
    if isinstance(history, (str, Path)):
        history = read_history(history)
    epochs = [h["epoch"] for h in history]
    fig = _figure(13, 3.8)
    ax_loss, ax_acc, ax_lr = (fig.add_subplot(1, 3, i) for i in (1, 2, 3))

    loss_keys = sorted({k for h in history for k in h.get("train", {}) if k.startswith("loss")})
    for i, key in enumerate(loss_keys):
        color = f"C{i}"
        ax_loss.plot(epochs, [h["train"].get(key, np.nan) for h in history], color=color,
                     label=f"train {key}")
        val = [h.get("val", {}).get(key, np.nan) for h in history]
        if not all(v is None or np.isnan(v) for v in _floats(val)):
            ax_loss.plot(epochs, _floats(val), color=color, linestyle="--", label=f"val {key}")
    ax_loss.set_title("losses")
    ax_loss.set_xlabel("epoch")
    ax_loss.legend(fontsize=7)

    for key, name in (("video_acc", "video acc"), ("det_acc", "det-acc@0.5"), ("miou", "mIoU"),
                      ("map50", "mAP@0.5")):
        vals = _floats([h.get("val", {}).get(key) for h in history])
        if not np.all(np.isnan(vals)):
            ax_acc.plot(epochs, vals, marker="o", markersize=3, label=name)
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.set_title("validation")
    ax_acc.set_xlabel("epoch")
    ax_acc.legend(fontsize=7)

    ax_lr.plot(epochs, [h.get("lr", np.nan) for h in history], color="C3")
    ax_lr.set_title("learning rate (end of epoch)")
    ax_lr.set_xlabel("epoch")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    return _save(fig, path)


def _floats(values: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def plot_contact_sheet(items: Sequence[dict[str, Any]], path: str | Path,
                       title: str = "Worst predictions") -> Path:
    """A grid: one row per video, a few frames each, predicted box red and true box green.

    Args:
        items: per video {"frames": uint8 (F, H, W, 3) RGB, "pred_box": normalised xyxy or None,
            "true_box": normalised xyxy or None, "title": text over the row (stem, classes,
            score, IoU)}.
        path: PNG to write.
    Returns:
        The path written.
    """
    from matplotlib.patches import Rectangle

    rows = max(len(items), 1)
    cols = max((len(it["frames"]) for it in items), default=1)
    fig = _figure(2.2 * cols, 2.4 * rows)
    fig.suptitle(title)
    if not items:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "nothing to show", ha="center", va="center")
        ax.axis("off")
    for r, item in enumerate(items):
        frames = np.asarray(item["frames"])
        for c in range(cols):
            ax = fig.add_subplot(rows, cols, r * cols + c + 1)
            ax.axis("off")
            if c >= len(frames):
                continue
            frame = frames[c]
            h, w = frame.shape[:2]
            ax.imshow(frame)
            for key, color in (("true_box", TRUE_COLOR), ("pred_box", PRED_COLOR)):
                box = item.get(key)
                if box is None:
                    continue
                x1, y1, x2, y2 = (float(box[0]) * w, float(box[1]) * h,
                                  float(box[2]) * w, float(box[3]) * h)
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False,
                                       edgecolor=color, linewidth=1.5))
            if c == 0:
                ax.set_title(item.get("title", ""), fontsize=8, loc="left")
    return _save(fig, path)
