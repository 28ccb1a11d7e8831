"""The evaluation chapter's plots: confusion_heatmap, draw_detections, stacked_fraction_bars."""
import doctest

import matplotlib
import numpy as np
import pandas as pd
import pytest

from stdet import viz
from stdet.viz import confusion_heatmap, draw_detections, stacked_fraction_bars

matplotlib.use("Agg")


@pytest.mark.parametrize("function", [confusion_heatmap, draw_detections, stacked_fraction_bars])
def test_docstring_examples(function):
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(function, function.__name__, globs=dict(vars(viz))):
        runner.run(test)
    assert runner.failures == 0 and runner.tries > 0


def test_confusion_heatmap_keeps_the_table_order_and_labels():
    table = pd.DataFrame([[0.7, 0.3], [0.0, 1.0]], index=["stand", "walk"], columns=["stand", "walk"])
    ax = confusion_heatmap(table, xlabel="predicted state", ylabel="true state", title="motion",
                           colour_label="share")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["stand", "walk"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["stand", "walk"]
    np.testing.assert_allclose(ax.images[0].get_array(), table.to_numpy())
    # a dark cell gets white text
    assert [t.get_color() for t in ax.texts] == ["white", "black", "black", "white"]
    assert ax.get_xlabel() == "predicted state" and ax.get_title() == "motion"
    assert ax.figure.axes[-1].get_ylabel() == "share"                  # the colour bar


def test_draw_detections_draws_each_box_once_with_its_best_actions():
    import matplotlib.pyplot as plt

    rows = pd.DataFrame({"x1": [0.1] * 4 + [0.5], "y1": [0.1] * 4 + [0.5], "x2": [0.4] * 4 + [0.9],
                         "y2": [0.9] * 5, "action": [7, 10, 12, 14, 99],
                         "score": [0.1, 0.4, 0.3, 0.2, 0.9]})
    names = {7: "jump", 10: "run", 12: "stand", 14: "walk"}
    ax = plt.subplots()[1]
    draw_detections(ax, np.zeros((100, 200, 3)), rows, names, top=2, title="v @ 902")
    # action 99 is not in the label map: its box is not drawn
    assert [t.get_text() for t in ax.texts] == ["run 0.40\nstand 0.30"]
    (box,) = ax.patches
    assert box.get_xy() == pytest.approx((20.0, 10.0)) and box.get_width() == pytest.approx(60.0)
    assert ax.get_title() == "v @ 902"


def test_stacked_fraction_bars_normalises_each_row():
    counts = pd.DataFrame({"true positive": [6, 1], "wrong action": [2, 3]}, index=["walk", "read"])
    ax = stacked_fraction_bars(counts, colours=["tab:green", "tab:orange"], xlabel="share", title="t")
    widths = [p.get_width() for p in ax.patches]
    assert widths == pytest.approx([0.75, 0.25, 0.25, 0.75])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["walk", "read"]
    assert ax.yaxis_inverted()                                         # the first row on top
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["true positive", "wrong action"]
