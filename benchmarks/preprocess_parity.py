"""How far stdet's clips are from MMAction2's test pipeline, pixel by pixel (``data.preprocess``).

MMAction2's AVA test pipeline (0.x and 1.x configs alike) decodes each frame with
``RawFrameDecode`` (``mmcv.imfrombytes(..., channel_order="rgb")``: OpenCV's ``imdecode``, BGR
turned to RGB), scales the normalised boxes by the decoded ``[w, h, w, h]``, and resizes with
``Resize(scale=(-1, 256))`` (mmcv's ``rescale_size`` for the size, ``mmcv.imresize``, i.e.
``cv2.resize(..., INTER_LINEAR)``, for the pixels, the boxes times the float32 size ratio). This
script runs those two classes themselves on JPEG frames and the same frames through stdet with
``preprocess="stdet"`` (the default: reduced-size decode when the frame is at least twice the
test scale, antialiased resize) and ``preprocess="mmaction2"``, and prints, per image, the output
size and the largest and mean absolute difference in grey levels (0-255) of the resized clip, and
the largest difference of the proposal boxes in pixels. It prints a table and asserts nothing.
Normalisation is left out: both sides compute ``(x - mean) / std`` in float32 on these pixels
(MMAction2 1.x's ``ActionDataPreprocessor``; 0.x's ``Normalize`` multiplies by ``1 / std``, one
float32 ulp away).

Images: "1/f" frames (random fields with a natural image's 1/f amplitude spectrum, plus hard-edged
shapes, made with numpy at each size and saved as JPEG quality 90, 4:2:0 as ffmpeg's frames are),
and with ``--images`` real photos (any files PIL opens), each at its own size and cropped/resized
(Lanczos) to each of the sizes.

MMAction2's modules come from a throwaway environment of the same Python version; they are loaded
from their files under stand-in parent packages, so ``mmaction``'s ``__init__`` (which imports
its models) never runs; ``mmaction.utils`` is replaced by the three names ``loading.py`` imports
(unused by ``RawFrameDecode``). torch and stdet come from stdet's environment::

    python3 -m venv /tmp/ppref
    /tmp/ppref/bin/pip install mmcv-lite==2.2.0          # mmcv's image functions, mmengine, OpenCV
    /tmp/ppref/bin/pip install --no-deps mmaction2==1.2.0
    .venv/bin/python benchmarks/preprocess_parity.py \\
        --reference-site /tmp/ppref/lib/python3.11/site-packages [--images photo1.jpg ...]

When the reference cannot be imported, the script says so and exits 0.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ava_eval_reference import ReferenceUnavailable, _load, _stand_in_package  # noqa: E402

SIZES = ((640, 360), (1280, 720), (1920, 1080), (480, 854))   # (width, height)
CLIP_LEN = 4


# ------------------------------------------------------------------------------------------------
# MMAction2's transforms, loaded from their files (as ava_eval_reference.py loads the evaluators)


def load_mmaction2(site: str | None) -> tuple[type, type, str]:
    """MMAction2 1.x's ``RawFrameDecode`` and ``Resize`` classes, and the versions used."""
    if site:
        sys.path.append(site)   # after stdet's environment: its numpy and torch win
    try:
        import cv2
        import mmcv
        import mmengine.logging

        # FileClient's deprecation notices, printed at each RawFrameDecode
        mmengine.logging.MMLogger.get_instance("mmengine").setLevel("ERROR")
    except Exception as exc:
        raise ReferenceUnavailable(f"cannot import OpenCV/mmcv ({type(exc).__name__}: {exc}); "
                                   f"pass --reference-site (see the docstring)") from exc
    spec = importlib.util.find_spec("mmaction")
    if spec is None or not spec.submodule_search_locations:
        raise ReferenceUnavailable("mmaction2 is not installed in the reference site")
    root = Path(list(spec.submodule_search_locations)[0])
    _stand_in_package("mmaction", root)
    _stand_in_package("mmaction.datasets", root / "datasets")
    _stand_in_package("mmaction.datasets.transforms", root / "datasets" / "transforms")
    utils = _stand_in_package("mmaction.utils")
    for name in ("get_random_string", "get_shm_dir", "get_thread_id"):
        setattr(utils, name, lambda *a, **k: None)
    _load("mmaction.registry", root / "registry.py")
    loading = _load("mmaction.datasets.transforms.loading",
                         root / "datasets" / "transforms" / "loading.py")
    processing = _load("mmaction.datasets.transforms.processing",
                            root / "datasets" / "transforms" / "processing.py")
    version = (root / "version.py").read_text().split("__version__ = ")[-1].split("\n")[0]
    return (loading.RawFrameDecode, processing.Resize,
            f"mmaction2 {version.strip(chr(39))}, mmcv {mmcv.__version__}, "
            f"OpenCV {cv2.__version__}")


# ------------------------------------------------------------------------------------------------
# frames


