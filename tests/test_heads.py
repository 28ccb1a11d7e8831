"""The AVA RoI head, its loss, RoI assignment and sampling, the RoI extractor and the detector.

Each piece is held to an independent reference written in this file (Python loops over floats, or
torch functional ops on the module's own weights), following MMAction2's AVA detector:

* ``action_loss`` / ``recall_precision``: ``BBoxHeadAVA.loss`` and ``multi_label_accuracy``
  (class 0 and RoIs without an action dropped, focal form, precision denominator + 1e-6);
* ``box_iou`` / ``assign_labels``: ``MaxIoUAssignerAVA`` with pos = neg = min_pos IoU 0.9 and
  ``gt_max_assign_all``;
* ``sample_rois``: mmdet's ``RandomSampler(num=32, pos_fraction=1, neg_pos_ub=-1,
  add_gt_as_proposals=True)``: proposals are assigned among themselves, each ground-truth box is
  added as its own positive;
* ``BBoxHeadAVA``, ``ACRNHead``, ``RoIExtractor3D`` (``SingleRoIExtractor3D``) and the
  ``ActionDetector`` that chains them.
"""
from __future__ import annotations

import copy
import math
import random
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from stdet.models import (ACRNHead, ActionDetector, BBoxHeadAVA, RoIExtractor3D, SlowOnly,
                          action_loss, assign_labels, box_iou, boxes_to_rois, build_detector,
                          recall_precision, roi_align, sample_rois)
from stdet.models.losses import positive_rows

# --------------------------------------------------------------------------- references


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def ref_action_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 1.0,
                    gamma: float = 0.0) -> float:
    """Mean focal BCE over the kept entries, in float64 Python loops."""
    total, count = 0.0, 0
    for row_x, row_y in zip(logits.tolist(), targets.tolist()):
        row_x, row_y = row_x[1:], row_y[1:]               # class 0 is not an action
        if sum(row_y) <= 0:                               # a negative RoI: not in the loss
            continue
        for x, y in zip(row_x, row_y):
            p, q = _sigmoid(x), _sigmoid(-x)              # q = 1 - p without cancellation
            bce = -(y * math.log(p) + (1.0 - y) * math.log(q))
            total += alpha * (1.0 - math.exp(-bce)) ** gamma * bce
            count += 1
    return total / count if count else 0.0


def ref_action_loss_torch(logits: torch.Tensor, targets: torch.Tensor, alpha: float,
                          gamma: float) -> torch.Tensor:
    """The same with elementwise torch ops (for autograd), one kept entry at a time."""
    terms = []
    for i in range(logits.shape[0]):
        if targets[i, 1:].sum() <= 0:
            continue
        for j in range(1, logits.shape[1]):
            x, y = logits[i, j], targets[i, j]
            bce = -(y * torch.log(torch.sigmoid(x)) + (1 - y) * torch.log(torch.sigmoid(-x)))
            terms.append(alpha * (1 - torch.exp(-bce)) ** gamma * bce)
    return torch.stack(terms).mean()


def ref_recall_precision(logits: torch.Tensor, targets: torch.Tensor, topk=(3, 5),
                         thr: float = 0.5) -> dict[str, float]:
    rows = [(x[1:], y[1:]) for x, y in zip(logits.tolist(), targets.tolist()) if sum(y[1:]) > 0]
    if not rows:
        return {}

    def rate(choose) -> tuple[float, float]:
        recalls, precisions = [], []
        for x, y in rows:
            actual = {j for j, v in enumerate(y) if v > 0.5}
            chosen = choose(x)
            correct = len(chosen & actual)
            recalls.append(correct / len(actual))
            precisions.append(correct / (len(chosen) + 1e-6))
        return sum(recalls) / len(rows), sum(precisions) / len(rows)

    out = {}
    out[f"recall@thr={thr}"], out[f"prec@thr={thr}"] = rate(
        lambda x: {j for j, v in enumerate(x) if _sigmoid(v) > thr})
    for k in topk:
        out[f"recall@top{k}"], out[f"prec@top{k}"] = rate(
            lambda x, k=k: set(sorted(range(len(x)), key=lambda j: -x[j])[:k]))
    return out


def ref_iou(a, b) -> float:
    """IoU of two (x1, y1, x2, y2) boxes (area (x2-x1)*(y2-y1)); 0 for an empty union."""
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def ref_assign(proposals: torch.Tensor, gt_boxes: torch.Tensor, pos_iou: float = 0.9
               ) -> tuple[list[int], bool]:
    """MaxIoUAssignerAVA: the gt index of each proposal (-1: negative), and whether the
    "each gt claims its best proposals" step changed anything."""
    props, gts = proposals.tolist(), gt_boxes.tolist()
    if not props or not gts:
        return [-1] * len(props), False
    iou = [[ref_iou(g, p) for p in props] for g in gts]                    # (G, P)
    assigned = []
    for j in range(len(props)):
        column = [iou[i][j] for i in range(len(gts))]
        best = max(column)
        assigned.append(column.index(best) if best >= pos_iou else -1)    # first index on ties
    first = list(assigned)
    for i in range(len(gts)):                                             # ascending: last wins
        best = max(iou[i])
        if best >= pos_iou:
            for j in range(len(props)):
                if iou[i][j] == best:
                    assigned[j] = i
    return assigned, assigned != first


