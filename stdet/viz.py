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
    >>> stdet.viz.show_source(stdet.models.SlowFast.forward)        # doctest: +SKIP
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


AVA_GROUPS = ("person_movement", "object_manipulation", "person_interaction")


def map_table(results) -> pd.DataFrame:
    """Val mAP and the mean AP of each AVA group, one row per run of ``{label: run}``.

    A run is an evaluation result (``.map`` and ``.group_map``: :func:`stdet.test`,
    :func:`stdet.evaluate`), a training result (``.metrics``: :func:`stdet.train`) or a mapping
    with the keys ``mAP``, ``person_movement``, ... (a val record of a log). Columns: ``val mAP``,
    ``person movement``, ``object manipulation``, ``person interaction``.

    >>> map_table({"run": {"mAP": 0.5, "person_movement": 0.75, "object_manipulation": 0.25,
    ...                    "person_interaction": 0.5}}).loc["run"].tolist()
    [0.5, 0.75, 0.25, 0.5]
    """
    rows = {}
    for label, run in results.items():
        if hasattr(run, "group_map"):
            values = run.metrics
        else:
            values = getattr(run, "metrics", run)
        rows[label] = {"val mAP": values["mAP"],
                       **{g.replace("_", " "): values.get(g, np.nan) for g in AVA_GROUPS}}
    return pd.DataFrame.from_dict(rows, orient="index")


def map_bars(results, ax=None):
    """Grouped bars of :func:`map_table` (%): for val mAP and each group mean, one bar per run.

    >>> ax = map_bars({"untrained": untrained, "trained": run})   # doctest: +SKIP
    """
    table = 100 * map_table(results)
    ax = ax or plt.subplots(figsize=(10, 4))[1]
    x = np.arange(len(table.columns))
    width = 0.8 / len(table)
    for i, (label, row) in enumerate(table.iterrows()):
        ax.bar(x + i * width, row.to_numpy(), width, label=label)
    ax.set_xticks(x + width * (len(table) - 1) / 2, ["mAP", *table.columns[1:]])
    ax.set_ylabel("val AP (%)")
    ax.legend(fontsize="small", ncol=2)
    return ax


def ap_bars_with_references(result, references: dict[str, pd.Series] | pd.DataFrame,
                            label: str = "AP", ax=None):
    """:func:`ap_bars` of ``result`` (bars labelled ``label`` in the legend of group colours) with,
    per class, a marker for each reference: a Series of APs (fractions) indexed by class id, e.g.
    an untrained model's AP or the class's frequency among the boxes (the AP of a random score);
    ``references`` maps legend labels to them, or is a DataFrame with one column each.

    >>> refs = {"untrained AP": untrained.per_class.set_index("class_id")["ap"]}  # doctest: +SKIP
    >>> ax = ap_bars_with_references(trained, refs, label="trained AP")   # doctest: +SKIP
    """
    import itertools

    from matplotlib.patches import Patch

    ax = ap_bars(result, ax=ax)
    classes = result.per_class.dropna(subset=["ap"])["class_id"]   # the rows ap_bars draws
    y = np.arange(len(classes))
    styles = [dict(marker="o", facecolors="none", edgecolors="k"),
              dict(marker="|", s=300, color="k"), dict(marker="x", color="k")]
    for (name, values), style in zip(references.items(), itertools.cycle(styles)):
        ax.scatter(100 * classes.map(values).to_numpy(float), y, label=name, **style)
    handles, _ = ax.get_legend_handles_labels()
    groups = [Patch(color=colour, label=f"{label}: {group.lower().replace('_', ' ')}")
              for group, colour in GROUP_COLOURS.items()]
    ax.legend(handles=groups + handles, fontsize="small", loc="upper left",
              bbox_to_anchor=(1.01, 1))
    return ax


def zoo_scatter(table: pd.DataFrame, families: Sequence[str] = ("slowonly", "slowfast", "lfb"),
                ax=None):
    """Published mAP against GFLOPs of the zoo's configs (a ``stdet.zoo.table()``), one colour per
    family: the configs whose name starts with it.

    >>> ax = zoo_scatter(stdet.zoo.table())                        # doctest: +SKIP
    """
    ax = ax or plt.subplots(figsize=(9, 5.5))[1]
    for family in families:
        rows = table[table["config"].str.startswith(family)]
        ax.scatter(rows["GFLOPs"], rows["mAP"], label=family, s=40)
    ax.set_xlabel("GFLOPs (multiply-adds) at the test input")
    ax.set_ylabel("published frame-mAP (%)")
    ax.legend()
    ax.grid(alpha=0.3)
    return ax


