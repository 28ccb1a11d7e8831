"""Plots for the book: keyframes with boxes and labels, frame strips, class statistics."""
from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from .data.annotations import KeyframeBoxes
from .data.frames import clip_frame_indices, keyframe_to_frame_index
from .data.labels import action_group

GROUP_COLOURS = {"PERSON_MOVEMENT": "tab:blue", "OBJECT_MANIPULATION": "tab:orange",
                 "PERSON_INTERACTION": "tab:green"}


def draw_boxes(ax, image: np.ndarray, boxes: np.ndarray, captions: Sequence[str] = (),
               colour: str = "lime", normalised: bool = True, linestyle: str = "-",
               fontsize: float = 7) -> None:
    """Show ``image`` (H, W, 3) with boxes (N, 4) and a caption above each box."""
    h, w = image.shape[:2]
    ax.imshow(image)
    scale = np.array([w, h, w, h]) if normalised else np.ones(4)
    for i, box in enumerate(np.asarray(boxes, float).reshape(-1, 4) * scale):
        ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False,
                               edgecolor=colour, linewidth=1.2, linestyle=linestyle))
        if i < len(captions) and captions[i]:
            ax.text(box[0], box[1] - 1, captions[i], color="white", fontsize=fontsize, va="bottom",
                    bbox=dict(facecolor=colour, alpha=0.75, pad=1, edgecolor="none"))
    ax.set_xticks([])
    ax.set_yticks([])


def draw_keyframe(ax, image: np.ndarray, keyframe: KeyframeBoxes, label_map: dict[int, str],
                  proposals: np.ndarray | None = None, title: str | None = None) -> None:
    """A keyframe with its ground-truth boxes captioned by action names, and proposals (dashed,
    captioned with their scores) when given."""
    if proposals is not None and len(proposals):
        draw_boxes(ax, image, proposals[:, :4], [f"{s:.2f}" for s in proposals[:, 4]],
                   colour="tab:red", linestyle="--", fontsize=6)
    captions = ["\n".join(label_map.get(a, str(a)) for a in actions) for actions in keyframe.actions]
    draw_boxes(ax, image, keyframe.boxes, captions, colour="tab:green")
    if title:
        ax.set_title(title, fontsize=9)


def frame_strip(read_frame, video_id: str, timestamp: int, box: np.ndarray, clip_len: int = 8,
                frame_interval: int = 8, num_frames: int | None = None, title: str | None = None):
    """A row of the frames a ``clip_len x frame_interval`` clip samples around a keyframe, with
    the keyframe's box drawn on each so the motion relative to it shows. ``read_frame(video, index)``
    returns an (H, W, 3) image."""
    centre = keyframe_to_frame_index(timestamp)
    indices = clip_frame_indices(centre, clip_len, frame_interval, num_frames or centre + clip_len *
                                 frame_interval)
    fig, axes = plt.subplots(1, clip_len, figsize=(1.6 * clip_len, 1.9))
    for ax, index in zip(axes, indices):
        draw_boxes(ax, np.asarray(read_frame(video_id, int(index)), np.uint8), box[None], colour="yellow")
        ax.set_title(f"img_{index:05d}" + (" (key)" if index == centre else ""), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def class_count_bars(counts: pd.DataFrame, label_map: dict[int, str], ax=None):
    """Horizontal bars of box counts per class and split; ``counts`` has one row per class id
    (index) and one column per split. Bars are coloured by AVA group in the labels."""
    ax = ax or plt.subplots(figsize=(7, 0.35 * len(counts) + 1))[1]
    names = [label_map[i] for i in counts.index]
    y = np.arange(len(counts))
    height = 0.8 / len(counts.columns)
    for k, split in enumerate(counts.columns):
        ax.barh(y + k * height, counts[split], height=height, label=split)
    ax.set_yticks(y + 0.4 - height / 2, names)
    for tick, class_id in zip(ax.get_yticklabels(), counts.index):
        tick.set_color(GROUP_COLOURS[action_group(class_id)])
    ax.invert_yaxis()
    ax.set_xlabel("boxes with this action")
    ax.legend(title="split")
    return ax


def pr_curves(result, class_ids: Sequence[int] | None = None, ax=None):
    """Precision against recall of each class of an evaluation result (``stdet.evaluation``),
    the VOC envelope dashed; the legend gives each class's AP."""
    ax = ax or plt.subplots(figsize=(6, 4.5))[1]
    names = dict(zip(result.per_class["class_id"], result.per_class["name"]))
    aps = dict(zip(result.per_class["class_id"], result.per_class["ap"]))
    for class_id in class_ids if class_ids is not None else sorted(result.curves):
        curve = result.curves[class_id]
        if len(curve.recall) == 0:
            continue
        line, = ax.plot(curve.recall, curve.precision, lw=1.2,
                        label=f"{names[class_id]} (AP {100 * aps[class_id]:.1f})")
        envelope = np.maximum.accumulate(curve.precision[::-1])[::-1]
        ax.plot(curve.recall, envelope, ls="--", lw=0.8, color=line.get_color())
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize="small", loc="lower left")
    return ax