def ref_labels(assigned: list[int], gt_labels: torch.Tensor) -> torch.Tensor:
    out = gt_labels.new_zeros((len(assigned), gt_labels.shape[1]))
    for j, i in enumerate(assigned):
        if i >= 0:
            out[j] = gt_labels[i]
    return out


# --------------------------------------------------------------------------- helpers


def multi_hot(n: int, num_classes: int, rng: random.Random, max_pos: int = 3) -> torch.Tensor:
    """``n`` rows, each with 1..max_pos positives among classes 1..num_classes-1."""
    out = torch.zeros(n, num_classes)
    for i in range(n):
        for c in rng.sample(range(1, num_classes), rng.randint(1, max_pos)):
            out[i, c] = 1.0
    return out


def random_box(rng: random.Random, size: float = 400.0) -> list[float]:
    x1, y1 = rng.uniform(0, size * 0.6), rng.uniform(0, size * 0.6)
    return [x1, y1, x1 + rng.uniform(20, size * 0.4), y1 + rng.uniform(20, size * 0.4)]


def jitter(box: list[float], rng: random.Random, scale: float) -> list[float]:
    w, h = box[2] - box[0], box[3] - box[1]
    return [box[0] + rng.uniform(-scale, scale) * w, box[1] + rng.uniform(-scale, scale) * h,
            box[2] + rng.uniform(-scale, scale) * w, box[3] + rng.uniform(-scale, scale) * h]


def random_scene(seed: int, num_gts: int = 4, num_classes: int = 12):
    """Ground truth with some heavily overlapping pairs, and proposals around it: exact copies,
    jitters whose IoU lies on both sides of 0.9, exact duplicates, and unrelated boxes."""
    rng = random.Random(seed)
    gts = [random_box(rng)]
    while len(gts) < num_gts:
        # half of the boxes are near-copies of an earlier one (IoU ~0.9-0.97), so proposals
        # can pass 0.9 with two ground-truth boxes at once
        gts.append(jitter(rng.choice(gts), rng, 0.015) if rng.random() < 0.5 else random_box(rng))
    props = []
    for g in gts:
        if rng.random() < 0.5:
            props.append(list(g))
        props += [jitter(g, rng, rng.choice([0.005, 0.015, 0.025, 0.04])) for _ in range(6)]
    props += [random_box(rng) for _ in range(5)]
    props += [list(p) for p in rng.sample(props, 4)]                       # exact duplicates
    rng.shuffle(props)
    return (torch.tensor(props, dtype=torch.float64), torch.tensor(gts, dtype=torch.float64),
            multi_hot(num_gts, num_classes, rng))


def box_label_pairs(boxes: torch.Tensor, labels: torch.Tensor) -> Counter:
    return Counter((tuple(b), tuple(lab)) for b, lab in zip(boxes.tolist(), labels.tolist()))


# --------------------------------------------------------------------------- action_loss


def _loss_case(seed: int, rows: int = 10, num_classes: int = 9, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, num_classes, generator=g) * scale
    targets = (torch.rand(rows, num_classes, generator=g) < 0.3).float()
    targets[0, 1:] = 0                                   # a negative RoI
    targets[1, 1:] = 0
    targets[1, 0] = 1                                    # only class 0: still negative
    targets[2, 1:] = 0
    targets[2, 3] = 1                                    # surely one positive row
    return logits, targets


@pytest.mark.parametrize("alpha,gamma", [(1.0, 0.0), (3.0, 1.0), (0.25, 2.0)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_action_loss_matches_reference(alpha, gamma, seed):
    logits, targets = _loss_case(seed)
    loss = action_loss(logits, targets, alpha, gamma)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(ref_action_loss(logits, targets, alpha, gamma), rel=1e-5)


def test_action_loss_plain_bce_is_torch_bce_over_kept_entries():
    logits, targets = _loss_case(3)
    keep = targets[:, 1:].sum(dim=1) > 0
    expected = F.binary_cross_entropy_with_logits(logits[keep, 1:], targets[keep, 1:])
    torch.testing.assert_close(action_loss(logits, targets), expected)


@pytest.mark.parametrize("alpha,gamma", [(1.0, 0.0), (3.0, 1.0)])
def test_action_loss_large_logits_stay_finite(alpha, gamma):
    logits, targets = _loss_case(4, scale=1.0)
    logits[:, ::2] = 30.0
    logits[:, 1::2] = -30.0
    logits[5] = torch.linspace(-30, 30, logits.shape[1])
    logits.requires_grad_(True)
    loss = action_loss(logits, targets, alpha, gamma)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(ref_action_loss(logits.detach(), targets, alpha, gamma),
                                        rel=1e-5)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_action_loss_ignores_negative_rows_and_class_zero():
    logits, targets = _loss_case(5)
    loss = action_loss(logits, targets, 3.0, 1.0)
    changed = logits.clone()
    changed[0] = 100.0                                   # negative RoI
    changed[1] = -100.0                                  # only class 0 set: negative RoI
    changed[:, 0] = torch.randn(logits.shape[0]) * 50    # class 0 of every RoI
    torch.testing.assert_close(action_loss(changed, targets, 3.0, 1.0), loss)


@pytest.mark.parametrize("alpha,gamma", [(1.0, 0.0), (3.0, 1.0)])
def test_action_loss_without_positive_rois_is_zero_and_differentiable(alpha, gamma):
    logits = (torch.randn(6, 9) * 5).requires_grad_(True)
    targets = torch.zeros(6, 9)
    targets[2, 0] = 1                                    # class 0 does not count
    loss = action_loss(logits, targets, alpha, gamma)
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))
    empty = torch.zeros(0, 9, requires_grad=True)
    loss = action_loss(empty, torch.zeros(0, 9))
    assert loss.item() == 0.0
    loss.backward()


