"""RoIAlign: the vectorised version against a looped reference of torchvision's semantics."""
from __future__ import annotations

import math

import pytest
import torch

from stdet.engine.step import counting_host_reads
from stdet.models.roi_align import RoIAlign, grid_for_map, roi_align


def _bilinear(fmap: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """torchvision's bilinear interpolation of a (C, H, W) map at one point, as a (C,) tensor."""
    _, height, width = fmap.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return fmap.new_zeros(fmap.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (hy * hx * fmap[:, y_low, x_low] + hy * lx * fmap[:, y_low, x_high]
            + ly * hx * fmap[:, y_high, x_low] + ly * lx * fmap[:, y_high, x_high])


def reference_roi_align(features: torch.Tensor, rois: torch.Tensor, output_size: tuple[int, int],
                        spatial_scale: float, sampling_ratio: int = 0,
                        aligned: bool = True, max_grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Slow RoIAlign: Python loops over RoIs, bins and sampling points; geometry in Python floats.

    Built from torch ops on ``features`` so that autograd goes through it.
    """
    out_h, out_w = output_size
    channels = features.shape[1]
    offset = 0.5 if aligned else 0.0
    pooled = []
    for batch_index, *box in rois.tolist():
        fmap = features[int(batch_index)]
        x1, y1, x2, y2 = (v * spatial_scale - offset for v in box)
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / out_h, roi_w / out_w
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / out_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / out_w)
        if max_grid is not None and sampling_ratio <= 0:
            grid_h, grid_w = min(grid_h, max_grid[0]), min(grid_w, max_grid[1])
        count = max(grid_h * grid_w, 1)
        rows = []
        for ph in range(out_h):
            row = []
            for pw in range(out_w):
                total = features.new_zeros(channels)
                for iy in range(grid_h):
                    y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                        total = total + _bilinear(fmap, y, x)
                row.append(total / count)
            rows.append(torch.stack(row, dim=-1))
        pooled.append(torch.stack(rows, dim=-2))
    if not pooled:
        return features.new_zeros(0, channels, out_h, out_w)
    return torch.stack(pooled)


def _features(n: int = 2, c: int = 3, h: int = 9, w: int = 11, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g, dtype=torch.float64)


def _rois(*rows: tuple[float, float, float, float, float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _grid_sizes(rois: torch.Tensor, size: tuple[int, int], scale: float, aligned: bool) -> set:
    hw = (rois[:, 3:5] - rois[:, 1:3]) * scale
    if not aligned:
        hw = hw.clamp(min=1)
    return {(math.ceil(h / size[0]), math.ceil(w / size[1])) for w, h in hw.tolist()}


# Boxes of very different sizes, over both images, at scale 1 (feature pixels) and 1/16 (image
# pixels of a 16x-downsampled map); at 1/16 the coordinates are the scale-1 ones times 16.
MIXED = _rois(
    (0, 1.0, 1.0, 9.5, 8.0),     # most of the map: grid 3x3 at output (3, 4)
    (1, 2.3, 0.7, 3.1, 1.9),     # under a pixel wide
    (0, 0.2, 4.4, 10.8, 5.0),    # wide and flat
    (1, 4.0, 0.0, 5.5, 9.0),     # tall and narrow
    (1, 0.0, 0.0, 11.0, 9.0),    # the whole map
    (0, 6.25, 3.75, 7.75, 6.5),
)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("scale", [1.0, 1 / 16])
def test_adaptive_grid_matches_reference(aligned: bool, scale: float) -> None:
    features = _features()
    rois = MIXED.clone()
    rois[:, 1:] /= scale
    size = (3, 4)
    assert len(_grid_sizes(rois, size, scale, aligned)) >= 4  # RoIs really differ in grid size
    out = roi_align(features, rois, size, scale, sampling_ratio=0, aligned=aligned)
    assert out.shape == (6, 3, 3, 4) and out.dtype == torch.float64
    torch.testing.assert_close(out, reference_roi_align(features, rois, size, scale, 0, aligned),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
def test_fixed_sampling_matches_reference(sampling_ratio: int, aligned: bool) -> None:
    features = _features(seed=1)
    rois = MIXED.clone()
    size = (2, 3)
    out = roi_align(features, rois, size, 1.0, sampling_ratio=sampling_ratio, aligned=aligned)
    expected = reference_roi_align(features, rois, size, 1.0, sampling_ratio, aligned)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_boxes_partly_and_entirely_outside(sampling_ratio: int, aligned: bool) -> None:
    features = _features(seed=2)  # 9 x 11 map
    rois = _rois(
        (0, -3.0, -2.0, 4.0, 3.0),     # over the top-left corner
        (1, 8.0, 6.5, 14.0, 12.0),     # over the bottom-right corner
        (0, -0.8, 2.0, 3.0, 10.5),     # just past the left and bottom edges
        (1, 10.6, 8.6, 11.9, 9.9),     # within a pixel past the bottom-right corner: clamped
        (0, -20.0, -20.0, -5.0, -6.0),  # entirely outside, above-left
        (1, 13.0, 2.0, 18.0, 7.0),     # entirely outside, right
    )
    size = (3, 3)
    out = roi_align(features, rois, size, 1.0, sampling_ratio, aligned)
    torch.testing.assert_close(out, reference_roi_align(features, rois, size, 1.0, sampling_ratio,
                                                        aligned), rtol=1e-12, atol=1e-12)
    assert out[:4].abs().amax(dim=(1, 2, 3)).gt(0).all()
    assert out[4:].eq(0).all()


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 1, 2])
def test_degenerate_boxes(sampling_ratio: int, aligned: bool) -> None:
    features = _features(seed=3)
    rois = _rois(
        (0, 3.0, 2.0, 3.0, 6.0),   # x1 == x2
        (1, 2.0, 4.5, 8.0, 4.5),   # y1 == y2
        (0, 5.5, 5.5, 5.5, 5.5),   # a point
        (1, 7.0, 6.0, 4.0, 2.0),   # flipped (x2 < x1, y2 < y1)
        (0, 1.0, 1.0, 1.05, 1.02),  # tiny
    )
    size = (2, 2)
    out = roi_align(features, rois, size, 1.0, sampling_ratio, aligned)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, reference_roi_align(features, rois, size, 1.0, sampling_ratio,
                                                        aligned), rtol=1e-12, atol=1e-12)
    if aligned and sampling_ratio == 0:
        # A zero or negative extent means an empty adaptive grid: zeros, not NaN.
        assert out[:4].eq(0).all()
        assert out[4].ne(0).any()


def test_zero_grid_has_zero_finite_gradient() -> None:
    features = _features(seed=4).requires_grad_()
    out = roi_align(features, _rois((0, 3.0, 2.0, 3.0, 6.0), (1, 2.0, 2.0, 2.0, 2.0)), 2, 1.0)
    assert out.eq(0).all()
    out.sum().backward()
    assert features.grad is not None and features.grad.eq(0).all()


@pytest.mark.parametrize("size", [(3, 5), (1, 7), (7, 2), (4, 1)])
def test_non_square_output(size: tuple[int, int]) -> None:
    features = _features(seed=5)
    out = roi_align(features, MIXED, size, 1.0)
    assert out.shape == (len(MIXED), 3, *size)
    torch.testing.assert_close(out, reference_roi_align(features, MIXED, size, 1.0),
                               rtol=1e-12, atol=1e-12)


def test_batch_indices_select_images() -> None:
    features = _features(n=3, seed=6)
    boxes = torch.tensor([[1.0, 1.5, 7.0, 8.0], [0.0, 2.0, 5.5, 4.0]], dtype=torch.float64)
    rois = torch.cat([torch.cat([torch.full((2, 1), float(b), dtype=torch.float64), boxes], 1)
                      for b in (2, 0, 1)])
    out = roi_align(features, rois, (3, 2), 1.0)
    for i, b in enumerate((2, 0, 1)):
        alone = roi_align(features[b:b + 1], torch.cat([boxes.new_zeros(2, 1), boxes], 1), (3, 2),
                          1.0)
        torch.testing.assert_close(out[2 * i:2 * i + 2], alone, rtol=0, atol=0)
    # The three images differ, so the same box in different images gives different outputs.
    assert not torch.allclose(out[0], out[2]) and not torch.allclose(out[2], out[4])
    perm = torch.tensor([4, 1, 5, 0, 3, 2])
    torch.testing.assert_close(roi_align(features, rois[perm], (3, 2), 1.0), out[perm],
                               rtol=0, atol=0)


def test_padding_to_largest_grid_does_not_change_other_rois() -> None:
    features = _features(seed=7)
    small = _rois((0, 2.0, 2.0, 4.5, 3.0), (1, 5.0, 1.0, 6.0, 7.0))
    huge = _rois((1, -40.0, -30.0, 50.0, 40.0))  # adaptive grid 45 x 30 at output 2
    alone = roi_align(features, small, 2, 1.0)
    together = roi_align(features, torch.cat([small[:1], huge, small[1:]]), 2, 1.0)
    torch.testing.assert_close(together[[0, 2]], alone, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("scale", [1.0, 1 / 16])
def test_map_bound_grid_is_exact_inside_the_map_and_reads_nothing_back(scale) -> None:
    """``max_grid=grid_for_map(...)``: the same output as the adaptive grid for RoIs inside the
    map (MIXED spans up to the whole 9 x 11 map), computed without reading the grid size back
    from the device (``tolist``/``item`` would be a host sync on a GPU)."""
    features = _features(seed=3)
    rois = MIXED.clone()
    rois[:, 1:] *= 1 / scale
    bound = grid_for_map(features, (3, 4))
    assert bound == (3, 3)  # ceil(9 / 3), ceil(11 / 4)
    exact = roi_align(features, rois, (3, 4), scale)

    with counting_host_reads() as reads:
        bounded = roi_align(features, rois, (3, 4), scale, max_grid=bound)
    assert not reads, f"roi_align read tensors back to the host: {dict(reads)}"
    torch.testing.assert_close(bounded, exact, rtol=1e-14, atol=1e-14)


def test_map_bound_grid_caps_a_roi_larger_than_the_map() -> None:
    """A RoI reaching far outside the map is sampled at most ``max_grid`` points per bin side:
    the reference with that grid, not the adaptive one."""
    features = _features(seed=8)
    huge = _rois((1, -40.0, -30.0, 50.0, 40.0))  # adaptive grid 35 x 45 at output 2
    capped = roi_align(features, huge, 2, 1.0, max_grid=(5, 6))
    exact = roi_align(features, huge, 2, 1.0)
    assert not torch.allclose(capped, exact)
    expected = reference_roi_align(features, huge, (2, 2), 1.0, max_grid=(5, 6))
    torch.testing.assert_close(capped, expected, rtol=1e-12, atol=1e-12)


# --- hand-computed values -------------------------------------------------------------------

def _ramps(h: int, w: int) -> torch.Tensor:
    """(1, 2, H, W) float64: channel 0 is the x (column) coordinate, channel 1 the y (row)."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                            torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.stack([xs, ys])[None]


def test_ramp_gives_bin_centres_aligned() -> None:
    # Image box x 32..160, y 48..112 at scale 1/16 -> feature box x 2..10, y 3..7, minus 0.5.
    out = roi_align(_ramps(12, 16), _rois((0, 32.0, 48.0, 160.0, 112.0)), (2, 4), 1 / 16)
    # Bin width 8/4 = 2, bin height 4/2 = 2: centres x = 1.5 + 2 (q + 0.5), y = 2.5 + 2 (p + 0.5).
    expected_x = torch.tensor([2.5, 4.5, 6.5, 8.5], dtype=torch.float64).expand(2, 4)
    expected_y = torch.tensor([[3.5], [5.5]], dtype=torch.float64).expand(2, 4)
    torch.testing.assert_close(out[0, 0], expected_x, rtol=0, atol=1e-13)
    torch.testing.assert_close(out[0, 1], expected_y, rtol=0, atol=1e-13)


def test_ramp_gives_bin_centres_not_aligned() -> None:
    out = roi_align(_ramps(8, 8), _rois((0, 1.0, 2.0, 7.0, 5.0)), (1, 3), 1.0, aligned=False)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([2.0, 4.0, 6.0], dtype=torch.float64),
                               rtol=0, atol=1e-13)
    torch.testing.assert_close(out[0, 1, 0], torch.tensor([3.5] * 3, dtype=torch.float64),
                               rtol=0, atol=1e-13)


def test_constant_map_counts_samples_outside() -> None:
    features = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    # Aligned box x -4..4 -> feature x -4.5..3.5, one bin, 4 samples at -3.5, -1.5, 0.5, 2.5:
    # the first two are more than a pixel outside and count as zero.
    out = roi_align(features, _rois((0, -4.0, 2.0, 4.0, 6.0)), 1, 1.0, sampling_ratio=4)
    assert out.item() == pytest.approx(0.5, abs=1e-14)
    # Fully inside: the mean of weights that sum to one.
    out = roi_align(features, _rois((0, 1.0, 1.0, 6.0, 7.0)), (2, 3), 1.0)
    torch.testing.assert_close(out, torch.ones(1, 1, 2, 3, dtype=torch.float64), rtol=0,
                               atol=1e-14)


@pytest.mark.parametrize("x1, expected", [
    (-1.5, 1.0),   # sample at x = -1: still inside, clamped to column 0
    (-1.6, 0.0),   # sample at x = -1.1: outside
    (3.2, 4.0),    # sample at x = 3.7 > W - 1: clamped to column 3
    (3.5, 4.0),    # sample at x = 4 = W: still inside
    (3.6, 0.0),    # sample at x = 4.1: outside
])
def test_border_rules(x1: float, expected: float) -> None:
    # Not aligned, one bin, one sample: a box narrower than 1 is widened to 1, the sample sits
    # at x1 + 0.5. The map is x + 1 on a 4 x 4 grid, so column 0 reads 1, column 3 reads 4.
    features = _ramps(4, 4)[:, :1] + 1
    out = roi_align(features, _rois((0, x1, 1.0, x1, 1.0)), 1, 1.0, 1, aligned=False)
    assert out.item() == pytest.approx(expected, abs=1e-14)


# --- gradients ------------------------------------------------------------------------------

@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_gradcheck(sampling_ratio: int, aligned: bool) -> None:
    features = _features(n=2, c=2, h=5, w=6, seed=8).requires_grad_()
    rois = _rois((0, 0.3, 0.6, 4.2, 3.9), (1, -1.2, 1.1, 2.7, 5.8), (1, 2.0, 0.4, 6.5, 2.2))
    assert torch.autograd.gradcheck(
        lambda f: roi_align(f, rois, (2, 3), 1.0, sampling_ratio, aligned), (features,))


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 3])
def test_gradient_matches_reference(sampling_ratio: int, aligned: bool) -> None:
    features = _features(seed=9).requires_grad_()
    rois = torch.cat([MIXED, _rois((1, -2.0, 7.0, 3.0, 11.0))])
    weights = torch.randn(len(rois), 3, 2, 3, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(10))
    (grad,) = torch.autograd.grad(
        (roi_align(features, rois, (2, 3), 1.0, sampling_ratio, aligned) * weights).sum(),
        features)
    (expected,) = torch.autograd.grad(
        (reference_roi_align(features, rois, (2, 3), 1.0, sampling_ratio, aligned)
         * weights).sum(), features)
    assert expected.abs().sum() > 0
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)