def ap_bars(result, ax=None):
    """Horizontal bars of AP per class, coloured by AVA group, with the mean as a line."""
    df = result.per_class.dropna(subset=["ap"])
    ax = ax or plt.subplots(figsize=(7, 0.3 * len(df) + 1))[1]
    y = np.arange(len(df))
    ax.barh(y, 100 * df["ap"], color=[GROUP_COLOURS[action_group(c)] for c in df["class_id"]])
    ax.set_yticks(y, df["name"])
    ax.invert_yaxis()
    ax.axvline(100 * result.map, color="k", ls="--", lw=1, label=f"mAP {100 * result.map:.1f}")
    ax.set_xlabel("AP (%)")
    ax.legend()
    return ax


def training_curves(log, axes=None):
    """Loss (per iteration, with a running mean) and val mAP (per epoch) from a training log:
    the path of ``log.jsonl``, its DataFrame (``stdet.read_log``, ``TrainResult.log``) or its
    records."""
    from .engine.logger import read_log

    if isinstance(log, (str, os.PathLike)):
        log = read_log(log)
    log = pd.DataFrame(log)
    modes = log["mode"] if "mode" in log else pd.Series(index=log.index, dtype=object)
    train, val = log[modes == "train"], log[modes == "val"]
    if axes is None:
        axes = plt.subplots(1, 2, figsize=(10, 3.5))[1]
    loss_ax, map_ax = axes
    if len(train):
        loss_ax.plot(train["step"], train["loss"], lw=0.6, alpha=0.4, label="loss")
        window = max(1, len(train) // 20)
        loss_ax.plot(train["step"], train["loss"].rolling(window, min_periods=1).mean(), lw=1.5,
                     label=f"running mean ({window})")
        loss_ax.legend()
    loss_ax.set_xlabel("iteration")
    loss_ax.set_ylabel("loss")
    if len(val):
        map_ax.plot(val["epoch"], 100 * val["mAP"], marker="o", label="mAP")
        for key in ("person_movement", "object_manipulation", "person_interaction"):
            if key in val and val[key].notna().any():
                map_ax.plot(val["epoch"], 100 * val[key], ls="--", lw=1, label=key.replace("_", " "))
        map_ax.legend(fontsize="small")
    map_ax.set_xlabel("epoch")
    map_ax.set_ylabel("val mAP (%)")
    return axes


def show_source(*objects, title: str | None = None):
    """The source code of functions, classes or methods, as highlighted Python for a notebook
    (an ``IPython.display.Markdown`` code block): the book shows the package's own code, so a
    change to the code changes the book.

    >>> import stdet
    >>> stdet.viz.show_source(stdet.models.Bottleneck3d)            # doctest: +SKIP
    >>> stdet.viz.show_source(stdet.models.SlowFast.forward)        # one method
    """
    import inspect
    import textwrap

    from IPython.display import Markdown

    parts = []
    for obj in objects:
        where = inspect.getsourcefile(obj) or ""
        module = getattr(inspect.getmodule(obj), "__name__", "")
        source = textwrap.dedent(inspect.getsource(obj)).rstrip()
        parts.append(f"# {module}.{getattr(obj, '__qualname__', '')}"
                     f"  ({os.path.basename(where)}:{inspect.getsourcelines(obj)[1]})\n{source}")
    heading = f"**{title}**\n\n" if title else ""
    return Markdown(heading + "```python\n" + "\n\n".join(parts) + "\n```")