@pytest.mark.parametrize("alpha,gamma", [(1.0, 0.0), (3.0, 1.0), (0.5, 2.0)])
def test_action_loss_gradient(alpha, gamma):
    logits, targets = _loss_case(6, rows=6, num_classes=6)
    logits = logits.double().requires_grad_(True)
    targets = targets.double()
    (grad,) = torch.autograd.grad(action_loss(logits, targets, alpha, gamma), logits)
    (expected,) = torch.autograd.grad(ref_action_loss_torch(logits, targets, alpha, gamma),
                                      logits)
    torch.testing.assert_close(grad, expected)
    assert torch.equal(grad[:2], torch.zeros_like(grad[:2]))       # negative RoIs
    assert torch.equal(grad[:, 0], torch.zeros_like(grad[:, 0]))   # class 0
    assert torch.autograd.gradcheck(lambda x: action_loss(x, targets, alpha, gamma), (logits,))


# --------------------------------------------------------------------------- recall_precision


def test_recall_precision_matches_reference():
    logits, targets = _loss_case(7, rows=12, num_classes=11)
    ramp = torch.linspace(0, 1, logits.shape[1] - 1)      # distinct values: no top-k ties
    logits[3, 1:] = -5.0 - ramp            # nothing above the threshold: precision 0 / 1e-6
    logits[4, 1:] = 5.0 + ramp             # everything above it
    out = recall_precision(logits, targets)
    expected = ref_recall_precision(logits, targets)
    assert set(out) == {"recall@thr=0.5", "prec@thr=0.5", "recall@top3", "prec@top3",
                        "recall@top5", "prec@top5"} == set(expected)
    for key, value in expected.items():
        assert out[key].item() == pytest.approx(value, rel=1e-5, abs=1e-7), key


@pytest.mark.parametrize("seed", range(4))
def test_recall_precision_random(seed):
    logits, targets = _loss_case(seed + 10, rows=20, num_classes=15)
    out = recall_precision(logits, targets, topk=(1, 3, 5), thr=0.3)
    expected = ref_recall_precision(logits, targets, topk=(1, 3, 5), thr=0.3)
    assert set(out) == set(expected)
    for key, value in expected.items():
        assert out[key].item() == pytest.approx(value, rel=1e-5, abs=1e-7), key


def test_recall_precision_hand_example():
    # one RoI with actions {1, 2}; predicted probabilities > 0.5 for {2, 3}
    logits = torch.tensor([[9.0, -3.0, 4.0, 3.0, -1.0, -2.0, -4.0]])
    targets = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    out = recall_precision(logits, targets)
    assert out["recall@thr=0.5"].item() == pytest.approx(0.5)
    assert out["prec@thr=0.5"].item() == pytest.approx(0.5 / (1 + 0.5e-6))
    assert out["recall@top3"].item() == pytest.approx(0.5)       # top 3: {2, 3, 4}
    assert out["recall@top5"].item() == pytest.approx(1.0)       # top 5: {2, 3, 4, 5, 1}
    assert out["prec@top5"].item() == pytest.approx(2 / (5 + 1e-6))


def test_recall_precision_without_positive_rois_is_nan():
    """Same keys every step (the training loop stacks them), NaN values (logged as null)."""
    targets = torch.zeros(4, 9)
    targets[:, 0] = 1
    keys = set(recall_precision(*_loss_case(7, rows=12, num_classes=9)))
    for logits, targets in [(torch.randn(4, 9), targets), (torch.zeros(0, 9), torch.zeros(0, 9))]:
        out = recall_precision(logits, targets)
        assert set(out) == keys and all(torch.isnan(v) for v in out.values())


def test_loss_and_recall_ignore_whatever_the_negative_rows_hold():
    """Negative RoIs are left out before the loss: non-finite logits there change nothing, and
    their gradient is exactly 0."""
    logits, targets = _loss_case(5)
    loss, metrics = action_loss(logits, targets, 3.0, 1.0), recall_precision(logits, targets)
    changed = logits.clone()
    changed[0] = float("inf")
    changed[1] = float("nan")
    changed = changed.requires_grad_(True)
    again = action_loss(changed, targets, 3.0, 1.0)
    torch.testing.assert_close(again, loss)
    again.backward()
    assert torch.isfinite(changed.grad).all() and not changed.grad[:2].any()
    again = recall_precision(changed.detach(), targets)
    assert {k: v.item() for k, v in again.items()} == {k: v.item() for k, v in metrics.items()}


