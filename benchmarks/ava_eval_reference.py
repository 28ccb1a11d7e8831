"""AVA frame-mAP computed by the reference implementations, for parity fixtures and benchmarks.

Three protocols, each driven the way its reference drives it:

``activitynet``
    ActivityNet's ``get_ava_performance.py`` behaviour: label map, exclusions, ground truth
    (class whitelist, no per-frame cap), detections (class whitelist, then the 50 highest-scoring
    rows of each ``"video,%04d"`` frame key, kept with a heap, then sorted by descending score),
    excluded frames skipped on both sides, all fed to the reference ``PascalDetectionEvaluator``.
    The driver here is our own (that script is not packaged anywhere); the evaluator it feeds is
    the one vendored in the ``slowfast==1.0`` wheel (``slowfast/utils/ava_evaluation/``), or any
    directory holding the same modules (``--evaluator-dir``, e.g. ActivityNet's ``Evaluation/ava``).

``mmaction2``
    MMAction2 1.2.0 ``mmaction/evaluation/functional/ava_utils.py::ava_eval``, with its own
    functions (``read_labelmap``, ``read_csv``, ``read_exclusions``, ``tpfp_single``,
    ``metrics.compute_precision_recall`` / ``compute_average_precision``) called in the same order
    as ``ava_eval`` calls them, but sequentially (no process pool) and keeping the per-class APs,
    which ``ava_eval`` only prints to 4 decimals. ``--check-ava-eval`` also runs ``ava_eval``
    itself and checks that its overall mAP equals ours.

``mmaction2-0.x``
    MMAction2 0.24.1, the evaluator behind the 0.x model zoo's AVA table: the steps of
    ``AVADataset.evaluate`` (``mmaction/datasets/ava_dataset.py``). The detections are first
    turned into the per-keyframe, per-class arrays a 0.x model returns (keyframes in the order of
    their first row of an evaluated class, each class's rows in file order; with custom classes,
    index ``i`` holds class ``custom_classes[i + 1]``, as the 0.x dataset lays them out) and
    written by 0.x's own ``results2csv`` (``mmaction/core/evaluation/ava_utils.py``: every
    float, box and score, as ``'%.3f'``); that file is evaluated by 0.x's ``ava_eval`` itself,
    with its default ``verbose=True`` (the call ``AVADataset.evaluate`` makes; only that path
    skips the excluded keyframes) and ``custom_classes=(0, *custom)``. The per-class APs are
    taken from the metrics dict its ``PascalDetectionEvaluator.evaluate`` returns (``ava_eval``
    only prints them); the overall mAP is ``ava_eval``'s return value.

The reference code is imported from throwaway environments, never copied (the two MMAction2
versions need one environment each)::

    python3 -m venv /tmp/evalenv
    /tmp/evalenv/bin/pip install --no-deps slowfast==1.0 mmaction2==1.2.0 numpy
    /tmp/evalenv/bin/python benchmarks/ava_eval_reference.py --protocol activitynet \\
        --gt gt.csv --pred pred.csv --label-map labels.pbtxt --exclude excluded.csv --json out.json
    python3 -m venv /tmp/mm0env
    /tmp/mm0env/bin/pip install --no-deps mmaction2==0.24.1 numpy
    /tmp/mm0env/bin/python benchmarks/ava_eval_reference.py --protocol mmaction2-0.x \\
        --gt gt.csv --pred pred.csv --label-map labels.pbtxt --exclude excluded.csv --json out.json

Importing ``slowfast`` or ``mmaction`` as packages would run their ``__init__`` (torch, mmengine,
...), so the needed modules are loaded from their files under stand-in parent packages
(``_ref_activitynet``, ``_ref_mmaction2``, ``_ref_mmaction2_0x``); only numpy is needed. The
references use numpy aliases removed in numpy 1.24/2.0 (``np.float``, ``np.bool``, ``np.int``,
``np.NAN``): this script sets them back on the numpy module before loading (a compatibility shim,
nothing else changes).

Output (stdout, or ``--json FILE``), the schema ``stdet eval --json`` writes::

    {"mAP": float|null, "per_class_ap": {"<id>": float|null, ...},
     "person_movement": float|null, "object_manipulation": float|null,
     "person_interaction": float|null,
     "protocol": "activitynet"|"mmaction2"|"mmaction2-0.x"}

and, for ``mmaction2-0.x`` only, ``"tied_classes": [id, ...]`` (the classes whose AP depends on
how equal scores are ordered: a 3-decimal score shared by a true and a false positive, which
0.x's ``np.argsort`` may put either way) and ``"numpy": "<version>"`` (the numpy that sorted them).

``per_class_ap`` has every class id of the label map (only the custom classes when given), null
where the reference gives NaN or leaves the class out. ``mAP`` is the reference's own mean; the
three group means are nan-means of the per-class APs over ids <= 14, 15..63 and >= 64 (null when
there is none). When the reference raises (MMAction2 raises ValueError on a box with x2 < x1 or
y2 < y1), the output is ``{"protocol": ..., "error": "<type>: <message>"}`` and the exit status 3.

When the reference modules cannot be found or loaded, the script says so and exits 0.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import heapq
import importlib
import importlib.util
import io
import json
import logging
import math
import sys
import types
from collections import defaultdict
from pathlib import Path

try:
    import numpy as np
except ImportError:  # pragma: no cover - depends on the environment
    np = None

ACTIVITYNET_CAPACITY = 50  # detections kept per frame by get_ava_performance.py
ANET_MODULES = ("standard_fields", "label_map_util", "np_box_list", "np_box_ops", "np_box_list_ops",
                "np_box_mask_list", "np_box_mask_list_ops", "np_mask_ops", "metrics",
                "per_image_evaluation", "object_detection_evaluation")
EXIT_REFERENCE_ERROR = 3
PROTOCOLS = ("activitynet", "mmaction2", "mmaction2-0.x")


class ReferenceUnavailable(Exception):
    """The reference modules could not be found or imported."""


# --------------------------------------------------------------------------------------------
# loading the reference modules from their files


def _numpy_compat_shim() -> None:
    """Give numpy back the aliases the reference code still uses (removed in numpy >= 1.24/2.0)."""
    for name, value in (("float", float), ("bool", bool), ("int", int), ("NAN", float("nan"))):
        try:
            getattr(np, name)
        except AttributeError:
            setattr(np, name, value)


def _package_dir(top: str, *parts: str) -> Path:
    """Directory of ``top/parts`` found without importing ``top`` (its __init__ is heavy)."""
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise ReferenceUnavailable(f"package {top!r} is not installed in {sys.executable}")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    if not path.is_dir():
        raise ReferenceUnavailable(f"{path} not found")
    return path


def _stand_in_package(name: str, directory: Path | None = None) -> types.ModuleType:
    """An empty package whose submodules are the files of ``directory`` (relative imports work);
    without a directory, an empty module for names the reference imports."""
    pkg = types.ModuleType(name)
    if directory is not None:
        pkg.__path__ = [str(directory)]
    pkg.__package__ = name
    sys.modules[name] = pkg
    return pkg


def _load(module: str, path: Path) -> types.ModuleType:
    if module in sys.modules:
        return sys.modules[module]
    if not path.is_file():
        raise ReferenceUnavailable(f"{path} not found")
    spec = importlib.util.spec_from_file_location(module, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[module] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as exc:
        del sys.modules[module]
        raise ReferenceUnavailable(f"cannot import {path}: {type(exc).__name__}: {exc}") from exc
    return mod


def load_activitynet(evaluator_dir: str | None = None) -> types.ModuleType:
    """The reference ``object_detection_evaluation`` module (by default slowfast's copy)."""
    if np is None:
        raise ReferenceUnavailable("numpy is not installed")
    _numpy_compat_shim()
    directory = Path(evaluator_dir) if evaluator_dir else _package_dir("slowfast", "utils",
                                                                       "ava_evaluation")
    name = "_ref_activitynet"
    pkg = sys.modules.get(name) or _stand_in_package(name, directory)
    for mod in ANET_MODULES:
        setattr(pkg, mod, _load(f"{name}.{mod}", directory / f"{mod}.py"))
    return pkg.object_detection_evaluation


def _load_ava_utils(name: str, directory: Path, helpers: tuple[str, ...]) -> types.ModuleType:
    """``DIRECTORY/ava_utils.py`` under the stand-in package ``name``, with the ``helpers`` of
    its ``ava_evaluation/`` loaded first."""
    if sys.modules.get(name) is None:
        _stand_in_package(name, directory)
        sub = _stand_in_package(f"{name}.ava_evaluation", directory / "ava_evaluation")
        for mod in helpers:
            setattr(sub, mod, _load(f"{name}.ava_evaluation.{mod}",
                                    directory / "ava_evaluation" / f"{mod}.py"))
    return _load(f"{name}.ava_utils", directory / "ava_utils.py")


def _reference_numpy() -> None:
    if np is None:
        raise ReferenceUnavailable("numpy is not installed")
    _numpy_compat_shim()


def load_mmaction2(mmaction_dir: str | None = None) -> types.ModuleType:
    """MMAction2's ``ava_utils`` module (with its ``ava_evaluation`` helpers)."""
    _reference_numpy()
    functional = (Path(mmaction_dir) / "evaluation" / "functional" if mmaction_dir
                  else _package_dir("mmaction", "evaluation", "functional"))
    return _load_ava_utils("_ref_mmaction2", functional, ("np_box_list", "np_box_ops", "metrics"))


MM0_MODULES = ("standard_fields", "metrics", "np_box_list", "np_box_ops", "per_image_evaluation",
               "object_detection_evaluation")


def load_mmaction2_0x(mmaction_dir: str | None = None) -> types.ModuleType:
    """MMAction2 0.x's ``core/evaluation/ava_utils`` module (with its ``ava_evaluation``)."""
    _reference_numpy()
    evaluation = (Path(mmaction_dir) / "core" / "evaluation" if mmaction_dir
                  else _package_dir("mmaction", "core", "evaluation"))
    return _load_ava_utils("_ref_mmaction2_0x", evaluation, MM0_MODULES)


# --------------------------------------------------------------------------------------------
# ActivityNet protocol: our driver with get_ava_performance.py's behaviour, reference evaluator


def _frame_key(video: str, timestamp: str) -> str:
    return "%s,%04d" % (video, int(timestamp))


def _anet_label_map(path: str) -> tuple[list[dict], set[int]]:
    categories, ids, name = [], set(), ""
    with open(path) as f:
        for line in f:
            if line.startswith("  name:"):
                name = line.split('"')[1]
            elif line.startswith("  id:") or line.startswith("  label_id:"):
                class_id = int(line.strip().split(" ")[-1])
                categories.append({"id": class_id, "name": name})
                ids.add(class_id)
    return categories, ids


def _anet_exclusions(path: str | None) -> set[str]:
    keys = set()
    if path:
        with open(path) as f:
            for row in csv.reader(f):
                assert len(row) == 2, f"expected 2 columns, got {row}"
                keys.add(_frame_key(row[0], row[1]))
    return keys


def _anet_read(path: str, whitelist: set[int], capacity: int):
    """Rows by frame key, each frame's rows sorted by descending score; at most ``capacity``
    rows a frame (0: no limit), the lowest scores pushed out of a min-heap as they come."""
    entries = defaultdict(list)
    with open(path) as f:
        for row in csv.reader(f):
            assert len(row) in (7, 8), f"wrong number of columns: {row}"
            key = _frame_key(row[0], row[1])
            x1, y1, x2, y2 = (float(v) for v in row[2:6])
            action = int(row[6])
            if whitelist and action not in whitelist:
                continue
            score = float(row[7]) if len(row) == 8 else 1.0
            item = (score, action, y1, x1, y2, x2)
            heap = entries[key]
            if capacity < 1 or len(heap) < capacity:
                heapq.heappush(heap, item)
            elif score > heap[0][0]:
                heapq.heapreplace(heap, item)
    frames = {}
    for key, heap in entries.items():
        ordered = sorted(heap, key=lambda t: -t[0])
        frames[key] = ([list(t[2:]) for t in ordered], [t[1] for t in ordered],
                       [t[0] for t in ordered])
    return frames


def run_activitynet(gt: str, pred: str, label_map: str, exclude: str | None = None,
                    custom_classes: list[int] | None = None,
                    evaluator_dir: str | None = None) -> tuple[dict, float]:
    """Per-class AP ``{id: float}`` (NaN kept) and the evaluator's mAP."""
    ode = load_activitynet(evaluator_dir)
    fields = sys.modules["_ref_activitynet.standard_fields"]
    categories, whitelist = _anet_label_map(label_map)
    if custom_classes:
        missing = set(custom_classes) - whitelist
        if missing:
            raise ValueError(f"custom classes {sorted(missing)} are not in the label map")
        whitelist = set(custom_classes)
        categories = [c for c in categories if c["id"] in whitelist]
    excluded = _anet_exclusions(exclude)
    evaluator = ode.PascalDetectionEvaluator(categories)

    inp, det = fields.InputDataFields, fields.DetectionResultFields
    for key, (boxes, labels, _) in _anet_read(gt, whitelist, 0).items():
        if key in excluded:
            continue
        evaluator.add_single_ground_truth_image_info(key, {
            inp.groundtruth_boxes: np.array(boxes, dtype=float),
            inp.groundtruth_classes: np.array(labels, dtype=int),
            inp.groundtruth_difficult: np.zeros(len(boxes), dtype=bool)})
    for key, (boxes, labels, scores) in _anet_read(pred, whitelist, ACTIVITYNET_CAPACITY).items():
        if key in excluded:
            continue
        evaluator.add_single_detected_image_info(key, {
            det.detection_boxes: np.array(boxes, dtype=float),
            det.detection_classes: np.array(labels, dtype=int),
            det.detection_scores: np.array(scores, dtype=float)})
    metrics = evaluator.evaluate()
    per_class = {}
    for cat in categories:
        value = metrics.get(f"PascalBoxes_PerformanceByCategory/AP@0.5IOU/{cat['name']}")
        per_class[cat["id"]] = float("nan") if value is None else float(value)
    return per_class, float(metrics["PascalBoxes_Precision/mAP@0.5IOU"])


# --------------------------------------------------------------------------------------------
# MMAction2 protocol: ava_eval's own steps, sequential, keeping per-class APs


def run_mmaction2(gt: str, pred: str, label_map: str, exclude: str | None = None,
                  custom_classes: list[int] | None = None, mmaction_dir: str | None = None,
                  check_ava_eval: bool = False) -> tuple[dict, float]:
    ava = load_mmaction2(mmaction_dir)
    metrics = sys.modules["_ref_mmaction2.ava_evaluation.metrics"]
    with open(label_map) as f:
        categories, whitelist = ava.read_labelmap(f)
    if custom_classes:
        # ava_eval receives [0] + custom classes (AVAMetric prepends the background) and drops [0]
        custom = list(custom_classes)
        assert set(custom).issubset(set(whitelist)), \
            f"custom classes {sorted(set(custom) - set(whitelist))} are not in the label map"
        whitelist = custom
        categories = [c for c in categories if c["id"] in custom]
    with open(gt) as f:
        gt_boxes, gt_labels, _ = ava.read_csv(f, whitelist)
    if exclude is not None:
        with open(exclude) as f:
            excluded = ava.read_exclusions(f)
    else:
        excluded = list()
    with open(pred) as f:
        boxes, labels, scores = ava.read_csv(f, whitelist)

    all_gt_labels = np.concatenate(list(gt_labels.values()))
    gt_count = {k: np.sum(all_gt_labels == k) for k in whitelist}
    tups = [(gt_boxes[k], gt_labels[k], boxes[k], labels[k], scores[k])
            for k in gt_boxes if k not in excluded]
    rets = list(map(ava.tpfp_single, tups))

    cls_scores, cls_tpfp = defaultdict(list), defaultdict(list)
    for score, tpfp in rets:
        for k in score:
            cls_scores[k].append(score[k])
            cls_tpfp[k].append(tpfp[k])
    per_class = {}
    for k in cls_scores:
        precision, recall = metrics.compute_precision_recall(
            np.concatenate(cls_scores[k]), np.concatenate(cls_tpfp[k]), gt_count[k])
        ap = metrics.compute_average_precision(precision, recall)
        assert len([c for c in categories if c["id"] == k]) == 1
        per_class[k] = float(ap)
    overall = float(np.nanmean(list(per_class.values()))) if per_class else float("nan")

    if check_ava_eval:
        with contextlib.redirect_stdout(io.StringIO()):
            res = ava.ava_eval(pred, "mAP", label_map, gt, exclude, verbose=False,
                               custom_classes=None if not custom_classes
                               else [0] + list(custom_classes))
        theirs = float(res["overall"])
        if not (theirs == overall or (math.isnan(theirs) and math.isnan(overall))):
            raise AssertionError(f"ava_eval overall mAP {theirs!r} != per-class mean {overall!r}")
    # classes left out by the reference are absent here; the caller turns them into null
    return per_class, overall


# --------------------------------------------------------------------------------------------
# MMAction2 0.x protocol: AVADataset.evaluate's steps, with 0.x's results2csv and ava_eval


class _Keyframes:
    """What 0.x's ``results2csv`` reads of a dataset: ``len()`` and ``video_infos``."""

    def __init__(self, keys: list[tuple[str, int]]):
        self.video_infos = [{"video_id": v, "timestamp": t} for v, t in keys]

    def __len__(self) -> int:
        return len(self.video_infos)


def _model_outputs(pred: str, custom: tuple | None,
                   evaluated: set[int]) -> tuple[_Keyframes, list]:
    """The detections of ``pred`` as a 0.x model returns them: per keyframe, a list indexed by
    class index of ``(n, 5)`` arrays ``x1, y1, x2, y2, score`` (rows in file order). Class index
    ``i`` is class ``i + 1``, or ``custom[i + 1]`` with custom classes, whose model has no output
    for the other classes (their rows are left out). The keyframes come in the order of their
    first row of an ``evaluated`` class (then those without one): 0.x writes the keyframes in the
    dataset's order, which is then the order its evaluator meets them in (only ties across
    keyframes depend on it)."""
    frames: dict[tuple[str, int], dict[int, list]] = {}
    first_evaluated: dict[tuple[str, int], int] = {}
    with open(pred) as f:
        for line, row in enumerate(csv.reader(f)):
            assert len(row) in (7, 8), f"wrong number of columns: {row}"
            key = (row[0], int(row[1]))
            action = int(row[6])
            values = [float(v) for v in row[2:6]] + [float(row[7]) if len(row) == 8 else 1.0]
            frames.setdefault(key, {}).setdefault(action, []).append(values)
            if action in evaluated:
                first_evaluated.setdefault(key, line)
    keys = sorted(frames, key=lambda k: first_evaluated.get(k, math.inf))  # stable: file order
    frames = {k: frames[k] for k in keys}
    if custom is not None:
        num_outputs = len(custom) - 1
        index = {c: i for i, c in enumerate(custom[1:])}
    else:
        num_outputs = max((a for rows in frames.values() for a in rows), default=0)
        index = {a: a - 1 for rows in frames.values() for a in rows if a >= 1}
    results = []
    for rows in frames.values():
        per_class = [np.zeros((0, 5), dtype=np.float64) for _ in range(num_outputs)]
        for action, values in rows.items():
            if action in index:
                per_class[index[action]] = np.array(values, dtype=np.float64)
        results.append(per_class)
    return _Keyframes(list(frames)), results


def run_mmaction2_0x(gt: str, pred: str, label_map: str, exclude: str | None = None,
                     custom_classes: list[int] | None = None,
                     mmaction_dir: str | None = None) -> tuple[dict, float]:
    """Per-class AP ``{id: float}`` (NaN kept) and ``ava_eval``'s mAP."""
    import tempfile

    ava = load_mmaction2_0x(mmaction_dir)
    with open(label_map) as f:
        _, whitelist = ava.read_labelmap(f)
    custom = None
    if custom_classes:  # what AVADataset.__init__ checks and keeps
        assert 0 not in custom_classes
        missing = sorted(set(custom_classes) - set(whitelist))
        assert not missing, f"custom classes {missing} are not in the label map"
        custom = tuple([0] + list(custom_classes))
    dataset, results = _model_outputs(pred, custom, set(custom[1:] if custom else whitelist))

    # keep the per-class APs that ava_eval only prints: its evaluator's evaluate(), wrapped
    captured = {}
    evaluator = ava.det_eval.PascalDetectionEvaluator
    evaluate = evaluator.evaluate

    def capturing(self):
        captured["metrics"] = evaluate(self)
        captured["categories"] = self._categories
        captured["tied"] = _tied_classes(self._evaluation)
        return captured["metrics"]

    with tempfile.TemporaryDirectory() as tmp:
        written = str(Path(tmp) / "AVA_result.csv")
        ava.results2csv(dataset, results, written, custom)
        evaluator.evaluate = capturing
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                returned = ava.ava_eval(written, "mAP", label_map, gt, exclude,
                                        custom_classes=custom)
        finally:
            evaluator.evaluate = evaluate
    metrics = captured["metrics"]
    per_class = {}
    for cat in captured["categories"]:
        value = metrics.get(f"PerformanceByCategory/AP@0.5IOU/{cat['name']}")
        per_class[cat["id"]] = float("nan") if value is None else float(value)
    overall = float(returned["mAP@0.5IOU"])
    assert overall == float(metrics["mAP@0.5IOU"]) or math.isnan(overall)
    return per_class, overall, captured["tied"]


def _tied_classes(evaluation) -> list[int]:
    """Class ids whose AP depends on how equal scores are ordered: a score shared by a true and a
    false positive (the per-image matching takes ties in file order; only the class ranking,
    numpy's unstable argsort, can put either first)."""
    tied = []
    for index, (scores, labels) in enumerate(zip(evaluation.scores_per_class,
                                                 evaluation.tp_fp_labels_per_class)):
        if not scores:
            continue
        scores, labels = np.concatenate(scores), np.concatenate(labels)
        if (evaluation.num_gt_instances_per_class[index] > 0
                and any(len(set(labels[scores == value].tolist())) > 1
                        for value in np.unique(scores))):
            tied.append(index + evaluation.label_id_offset)
    return tied


# --------------------------------------------------------------------------------------------


def _nan_to_none(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def summarize(protocol: str, per_class: dict, overall: float, class_ids: list[int]) -> dict:
    aps = {i: per_class.get(i, float("nan")) for i in class_ids}

    # group means as numpy's nanmean computes them (as both references do)
    def group_np(lo: int, hi: int):
        values = [v for i, v in aps.items() if lo <= i <= hi]
        if not values or all(math.isnan(v) for v in values):
            return None
        return float(np.nanmean(np.array(values, dtype=float)))

    return {
        "mAP": _nan_to_none(overall),
        "per_class_ap": {str(i): _nan_to_none(aps[i]) for i in class_ids},
        "person_movement": group_np(0, 14),
        "object_manipulation": group_np(15, 63),
        "person_interaction": group_np(64, 10 ** 9),
        "protocol": protocol,
    }


def label_map_ids(path: str) -> list[int]:
    return [c["id"] for c in _anet_label_map(path)[0]]


def evaluate(protocol: str, gt: str, pred: str, label_map: str, exclude: str | None = None,
             custom_classes: list[int] | None = None, evaluator_dir: str | None = None,
             mmaction_dir: str | None = None, check_ava_eval: bool = False) -> dict:
    """The JSON-ready result of one protocol.

    Raises ReferenceUnavailable, or whatever the reference raises on the inputs."""
    if protocol == "activitynet":
        per_class, overall = run_activitynet(gt, pred, label_map, exclude, custom_classes,
                                             evaluator_dir)
    elif protocol == "mmaction2":
        per_class, overall = run_mmaction2(gt, pred, label_map, exclude, custom_classes,
                                           mmaction_dir, check_ava_eval)
    elif protocol == "mmaction2-0.x":
        per_class, overall, tied = run_mmaction2_0x(gt, pred, label_map, exclude, custom_classes,
                                                    mmaction_dir)
    else:
        raise ValueError(f"unknown protocol {protocol!r}")
    ids = label_map_ids(label_map)
    if custom_classes:
        ids = [i for i in ids if i in set(custom_classes)]
    result = summarize(protocol, per_class, overall, ids)
    if protocol == "mmaction2-0.x":  # its scores have 3 decimals: say where ties matter
        result["tied_classes"] = sorted(tied)
        result["numpy"] = np.__version__
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=PROTOCOLS, default="activitynet")
    parser.add_argument("--gt", required=True, help="ground-truth CSV")
    parser.add_argument("--pred", required=True, help="detections CSV (with scores)")
    parser.add_argument("--label-map", required=True, help="pbtxt label map")
    parser.add_argument("--exclude", help="excluded timestamps CSV")
    parser.add_argument("--custom-classes", help="comma-separated class ids, e.g. 3,6,10")
    parser.add_argument("--json", help="write the result here instead of stdout")
    parser.add_argument("--evaluator-dir", help="directory of ActivityNet's evaluator modules "
                        "(default: slowfast's utils/ava_evaluation)")
    parser.add_argument("--mmaction-dir", help="the mmaction package directory (default: the "
                        "installed one; 1.x for mmaction2, 0.x for mmaction2-0.x)")
    parser.add_argument("--check-ava-eval", action="store_true",
                        help="mmaction2: also run ava_eval itself and compare the overall mAP")
    args = parser.parse_args(argv)
    custom = ([int(v) for v in args.custom_classes.split(",") if v.strip()]
              if args.custom_classes else None)
    logging.disable(logging.WARNING)  # the reference evaluator logs per-image warnings

    try:
        result = evaluate(args.protocol, args.gt, args.pred, args.label_map, args.exclude, custom,
                          args.evaluator_dir, args.mmaction_dir, args.check_ava_eval)
        status = 0
    except ReferenceUnavailable as exc:
        print(f"ava_eval_reference: skipped, reference not available: {exc}", file=sys.stderr)
        return 0
    except (ValueError, AssertionError) as exc:
        if isinstance(exc, AssertionError) and "ava_eval overall" in str(exc):
            raise
        result = {"protocol": args.protocol, "error": f"{type(exc).__name__}: {exc}"}
        print(f"ava_eval_reference: the reference raised {result['error']}", file=sys.stderr)
        status = EXIT_REFERENCE_ERROR
    text = json.dumps(result, indent=1) + "\n"
    if args.json:
        Path(args.json).write_text(text)
    else:
        sys.stdout.write(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
