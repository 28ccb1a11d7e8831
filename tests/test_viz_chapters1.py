"""The book's tables and plots of runs: map_table, map_bars, ap_bars_with_references, zoo_scatter."""
import matplotlib
import numpy as np
import pandas as pd
import pytest

from stdet.data import ava_label_map, write_label_map
from stdet.evaluation import evaluate
from stdet.viz import ap_bars_with_references, map_bars, map_table, zoo_scatter

matplotlib.use("Agg")

METRICS = {"mAP": 0.5, "person_movement": 0.75, "object_manipulation": 0.25, "person_interaction": 0.5}


@pytest.fixture
def result(tmp_path):
    """stand (12): a hit, AP 1; walk (14): the hit ranked second, AP 0.5; talk to (79): AP 0."""
    write_label_map(tmp_path / "labels.pbtxt", ava_label_map([12, 14, 79]), form="item")
    (tmp_path / "gt.csv").write_text("v1,0902,0.1,0.1,0.4,0.9,12,0\n"
                                     "v1,0902,0.5,0.1,0.8,0.9,14,1\n"
                                     "v1,0902,0.5,0.1,0.8,0.9,79,1\n")
    (tmp_path / "pred.csv").write_text("v1,0902,0.1,0.1,0.4,0.9,12,0.9\n"
                                       "v1,0902,0.1,0.1,0.4,0.9,14,0.8\n"
                                       "v1,0902,0.5,0.1,0.8,0.9,14,0.6\n"
                                       "v1,0902,0.1,0.1,0.4,0.9,79,0.7\n")
    return evaluate(tmp_path / "gt.csv", tmp_path / "pred.csv", tmp_path / "labels.pbtxt")


class Trained:  # what stdet.train returns, as far as map_table reads it
    metrics = {**METRICS, "mAP": 0.625}


def test_map_table_reads_evaluations_training_results_and_records(result):
    table = map_table({"eval": result, "train": Trained(), "record": METRICS,
                       "partial": {"mAP": 0.1}})
    assert list(table.columns) == ["val mAP", "person movement", "object manipulation",
                                   "person interaction"]
    assert list(table.index) == ["eval", "train", "record", "partial"]
    assert table.loc["eval", "val mAP"] == pytest.approx(0.5)          # (1 + 0.5 + 0) / 3
    assert table.loc["eval", "person movement"] == pytest.approx(0.75)
    assert table.loc["eval", "person interaction"] == 0
    assert np.isnan(table.loc["eval", "object manipulation"])           # no such class here
    assert table.loc["train"].tolist() == [0.625, 0.75, 0.25, 0.5]
    assert table.loc["record"].tolist() == [0.5, 0.75, 0.25, 0.5]
    assert table.loc["partial", "val mAP"] == 0.1 and table.loc["partial"].isna().sum() == 3


def test_map_bars_draws_one_bar_per_run_and_column(result):
    ax = map_bars({"eval": result, "train": Trained()})
    heights = [p.get_height() for p in ax.patches]
    assert len(heights) == 8
    np.testing.assert_allclose(heights[4:], [62.5, 75, 25, 50])          # the second run, in %
    assert [t.get_text() for t in ax.get_xticklabels()][0] == "mAP"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["eval", "train"]


def test_ap_bars_with_references_puts_a_marker_on_each_drawn_class(result):
    frequency = pd.Series({12: 0.25, 14: 0.5, 79: 0.25})
    ax = ap_bars_with_references(result, {"frequency": frequency}, label="trained AP")
    assert [p.get_width() for p in ax.patches[:3]] == [100, 50, 0]       # bars in per_class order
    markers = ax.collections[0].get_offsets()
    np.testing.assert_allclose(markers, [[25, 0], [50, 1], [25, 2]])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == "trained AP: person movement" and legend[-1] == "frequency"
    table = pd.DataFrame({"before": [0.5, 0.0, 0.25], "frequency": frequency.to_numpy()},
                         index=[14, 79, 12])                               # any order of class ids
    ax = ap_bars_with_references(result, table)
    np.testing.assert_allclose(ax.collections[0].get_offsets(), [[25, 0], [50, 1], [0, 2]])
    assert [t.get_text() for t in ax.get_legend().get_texts()][-2:] == ["before", "frequency"]


def test_zoo_scatter_plots_each_family():
    table = pd.DataFrame({"config": ["slowonly_a", "slowfast_b", "slowfast_c", "other"],
                          "GFLOPs": [1.0, 2.0, 3.0, 4.0], "mAP": [20.0, 21.0, 22.0, 23.0]})
    ax = zoo_scatter(table, families=("slowonly", "slowfast"))
    assert [len(c.get_offsets()) for c in ax.collections] == [1, 2]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["slowonly", "slowfast"]