def test_positive_rows_given_by_the_caller_change_nothing():
    """The training step finds the positive RoIs on the host and passes them in."""
    logits, targets = _loss_case(6)
    positive = positive_rows(targets)
    assert positive.tolist() == [i for i in range(len(targets)) if targets[i, 1:].any()]
    assert torch.equal(action_loss(logits, targets, 3.0, 1.0, positive=positive),
                       action_loss(logits, targets, 3.0, 1.0))
    given, found = recall_precision(logits, targets, positive=positive), recall_precision(logits, targets)
    assert all(torch.equal(given[k], found[k]) for k in found)


# --------------------------------------------------------------------------- box_iou


def test_box_iou_cases():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0],      # reference square
                      [2.0, 2.0, 4.0, 6.0],        # nested in it
                      [10.0, 0.0, 20.0, 10.0],     # touching its right edge
                      [30.0, 30.0, 40.0, 40.0],    # disjoint
                      [5.0, 5.0, 5.0, 9.0],        # zero width
                      [3.0, 3.0, 3.0, 3.0]])       # a point
    iou = box_iou(a, a)
    assert iou.shape == (6, 6)
    assert torch.isfinite(iou).all()
    expected = torch.tensor([[ref_iou(p, q) for q in a.tolist()] for p in a.tolist()])
    torch.testing.assert_close(iou, expected)
    assert iou[0, 0] == 1 and iou[0, 1] == pytest.approx(8 / 100) and iou[0, 2] == 0
    assert iou[0, 3] == 0 and iou[4, 4] == 0 and iou[5, 5] == 0 and iou[0, 4] == 0
    assert box_iou(a, torch.zeros(0, 4)).shape == (6, 0)
    assert box_iou(torch.zeros(0, 4), a).shape == (0, 6)


def test_box_iou_random_matches_loops():
    rng = random.Random(0)
    a = torch.tensor([random_box(rng) for _ in range(15)], dtype=torch.float64)
    b = torch.tensor([jitter(random_box(rng), rng, 0.1) for _ in range(11)], dtype=torch.float64)
    b[:5] = a[:5] + torch.rand(5, 4, dtype=torch.float64) * 6
    expected = torch.tensor([[ref_iou(p, q) for q in b.tolist()] for p in a.tolist()],
                            dtype=torch.float64)
    torch.testing.assert_close(box_iou(a, b), expected)
    torch.testing.assert_close(box_iou(b, a), expected.T)
    torch.testing.assert_close(box_iou(a.float(), b.float()), expected.float())


# --------------------------------------------------------------------------- assign_labels


def test_assign_labels_random_scenes():
    claimed = 0
    for seed in range(25):
        props, gts, labels = random_scene(seed)
        assigned, changed = ref_assign(props, gts)
        claimed += changed
        out = assign_labels(props, gts, labels)
        assert out.shape == (props.shape[0], labels.shape[1]) and out.dtype == labels.dtype
        assert torch.equal(out, ref_labels(assigned, labels)), seed
    assert claimed > 0       # the "gt claims its best proposals" step mattered in some scene


def test_assign_labels_threshold_edges():
    gt = torch.tensor([[0.0, 0.0, 100.0, 100.0]], dtype=torch.float64)
    labels = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    props = torch.tensor([[0.0, 0.0, 100.0, 111.0],      # IoU 100/111 = 0.9009
                          [0.0, 0.0, 100.0, 112.0],      # 100/112 = 0.893
                          [0.0, 0.0, 90.0, 100.0],       # exactly 0.9 -> positive (>=)
                          [0.0, 0.0, 89.0, 100.0]],      # 0.89
                         dtype=torch.float64)
    # the gt's best proposal (0.9009) is claimed, which changes nothing here
    out = assign_labels(props, gt, labels)
    assert torch.equal(out, torch.stack([labels[0], torch.zeros(4), labels[0], torch.zeros(4)]))
    assert torch.equal(out, ref_labels(ref_assign(props, gt)[0], labels))
    out = assign_labels(props, gt, labels, pos_iou=0.5)
    assert torch.equal(out, labels.expand(4, -1))


def test_assign_labels_best_proposal_claimed_by_other_gt():
    # p has IoU 0.985 with A and 0.995 with B: max IoU gives B, but p is A's best proposal (q is
    # B's), so A claims it
    gts = torch.tensor([[0.0, 0.0, 100.0, 100.0], [0.0, 0.0, 100.0, 102.0]], dtype=torch.float64)
    labels = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    props = torch.tensor([[0.0, 0.0, 100.0, 101.5], [0.0, 0.0, 100.0, 102.0]],
                         dtype=torch.float64)
    out = assign_labels(props, gts, labels)
    assert torch.equal(out, labels)
    assert torch.equal(out, ref_labels(ref_assign(props, gts)[0], labels))


def test_assign_labels_ties_and_duplicates():
    # two identical gts: the later one claims every box it overlaps most
    gts = torch.tensor([[10.0, 10.0, 50.0, 90.0], [10.0, 10.0, 50.0, 90.0]])
    labels = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    props = torch.tensor([[10.0, 10.0, 50.0, 90.0], [10.0, 10.0, 50.0, 91.0],
                          [10.0, 10.0, 50.0, 90.0]])
    out = assign_labels(props, gts, labels)
    assert torch.equal(out, labels[[1, 0, 1]])
    assert torch.equal(out, ref_labels(ref_assign(props, gts)[0], labels))