def one_over_f(height: int, width: int, seed: int) -> np.ndarray:
    """A random RGB frame with a natural image's amplitude spectrum (~1/f) and a few flat,
    hard-edged shapes."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = 1
    img = np.stack([np.fft.irfft2((rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape))
                                  / f ** 1.1, s=(height, width)) for _ in range(3)], -1)
    img = (img - img.mean()) / img.std() * 40 + 120
    for _ in range(12):
        h, w = rng.integers(height // 12, height // 3), rng.integers(width // 12, width // 3)
        y, x = rng.integers(0, height - h), rng.integers(0, width - w)
        img[y:y + h, x:x + w] = 0.3 * img[y:y + h, x:x + w] + 0.7 * rng.uniform(0, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def cover(photo: Image.Image, width: int, height: int) -> Image.Image:
    """``photo`` scaled (Lanczos) to cover ``width x height`` and centre-cropped to it."""
    scale = max(width / photo.width, height / photo.height)
    w, h = max(width, round(photo.width * scale)), max(height, round(photo.height * scale))
    big = photo.resize((w, h), Image.LANCZOS)
    left, top = (w - width) // 2, (h - height) // 2
    return big.crop((left, top, left + width, top + height))


def cases(images: list[str]):
    """``(label, [frame, ...])``: CLIP_LEN RGB uint8 frames of one size per case."""
    for w, h in SIZES:
        yield f"1/f {w}x{h}", [one_over_f(h, w, seed) for seed in range(CLIP_LEN)]
    for path in images:
        photo = Image.open(path).convert("RGB")
        name = Path(path).stem
        # the clip's frames: the photo shifted by a few pixels, as a camera pans
        def clip(img: Image.Image):
            a = np.asarray(img)
            return [np.roll(a, 3 * i, axis=1) for i in range(CLIP_LEN)]
        yield f"{name} {photo.width}x{photo.height}", clip(photo)
        for w, h in SIZES:
            grown = " (photo enlarged)" if w > photo.width or h > photo.height else ""
            yield f"{name} -> {w}x{h}{grown}", clip(cover(photo, w, h))


# ------------------------------------------------------------------------------------------------
# the two pipelines


def mmaction2_clip(decode, resize, video_dir: Path, proposals: np.ndarray, short_side: int):
    results = {"frame_dir": str(video_dir), "filename_tmpl": "img_{:05}.jpg",
               "frame_inds": np.arange(1, CLIP_LEN + 1), "modality": "RGB",
               "gt_bboxes": proposals.copy(), "proposals": proposals.copy()}
    results = decode().transform(results)
    results = resize(scale=(-1, short_side)).transform(results)
    return np.stack(results["imgs"]), results["proposals"]


def stdet_clip(root: Path, proposals: np.ndarray, short_side: int, preprocess: str,
               reduced: bool):
    from stdet.data.frames import RawFrames
    from stdet.data.transforms import boxes_to_pixels, test_transforms

    # what AVADataset does: frames read (reduced only under "stdet" with data.reduced_decode),
    # proposals as float32 (select_proposals), boxes in pixels of the decoded frame, transforms
    source = RawFrames(root, min_short_side=short_side if reduced else None)
    clip = source.read("video", range(1, CLIP_LEN + 1))
    h, w = clip.shape[1:3]
    boxes = boxes_to_pixels(np.asarray(proposals, np.float32), w, h)
    clip, (boxes,) = test_transforms(short_side, preprocess)(clip, [boxes])
    return clip, boxes


def compare(a: np.ndarray, b: np.ndarray) -> tuple[str, str, str]:
    if a.shape != b.shape:
        return f"{b.shape[2]}x{b.shape[1]}", "-", "-"
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return f"{b.shape[2]}x{b.shape[1]}", str(int(d.max())), f"{d.mean():.3f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference-site", help="site-packages with mmcv, OpenCV and mmaction2")
    p.add_argument("--images", nargs="*", default=[], help="photos to test as well")
    p.add_argument("--short-side", type=int, default=256, help="the test scale (default 256)")
    args = p.parse_args(argv)
    try:
        decode, resize, versions = load_mmaction2(args.reference_site)
    except ReferenceUnavailable as e:
        print(f"reference unavailable: {e}")
        return 0
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    # normalised x1, y1, x2, y2 (the sort puts the smaller x and y first), float64 as a pickle's
    proposals = np.sort(rng.uniform(0, 1, (8, 2, 2)), axis=1).reshape(8, 4)
    print(f"reference: {versions}; stdet: torch {torch.__version__}; short side "
          f"{args.short_side}; {CLIP_LEN} frames a clip, JPEG quality 90")
    header = ("image", "MMAction2", "stdet: size", "max", "mean", "mmaction2: size", "max",
              "mean", "boxes px", "decode max")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, frames in cases(args.images):
            root = Path(tmp) / label.replace(" ", "_").replace("/", "_")
            video = root / "video"
            video.mkdir(parents=True)
            for i, frame in enumerate(frames, 1):
                Image.fromarray(frame).save(video / f"img_{i:05d}.jpg", quality=90)
            ref, ref_boxes = mmaction2_clip(decode, resize, video, proposals, args.short_side)
            default, _ = stdet_clip(root, proposals, args.short_side, "stdet", reduced=True)
            ours, boxes = stdet_clip(root, proposals, args.short_side, "mmaction2", reduced=False)
            # the decoders alone: full-size PIL (stdet) vs OpenCV (MMAction2), before resizing
            import cv2

            raw = cv2.imdecode(np.fromfile(str(video / "img_00001.jpg"), np.uint8),
                               cv2.IMREAD_COLOR)[:, :, ::-1]
            pil = np.asarray(Image.open(video / "img_00001.jpg").convert("RGB"))
            decode_max = int(np.abs(raw.astype(np.int16) - pil.astype(np.int16)).max())
            box_diff = (f"{np.abs(boxes - ref_boxes).max():.1e}"
                        if boxes.shape == ref_boxes.shape else "-")
            rows.append((label, f"{ref.shape[2]}x{ref.shape[1]}", *compare(ref, default),
                         *compare(ref, ours), box_diff, str(decode_max)))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    print("max / mean: absolute difference from MMAction2's resized clip in grey levels (0-255); "
          "boxes px: largest proposal coordinate difference (preprocess=mmaction2); decode max: "
          "PIL vs OpenCV on the first frame at full size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
