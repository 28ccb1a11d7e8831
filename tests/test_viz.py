"""Plots of training logs."""
import matplotlib
import numpy as np

import stdet
from stdet.engine.logger import JsonlLogger, read_records
from stdet.viz import training_curves

matplotlib.use("Agg")


def test_training_curves_from_a_log(tmp_path):
    log = JsonlLogger(tmp_path / "log.jsonl")
    for step in range(1, 11):
        log.log(mode="train", epoch=1 + (step > 5), iter=step, step=step, loss=1.0 / step, lr=0.1)
    log.log(mode="val", epoch=1, mAP=0.2, person_movement=0.3, object_manipulation=float("nan"),
            person_interaction=0.1)
    log.log(mode="val", epoch=2, mAP=0.4, person_movement=0.5, object_manipulation=float("nan"),
            person_interaction=0.3)
    log.close()
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write('{"mode": "train", "ste')          # a line cut by a crash is skipped
    records = read_records(tmp_path / "log.jsonl")
    assert len(records) == 12 and records[-1]["object_manipulation"] is None
    log = stdet.read_log(tmp_path / "log.jsonl")             # the same records as a DataFrame
    assert len(log) == 12 and list(log["mode"]).count("val") == 2
    assert np.isnan(log["object_manipulation"].iloc[-1]) and log["loss"].iloc[9] == 0.1
    loss_ax, map_ax = training_curves(tmp_path / "log.jsonl")
    np.testing.assert_allclose(loss_ax.lines[0].get_ydata(), [1.0 / s for s in range(1, 11)])
    assert list(map_ax.lines[0].get_ydata()) == [20.0, 40.0]
    assert [l.get_label() for l in map_ax.lines] == ["mAP", "person movement", "person interaction"]