def test_assign_labels_empty():
    labels = torch.tensor([[0.0, 1.0, 0.0]])
    out = assign_labels(torch.rand(3, 4) * 10, torch.zeros(0, 4), torch.zeros(0, 3))
    assert torch.equal(out, torch.zeros(3, 3))
    out = assign_labels(torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 5.0, 5.0]]), labels)
    assert out.shape == (0, 3)


# --------------------------------------------------------------------------- sample_rois


def ref_sample_pool(props: torch.Tensor, gts: torch.Tensor, labels: torch.Tensor):
    """What mmdet's sampler draws from: the gts with their own labels, then the proposals with
    their assigned labels."""
    pool_boxes = torch.cat([gts, props])
    pool_labels = torch.cat([labels, ref_labels(ref_assign(props, gts)[0], labels)])
    return pool_boxes, pool_labels


@pytest.mark.parametrize("seed", range(12))
def test_sample_rois_against_reference(seed):
    props, gts, labels = random_scene(seed, num_gts=3 + seed % 3)
    if seed % 4 == 0:
        props = props[:6]                                # few proposals: everything fits
    gen = torch.Generator().manual_seed(seed)
    boxes, out = sample_rois(props, gts, labels, generator=gen)
    pool_boxes, pool_labels = ref_sample_pool(props, gts, labels)
    positive = pool_labels.sum(dim=1) > 0
    num_pos, num_neg = int(positive.sum()), int((~positive).sum())

    n = min(32, props.shape[0] + gts.shape[0])
    assert boxes.shape == (n, 4) and out.shape == (n, labels.shape[1])
    assert boxes.dtype == props.dtype
    k = min(32, num_pos)
    assert (out[:k].sum(dim=1) > 0).all()                # positives first ...
    assert (out[k:] == 0).all()                          # ... then negatives
    assert out.shape[0] - k == min(32 - k, num_neg)
    # every returned (box, labels) pair is drawn without replacement from the reference pool
    drawn, pool = box_label_pairs(boxes, out), box_label_pairs(pool_boxes, pool_labels)
    assert all(pool[pair] >= count for pair, count in drawn.items())
    if num_pos <= 32:                                    # every gt box is among the RoIs
        for g, lab in zip(gts.tolist(), labels.tolist()):
            assert drawn[(tuple(g), tuple(lab))] >= 1
    # proposals carry exactly what assign_labels gives them
    own = box_label_pairs(props, assign_labels(props, gts, labels)) + box_label_pairs(gts, labels)
    assert all(own[pair] >= count for pair, count in drawn.items())


def test_sample_rois_gt_boxes_keep_their_labels():
    # mmdet assigns the proposals among themselves and each added gt box to itself: p is A's
    # best proposal (A claims it) and duplicated gt boxes each keep their own labels
    gts = torch.tensor([[0.0, 0.0, 100.0, 100.0], [0.0, 0.0, 100.0, 102.0],
                        [200.0, 0.0, 260.0, 90.0], [200.0, 0.0, 260.0, 90.0]])
    labels = torch.eye(5)[1:]
    props = torch.tensor([[0.0, 0.0, 100.0, 101.5], [0.0, 0.0, 100.0, 102.0],
                          [300.0, 300.0, 350.0, 350.0]])
    boxes, out = sample_rois(props, gts, labels, generator=torch.Generator().manual_seed(0))
    expected = Counter({
        ((0.0, 0.0, 100.0, 100.0), (0.0, 1.0, 0.0, 0.0, 0.0)): 1,
        ((0.0, 0.0, 100.0, 102.0), (0.0, 0.0, 1.0, 0.0, 0.0)): 2,     # gt B and its copy q
        ((200.0, 0.0, 260.0, 90.0), (0.0, 0.0, 0.0, 1.0, 0.0)): 1,
        ((200.0, 0.0, 260.0, 90.0), (0.0, 0.0, 0.0, 0.0, 1.0)): 1,
        ((0.0, 0.0, 100.0, 101.5), (0.0, 1.0, 0.0, 0.0, 0.0)): 1,     # A's, not B's
        ((300.0, 300.0, 350.0, 350.0), (0.0, 0.0, 0.0, 0.0, 0.0)): 1,
    })
    assert box_label_pairs(boxes, out) == expected
    assert (out[:6].sum(dim=1) > 0).all() and (out[6] == 0).all()


def test_sample_rois_caps_positives():
    rng = random.Random(1)
    gts = torch.tensor([random_box(rng) for _ in range(3)], dtype=torch.float64)
    labels = multi_hot(3, 10, rng)
    props = torch.tensor([jitter(g, rng, 0.004) for g in gts.tolist() for _ in range(15)]
                         + [random_box(rng) for _ in range(10)], dtype=torch.float64)
    pool_boxes, pool_labels = ref_sample_pool(props, gts, labels)
    assert int((pool_labels.sum(dim=1) > 0).sum()) > 32
    boxes, out = sample_rois(props, gts, labels, generator=torch.Generator().manual_seed(0))
    assert boxes.shape == (32, 4) and (out.sum(dim=1) > 0).all()
    pool = box_label_pairs(pool_boxes, pool_labels)
    assert all(pool[pair] >= c for pair, c in box_label_pairs(boxes, out).items())
    boxes, out = sample_rois(props, gts, labels, num_rois=8,
                             generator=torch.Generator().manual_seed(0))
    assert boxes.shape == (8, 4) and (out.sum(dim=1) > 0).all()