def test_rois_get_no_gradient() -> None:
    rois = _rois((0, 1.0, 1.0, 5.0, 6.0)).requires_grad_()
    features = _features().requires_grad_()
    roi_align(features, rois, 2, 1.0).sum().backward()
    assert rois.grad is None and features.grad is not None


# --- edge cases, wrapper, dtypes --------------------------------------------------------------

def test_empty_rois() -> None:
    features = _features().requires_grad_()
    out = roi_align(features, torch.zeros(0, 5, dtype=torch.float64), (3, 2), 1 / 16)
    assert out.shape == (0, 3, 3, 2) and out.dtype == torch.float64
    out.sum().backward()
    assert features.grad is not None and features.grad.eq(0).all()
    assert RoIAlign(7, 1.0)(features.float(), torch.zeros(0, 5)).shape == (0, 3, 7, 7)


def test_module_wrapper() -> None:
    module = RoIAlign((3, 4), 1 / 16, sampling_ratio=2, aligned=False)
    assert module.output_size == (3, 4)
    assert "output_size=(3, 4)" in repr(module) and "spatial_scale=0.0625" in repr(module)
    assert "sampling_ratio=2" in repr(module) and "aligned=False" in repr(module)
    features = _features(seed=11)
    rois = MIXED.clone()
    rois[:, 1:] *= 16
    torch.testing.assert_close(module(features, rois),
                               roi_align(features, rois, (3, 4), 1 / 16, 2, False), rtol=0, atol=0)
    assert RoIAlign(5, 0.5).output_size == (5, 5)
    assert RoIAlign(5, 0.5).aligned and RoIAlign(5, 0.5).sampling_ratio == 0


