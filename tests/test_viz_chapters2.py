"""The book's per-class comparison plot (LFB and custom-classes chapters): ap_comparison_bars."""
import matplotlib
import numpy as np
import pandas as pd

from stdet.viz import ap_comparison_bars

matplotlib.use("Agg")


def test_ap_comparison_bars_draws_one_bar_per_class_and_model_and_the_references():
    aps = pd.DataFrame({"no bank": [0.5, 0.25, np.nan], "LFB-nl": [0.75, 0.5, 1.0]},
                       index=["walk", "read", "text"])
    frequency = pd.Series([0.2, 0.1], index=["read", "walk"])   # another order, one class missing
    ax = ap_comparison_bars(aps, {"frequency": frequency})
    assert [t.get_text() for t in ax.get_yticklabels()] == ["walk", "read", "text"]
    assert ax.yaxis_inverted()                                    # the first class on top
    bars = ax.patches
    assert len(bars) == 6
    widths = [b.get_width() for b in bars]
    assert widths[:2] == [50, 25] and np.isnan(widths[2]) and widths[3:] == [75, 50, 100]
    # the two bars of a class sit side by side around its row
    assert np.isclose(bars[0].get_y() + bars[0].get_height(), bars[3].get_y())
    marks = ax.collections[0].get_offsets()
    assert np.allclose(marks[:2], [[10, 0], [20, 1]])       # walk 0.1, read 0.2
    assert len(marks) == 3 and not np.isfinite(np.ma.filled(marks[2, 0], np.nan))  # text: none
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"no bank", "LFB-nl", "frequency"}


def test_ap_comparison_bars_without_references_draws_on_a_given_axis():
    import matplotlib.pyplot as plt

    _, ax = plt.subplots()
    aps = pd.DataFrame({"model": [0.4]}, index=["stand"])
    assert ap_comparison_bars(aps, ax=ax) is ax
    assert [b.get_width() for b in ax.patches] == [40]
    assert len(ax.collections) == 0