def test_sample_rois_reproducible_with_generator():
    props, gts, labels = random_scene(3, num_gts=5)
    props = torch.cat([props] + [props + 500 * (i + 1) for i in range(2)])   # many negatives
    draws = [sample_rois(props, gts, labels, generator=torch.Generator().manual_seed(s))
             for s in (0, 0, 1)]
    assert draws[0][0].shape[0] == 32
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])
    assert not torch.equal(draws[0][0], draws[2][0])


def test_sample_rois_empty_inputs():
    labels = torch.tensor([[0.0, 1.0, 0.0]])
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    boxes, out = sample_rois(torch.zeros(0, 4), gt, labels)
    assert torch.equal(boxes, gt) and torch.equal(out, labels)
    props = torch.rand(40, 4) * 10
    props[:, 2:] += props[:, :2]
    boxes, out = sample_rois(props, torch.zeros(0, 4), torch.zeros(0, 3))
    assert boxes.shape == (32, 4) and torch.equal(out, torch.zeros(32, 3))
    boxes, out = sample_rois(torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(0, 3))
    assert boxes.shape == (0, 4) and out.shape == (0, 3)


# --------------------------------------------------------------------------- BBoxHeadAVA


def ref_bbox_head(head: BBoxHeadAVA, x: torch.Tensor, temporal: str = "avg",
                  spatial: str = "max") -> torch.Tensor:
    rows = []
    for roi in x:                                                    # (C, T, S, S)
        t = roi.mean(dim=1) if temporal == "avg" else roi.max(dim=1).values    # (C, S, S)
        flat = t.reshape(t.shape[0], -1)
        v = flat.mean(dim=1) if spatial == "avg" else flat.max(dim=1).values   # (C,)
        rows.append(head.classifier.weight @ v + head.classifier.bias)
    return torch.stack(rows)


@pytest.mark.parametrize("temporal,spatial", [("avg", "max"), ("avg", "avg"), ("max", "max"),
                                              ("max", "avg")])
def test_bbox_head_matches_reference(temporal, spatial):
    torch.manual_seed(0)
    head = BBoxHeadAVA(16, 7, dropout=0.0, temporal_pool=temporal, spatial_pool=spatial).eval()
    nn_bias = torch.randn(7)
    with torch.no_grad():
        head.classifier.bias.copy_(nn_bias)
    x = torch.randn(5, 16, 3, 4, 4)
    out = head(x)
    assert out.shape == (5, 7)
    torch.testing.assert_close(out, ref_bbox_head(head, x, temporal, spatial))
    assert head(torch.zeros(0, 16, 3, 4, 4)).shape == (0, 7)


def test_bbox_head_dropout_only_in_training():
    torch.manual_seed(1)
    head = BBoxHeadAVA(16, 7, dropout=0.5)
    x = torch.randn(5, 16, 2, 4, 4)
    head.eval()
    torch.testing.assert_close(head(x), ref_bbox_head(head, x))
    head.train()
    torch.manual_seed(5)
    out = head(x)
    assert not torch.allclose(out, ref_bbox_head(head, x))
    torch.manual_seed(5)                  # dropout acts on the RoI features, before pooling
    torch.testing.assert_close(out, ref_bbox_head(head, F.dropout(x, 0.5, training=True)))


def test_bbox_head_init_and_bad_pool():
    head = BBoxHeadAVA(32, 81)
    assert head.num_classes == 81 and torch.equal(head.classifier.bias, torch.zeros(81))
    with pytest.raises(ValueError):
        BBoxHeadAVA(8, 3, spatial_pool="sum")
    with pytest.raises(ValueError):
        BBoxHeadAVA(8, 3, temporal_pool="min")


# --------------------------------------------------------------------------- ACRNHead


def _randomise_bn(head: ACRNHead, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (head.bn1, head.bn2):
            bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(bn.num_features, generator=g) * 0.2)
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.3)
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)


def ref_acrn(head: ACRNHead, roi_features, context, rois, training: bool = False):
    k, c = roi_features.shape[:2]
    h, w = context.shape[-2:]
    actor = torch.stack([roi_features[i].reshape(c, -1).max(dim=1).values for i in range(k)])
    tiled = actor[:, :, None, None, None].repeat(1, 1, 1, h, w)            # (K, C, 1, H, W)
    around = torch.stack([context[int(r[0])] for r in rois])
    x = torch.cat([tiled, around], dim=1)

    def bn(x, m):
        return F.batch_norm(x, None if training else m.running_mean,
                            None if training else m.running_var, m.weight, m.bias,
                            training=training, eps=m.eps)

    x = F.relu(bn(F.conv3d(x, head.conv1.weight), head.bn1))
    return F.relu(bn(F.conv3d(x, head.conv2.weight, padding=(0, 1, 1)), head.bn2))


def test_acrn_head_matches_reference():
    torch.manual_seed(0)
    head = ACRNHead(2 * 6, 10)
    _randomise_bn(head, 1)
    head.eval()
    context = torch.randn(3, 6, 1, 5, 7)
    roi_features = torch.randn(4, 6, 1, 3, 3)
    rois = torch.tensor([[1.0, 0, 0, 10, 10], [0.0, 1, 1, 5, 5], [2.0, 0, 0, 3, 3],
                         [1.0, 2, 2, 9, 9]])
    out = head(roi_features, context, rois)
    assert out.shape == (4, 10, 1, 5, 7)
    torch.testing.assert_close(out, ref_acrn(head, roi_features, context, rois))
    assert (out >= 0).all()