def test_memory_layout_and_rois_dtype_do_not_matter() -> None:
    features = _features(seed=12)
    expected = roi_align(features, MIXED, (3, 4), 1.0)
    channels_last = features.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(roi_align(channels_last, MIXED, (3, 4), 1.0), expected,
                               rtol=0, atol=0)
    sliced = torch.stack([features, -features], dim=-1)[..., 0]  # non-contiguous view
    assert not sliced.is_contiguous()
    torch.testing.assert_close(roi_align(sliced, MIXED, (3, 4), 1.0), expected, rtol=0, atol=0)
    # float32 boxes with exactly representable coordinates give the same geometry.
    rois32 = _rois((0, 1.0, 1.0, 9.5, 8.0), (1, 4.0, 0.0, 5.5, 9.0))
    torch.testing.assert_close(roi_align(features, rois32.float(), (3, 4), 1.0),
                               roi_align(features, rois32, (3, 4), 1.0), rtol=0, atol=0)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_low_precision_close_to_float64(dtype: torch.dtype, tol: float) -> None:
    features = _features(seed=13)
    rois = MIXED.clone()
    rois[:, 1:] *= 16
    low = features.to(dtype).requires_grad_()
    out = roi_align(low, rois.to(dtype), (3, 4), 1 / 16)
    assert out.dtype == dtype
    # Against float64 on the same (rounded) inputs: only the output rounding differs.
    expected = roi_align(low.detach().double(), rois.to(dtype).double(), (3, 4), 1 / 16)
    torch.testing.assert_close(out.double(), expected, rtol=tol, atol=tol)
    out.float().sum().backward()
    assert low.grad is not None and low.grad.dtype == dtype and low.grad.abs().sum() > 0