def ap_comparison_bars(aps: pd.DataFrame, references: dict[str, pd.Series] | None = None,
                       ax=None):
    """Per-class APs of several models side by side: horizontal bars (%), one row per class
    (``aps``' index, top to bottom) and one bar per column (a model, e.g. runs with and without
    a feature bank); ``references`` adds a black marker per class for each Series of APs indexed
    like ``aps`` (e.g. the class's frequency among the boxes: the AP of a random ranking).

    >>> aps = pd.DataFrame({"a": [0.5, 0.25], "b": [0.75, 0.5]}, index=["walk", "run"])
    >>> ax = ap_comparison_bars(aps, {"frequency": pd.Series([0.1, 0.2], index=aps.index)})
    >>> len(ax.patches), [t.get_text() for t in ax.get_yticklabels()]
    (4, ['walk', 'run'])
    """
    ax = ax or plt.subplots(figsize=(9, 1 + 0.45 * len(aps)), layout="constrained")[1]
    y = np.arange(len(aps))
    height = 0.8 / len(aps.columns)
    for k, model in enumerate(aps.columns):
        ax.barh(y + (k - (len(aps.columns) - 1) / 2) * height, 100 * aps[model].to_numpy(float),
                height=height, label=model)
    for name, values in (references or {}).items():
        ax.scatter(100 * values.reindex(aps.index).to_numpy(float), y, marker="|", s=400,
                   color="k", label=name)
    ax.set_yticks(y, aps.index)
    ax.invert_yaxis()
    ax.set_xlabel("val AP (%)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    return ax


def confusion_heatmap(table: pd.DataFrame, xlabel: str = "predicted", ylabel: str = "true",
                      title: str | None = None, colour_label: str = "fraction of the true class",
                      ax=None):
    """A confusion matrix as a heatmap on a 0..1 scale, each cell's value written in it, with a
    colour bar: ``table`` has one row per true class and one column per predicted class, e.g.
    ``pd.crosstab(true, predicted, normalize="index")`` (the fraction of each true class).

    >>> import pandas as pd
    >>> table = pd.crosstab(pd.Series(["a", "a", "b"]), pd.Series(["a", "b", "b"]), normalize="index")
    >>> ax = confusion_heatmap(table)
    >>> [t.get_text() for t in ax.texts]
    ['0.50', '0.50', '0.00', '1.00']
    """
    ax = ax or plt.subplots(figsize=(5, 4.2))[1]
    values = table.to_numpy(float)
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(values.shape[1]), [str(c) for c in table.columns])
    ax.set_yticks(range(values.shape[0]), [str(i) for i in table.index])
    for (i, j), value in np.ndenumerate(values):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center",
                color="white" if value > 0.6 else "black")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.figure.colorbar(image, ax=ax, label=colour_label)
    return ax


def draw_detections(ax, image: np.ndarray, rows: pd.DataFrame, label_map: dict[int, str],
                    top: int = 3, title: str | None = None) -> None:
    """A keyframe with the boxes of its results rows (columns ``x1, y1, x2, y2, action, score``,
    normalised boxes, one row per (box, action) as in the results CSV), each box drawn once and
    captioned with its ``top`` best-scoring actions of ``label_map`` and their scores.

    >>> import numpy as np, pandas as pd, matplotlib.pyplot as plt
    >>> rows = pd.DataFrame({"x1": [0.1, 0.1, 0.5], "y1": [0.1, 0.1, 0.5], "x2": [0.4, 0.4, 0.9],
    ...                      "y2": [0.9, 0.9, 0.9], "action": [12, 14, 12], "score": [0.2, 0.7, 0.5]})
    >>> ax = plt.subplots()[1]
    >>> draw_detections(ax, np.zeros((60, 80, 3)), rows, {12: "stand", 14: "walk"})
    >>> [t.get_text() for t in ax.texts]
    ['walk 0.70\\nstand 0.20', 'stand 0.50']
    """
    rows = rows[rows["action"].isin(list(label_map))]
    boxes, captions = [], []
    for box, group in rows.groupby(["x1", "y1", "x2", "y2"], sort=False):
        best = group.nlargest(top, "score")
        boxes.append(box)
        captions.append("\n".join(f"{label_map[a]} {s:.2f}" for a, s in zip(best["action"], best["score"])))
    draw_boxes(ax, image, np.array(boxes, float).reshape(-1, 4), captions, colour="tab:red")
    if title:
        ax.set_title(title, fontsize=9)


def stacked_fraction_bars(counts: pd.DataFrame, colours: Sequence[str] | None = None,
                          xlabel: str = "fraction", title: str | None = None, ax=None):
    """Horizontal bars, one per row of ``counts`` (e.g. a class) in the table's order from the
    top, each split into its columns' shares of the row's total (e.g. kinds of detections); the
    legend, outside on the right, names the columns. Returns the axes.

    >>> import pandas as pd
    >>> ax = stacked_fraction_bars(pd.DataFrame({"right": [3, 1], "wrong": [1, 1]}, index=["a", "b"]))
    >>> [round(float(p.get_width()), 2) for p in ax.patches]
    [0.75, 0.5, 0.25, 0.5]
    """
    fractions = counts.div(counts.sum(axis=1), axis=0)
    ax = fractions.plot.barh(stacked=True, color=colours, ax=ax or plt.subplots(figsize=(9, 4))[1])
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    return ax