def test_acrn_head_training_uses_batch_statistics():
    torch.manual_seed(2)
    head = ACRNHead(2 * 4, 6)
    _randomise_bn(head, 3)
    reference = copy.deepcopy(head)
    context = torch.randn(2, 4, 1, 4, 4)
    roi_features = torch.randn(5, 4, 2, 3, 3)            # the actor max also spans T
    rois = torch.tensor([[0.0, 0, 0, 1, 1]] * 2 + [[1.0, 0, 0, 1, 1]] * 3)
    out = head.train()(roi_features, context, rois)
    torch.testing.assert_close(out, ref_acrn(reference, roi_features, context, rois, True))


# --------------------------------------------------------------------------- RoIExtractor3D


def _pathways(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    slow = torch.randn(2, 6, 2, 6, 8, generator=g)
    fast = torch.randn(2, 3, 8, 6, 8, generator=g)
    rois = torch.tensor([[1.0, 10.0, 5.0, 90.0, 80.0], [0.0, 0.0, 0.0, 127.0, 95.0],
                         [1.0, 40.0, 30.0, 60.0, 50.0], [0.0, 70.0, 20.0, 130.0, 96.0]])
    return slow, fast, rois


def mmaction2_pool(features, mode: str) -> torch.Tensor:
    """SingleRoIExtractor3D: nearest-resample each pathway to the longest, then pool over T."""
    max_t = max(x.shape[2] for x in features)
    resampled = [F.interpolate(x, size=(max_t,) + tuple(x.shape[3:])) for x in features]
    pooled = [x.mean(dim=2, keepdim=True) if mode == "avg" else x.max(dim=2, keepdim=True).values
              for x in resampled]
    return torch.cat(pooled, dim=1)


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_roi_extractor_two_pathways(mode):
    slow, fast, rois = _pathways()
    extractor = RoIExtractor3D(4, 1 / 16, temporal_pool=mode)
    roi_features, context = extractor((slow, fast), rois)
    assert roi_features.shape == (4, 9, 1, 4, 4) and context.shape == (2, 9, 1, 6, 8)
    pool = (lambda x: x.mean(dim=2)) if mode == "avg" else (lambda x: x.amax(dim=2))
    frame = torch.cat([pool(slow), pool(fast)], dim=1)
    torch.testing.assert_close(context[:, :, 0], frame)
    torch.testing.assert_close(roi_features[:, :, 0],
                               roi_align(frame, rois, 4, 1 / 16, 0, aligned=True))
    # MMAction2's resampling gives the same context when the lengths divide
    torch.testing.assert_close(mmaction2_pool((slow, fast), mode), context)


def test_roi_extractor_single_map_and_sampling_ratio():
    slow, _, rois = _pathways(1)
    extractor = RoIExtractor3D(3, 1 / 16, sampling_ratio=2)
    roi_features, context = extractor(slow, rois)
    torch.testing.assert_close(context, slow.mean(dim=2, keepdim=True))
    expected = roi_align(slow.mean(dim=2), rois, 3, 1 / 16, 2, aligned=True)
    torch.testing.assert_close(roi_features, expected.unsqueeze(2))
    with pytest.raises(ValueError):
        RoIExtractor3D(temporal_pool="sum")


def test_roi_extractor_with_global():
    slow, fast, rois = _pathways(2)
    plain, _ = RoIExtractor3D(4, 1 / 16)((slow, fast), rois)
    roi_features, context = RoIExtractor3D(4, 1 / 16, with_global=True)((slow, fast), rois)
    assert roi_features.shape == (4, 18, 1, 4, 4) and context.shape == (2, 9, 1, 6, 8)
    torch.testing.assert_close(roi_features[:, :9], plain)
    global_features = F.adaptive_avg_pool2d(context[:, :, 0], 4)
    for i, r in enumerate(rois):
        torch.testing.assert_close(roi_features[i, 9:, 0], global_features[int(r[0])])


# --------------------------------------------------------------------------- ActionDetector


def tiny_detector(seed: int = 0) -> ActionDetector:
    torch.manual_seed(seed)
    return ActionDetector(SlowOnly(base_channels=8, stage_blocks=(1, 1, 1, 1)),
                          RoIExtractor3D(4), BBoxHeadAVA(256, 81, dropout=0.0))


def _detector_batch(seed: int = 0, num_classes: int = 81):
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    clips = torch.randn(2, 3, 4, 64, 64, generator=g)
    gt_boxes = [torch.tensor([[4.0, 6.0, 40.0, 60.0], [30.0, 2.0, 62.0, 50.0]]),
                torch.tensor([[10.0, 10.0, 50.0, 63.0]])]
    gt_labels = [multi_hot(2, num_classes, rng), multi_hot(1, num_classes, rng)]
    proposals = [torch.cat([gt_boxes[0] + 0.5, torch.tensor([[0.0, 0.0, 20.0, 20.0]])]),
                 torch.tensor([[10.0, 10.0, 50.0, 62.0], [40.0, 40.0, 63.0, 63.0]])]
    return clips, proposals, gt_boxes, gt_labels


def _training_loss(model, clips, proposals, gt_boxes, gt_labels, generator=None):
    """The loss of :func:`stdet.engine.step.train_step`: RoIs sampled on the host, the forward
    pass, ``loss_of``."""
    rois, targets = model.training_rois(proposals, gt_boxes, gt_labels, generator)
    return model.loss_of(model(clips, rois), targets)


def test_boxes_to_rois():
    boxes = [torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8]]), torch.zeros(0, 4),
             torch.tensor([[9.0, 10, 11, 12, 0.9]])]           # a score column is dropped
    rois = boxes_to_rois(boxes)
    assert torch.equal(rois, torch.tensor([[0.0, 1, 2, 3, 4], [0, 5, 6, 7, 8],
                                           [2, 9, 10, 11, 12]]))
    assert boxes_to_rois([]).shape == (0, 5)
    assert boxes_to_rois([torch.zeros(0, 4)] * 2).shape == (0, 5)