def test_bad_shapes_raise() -> None:
    features = _features()
    with pytest.raises(ValueError, match="rois"):
        roi_align(features, torch.zeros(3, 4), 2, 1.0)
    with pytest.raises(ValueError, match="features"):
        roi_align(features[0], MIXED, 2, 1.0)
    with pytest.raises(ValueError, match="output_size"):
        roi_align(features, MIXED, (0, 2), 1.0)


def test_ava_sized_call() -> None:
    # AVA head: (B, 2048, 16, 16) features, a few dozen RoIs in image pixels, output 8 x 8.
    g = torch.Generator().manual_seed(14)
    features = torch.randn(2, 2048, 16, 16, generator=g)
    xy1 = torch.rand(40, 2, generator=g) * 200
    wh = 8 + torch.rand(40, 2, generator=g) * 120
    rois = torch.cat([torch.randint(0, 2, (40, 1), generator=g).float(), xy1, xy1 + wh], 1)
    out = roi_align(features, rois, 8, 1 / 16)
    assert out.shape == (40, 2048, 8, 8) and torch.isfinite(out).all()
    few = [0, 17, 39]
    expected = reference_roi_align(features[:, :4].double(), rois[few].double(), (8, 8), 1 / 16)
    torch.testing.assert_close(out[few, :4].double(), expected, rtol=1e-5, atol=1e-5)


def _torchvision_ops():
    try:
        return pytest.importorskip("torchvision.ops")
    except (ImportError, RuntimeError, AttributeError) as exc:  # e.g. built for another torch
        pytest.skip(f"torchvision does not import here: {exc}")


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_torchvision(dtype: torch.dtype, sampling_ratio: int, aligned: bool) -> None:
    ops = _torchvision_ops()
    features = _features(seed=15).to(dtype)
    rois = torch.cat([MIXED, _rois((0, -3.0, -2.0, 4.0, 3.0), (1, 3.0, 2.0, 3.0, 6.0))]) * 16
    rois[:, 0] /= 16
    rois = rois.to(dtype)
    expected = ops.roi_align(features, rois, (3, 4), 1 / 16, sampling_ratio, aligned)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(roi_align(features, rois, (3, 4), 1 / 16, sampling_ratio, aligned),
                               expected, rtol=tol, atol=tol)