def test_detector_loss_and_backward():
    model = tiny_detector().train()
    clips, proposals, gt_boxes, gt_labels = _detector_batch()
    out = _training_loss(model, clips, proposals, gt_boxes, gt_labels,
                         generator=torch.Generator().manual_seed(0))
    assert {"loss", "recall@thr=0.5", "prec@thr=0.5", "recall@top3", "prec@top3",
            "recall@top5", "prec@top5"} <= set(out)
    assert torch.isfinite(out["loss"]) and out["loss"].item() > 0
    out["loss"].backward()
    for name, module in (("backbone", model.backbone), ("head", model.head)):
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert all(gr is not None and torch.isfinite(gr).all() for gr in grads), name
        assert any(gr.abs().sum() > 0 for gr in grads), name


def test_training_rois_and_loss_of():
    model = tiny_detector(1).train()
    clips, proposals, gt_boxes, gt_labels = _detector_batch(1)
    rois, targets = model.training_rois(proposals, gt_boxes, gt_labels,
                                        torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    sampled = [sample_rois(p, g, lab, 32, 0.9, gen)
               for p, g, lab in zip(proposals, gt_boxes, gt_labels)]
    assert torch.equal(rois, boxes_to_rois([b for b, _ in sampled]))
    assert torch.equal(targets, torch.cat([lab for _, lab in sampled]))
    assert rois.shape[0] == sum(p.shape[0] + g.shape[0] for p, g in zip(proposals, gt_boxes))
    logits = model(clips, rois)
    out = model.loss_of(logits, targets)
    assert out["loss"].item() == pytest.approx(ref_action_loss(logits.detach(), targets),
                                               rel=1e-5)
    expected = ref_recall_precision(logits.detach(), targets)
    for key, value in expected.items():
        assert out[key].item() == pytest.approx(value, rel=1e-5, abs=1e-7)
    assert not hasattr(model, "loss")      # one loss path: the engine's training step


def test_detector_predict():
    model = tiny_detector(2).eval()
    clips, proposals, _, _ = _detector_batch(2)
    scores = model.predict(clips, proposals)
    assert [s.shape for s in scores] == [(3, 81), (2, 81)]
    assert all(((s >= 0) & (s <= 1)).all() for s in scores)
    logits = model(clips, boxes_to_rois(proposals))
    torch.testing.assert_close(torch.cat(scores), logits.sigmoid())
    # a clip without proposals
    scores = model.predict(clips, [proposals[0], torch.zeros(0, 4)])
    assert [s.shape for s in scores] == [(3, 81), (0, 81)]
    torch.testing.assert_close(scores[0], logits[:3].sigmoid())
    scores = model.predict(clips, [torch.zeros(0, 4), torch.zeros(0, 4)])
    assert [s.shape for s in scores] == [(0, 81), (0, 81)]


def test_detector_forward_is_equivariant_to_roi_order():
    model = tiny_detector(3).eval()
    clips, proposals, _, _ = _detector_batch(3)
    rois = boxes_to_rois(proposals)
    perm = torch.tensor([4, 0, 3, 1, 2])
    with torch.no_grad():
        torch.testing.assert_close(model(clips, rois[perm]), model(clips, rois)[perm])


def test_zoo_acrn_detector():
    from stdet import zoo

    cfg = zoo.get("slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb", scale="mini")
    torch.manual_seed(0)
    model = build_detector(cfg.model)
    assert isinstance(model.shared_head, ACRNHead)
    clips, proposals, gt_boxes, gt_labels = _detector_batch(4)
    clips = torch.randn(2, 3, cfg.data.clip_len, 64, 64)
    out = _training_loss(model.train(), clips, proposals, gt_boxes, gt_labels,
                         generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and "recall@top3" in out
    out["loss"].backward()
    assert model.shared_head.conv1.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    model.eval()
    scores = model.predict(clips, [proposals[0], torch.zeros(0, 4)])
    assert [s.shape for s in scores] == [(3, 81), (0, 81)]
    assert ((scores[0] >= 0) & (scores[0] <= 1)).all()
    rois = boxes_to_rois(proposals)
    perm = torch.tensor([2, 4, 0, 1, 3])
    with torch.no_grad():
        torch.testing.assert_close(model(clips, rois[perm]), model(clips, rois)[perm])
