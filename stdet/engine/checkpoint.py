"""Checkpoints: read MMAction2's (0.x and 1.x) and stdet's own, without running pickled code.

A checkpoint is a torch pickle. Loading one with plain ``torch.load`` can execute any code the
file names, so files are read with ``weights_only=True``; MMAction2 1.x checkpoints also carry
training state (mmengine's ``HistoryBuffer`` objects, numpy scalars) that ``weights_only`` refuses,
and those are read with :class:`_InertUnpickler`, which builds tensors, containers and numpy arrays
and turns every other class into an inert placeholder that runs nothing.

MMAction2 names its layers differently (mmcv's ``ConvModule`` wraps ``conv`` and ``bn``);
:func:`convert_state_dict` maps them to stdet's names::

    backbone.conv1.conv.weight                  -> backbone.stem.conv.weight
    backbone.layer1.0.conv2.bn.running_mean     -> backbone.layer1.0.bn2.running_mean
    backbone.layer1.0.downsample.conv.weight    -> backbone.layer1.0.downsample.0.weight
    backbone.layer2.0.non_local_block.phi.0.conv.bias  -> backbone.layer2.0.non_local.phi.bias
    backbone.slow_path.* / fast_path.*          -> backbone.slow.* / backbone.fast.*
    backbone.slow_path.conv1_lateral.conv.weight  -> backbone.laterals.0.weight
    backbone.slow_path.layer2_lateral.conv.weight -> backbone.laterals.2.weight
    roi_head.bbox_head.fc_cls.*                 -> head.classifier.*
    roi_head.shared_head.conv1.conv/bn.*        -> shared_head.conv1/bn1.*   (ACRN)
    roi_head.shared_head.fbo.non_local_layer_1.global_conv.conv.weight
                                   -> shared_head.fbo.non_local_layer_1.global_conv.weight  (LFB)
    roi_head.shared_head.fbo.st_feat_conv.weight -> shared_head.fbo.st_feat_conv.weight     (LFB)

A Kinetics recognizer checkpoint (``backbone.*`` and ``cls_head.*``) initialises the backbone; its
classifier is reported as unused.
"""
from __future__ import annotations

import io
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..data.errors import AVADataError
from ..data.io import atomic_write_bytes
from ..data.proposals import _GUARDS as _NUMPY_GUARDS

# ------------------------------------------------------------------------------------------------
# reading


class _Inert:
    """Stands in for a class the checkpoint names but stdet does not trust; keeps what it was given."""

    _qualname = "?"
    args: tuple = ()
    kwargs: dict = {}
    state = None

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<unloaded {self._qualname}>"


def _allowed(module: str, name: str) -> bool:
    if (module, name) == ("collections", "OrderedDict"):
        return True
    if module == "torch._utils" and name.startswith("_rebuild_"):
        return True
    if module == "torch" and (name.endswith("Storage") or name in ("Size", "device")
                              or isinstance(getattr(torch, name, None), torch.dtype)):
        return True
    if module == "torch._tensor" and name == "_rebuild_from_type_v2":
        return True
    return module.startswith("numpy.dtypes") and name.endswith("DType")


class _InertUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        # numpy arrays through the proposals reader's guards: a small file can neither allocate
        # gigabytes (a huge shape, bytes(n), chained encodes) nor crash numpy (an object array)
        guard = _NUMPY_GUARDS.get((module, name))
        if guard is not None:
            return guard
        if _allowed(module, name):
            return super().find_class(module, name)
        return type(name, (_Inert,), {"_qualname": f"{module}.{name}"})


class _InertPickleModule:
    """A ``pickle_module`` for ``torch.load`` whose unpickler never resolves untrusted globals."""

    Unpickler = _InertUnpickler
    load = staticmethod(lambda f, **kw: _InertUnpickler(f, **kw).load())
    __name__ = "stdet_inert_pickle"


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The object saved in ``path`` (a dict for every checkpoint stdet reads), on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise AVADataError(path, "checkpoint not found")
    data = path.read_bytes()
    if not data.startswith((b"PK\x03\x04", b"\x80")):  # torch's zip format, or a legacy pickle
        raise AVADataError(path, "not a PyTorch checkpoint (neither torch.save's zip archive nor "
                           "a pickle)")
    try:
        # torch's weights_only reader calls _codecs.encode with any codec: chained "hex" encodes
        # double a few bytes of pickle at every step; a pickle naming it is read by the inert
        # reader, whose numpy guards allow only latin1 text
        if b"_codecs" in data:
            raise pickle.UnpicklingError("_codecs")
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False,
                             pickle_module=_InertPickleModule)
        except Exception as e:
            raise AVADataError(path, f"cannot read checkpoint: {type(e).__name__}: {e}") from None
    except Exception as e:
        raise AVADataError(path, f"cannot read checkpoint: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise AVADataError(path, f"expected a dict, got {type(obj).__name__}")
    return obj


def _state_dict_of(obj: dict, path: Path) -> dict[str, Tensor]:
    """The weights of a checkpoint dict: under ``state_dict`` / ``model`` / ``module``, or the dict
    itself; a ``module.`` prefix (DataParallel) is dropped."""
    for key in ("state_dict", "model", "model_state", "module"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    state = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not state:
        raise AVADataError(path, "no tensors found (expected a 'state_dict' of weights)")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


# ------------------------------------------------------------------------------------------------
# MMAction2 names -> stdet names

_RULES: list[tuple[re.Pattern, str]] = [(re.compile(p), r) for p, r in [
    # SlowFast pathways and laterals
    (r"^backbone\.slow_path\.conv1_lateral\.conv\.", "backbone.laterals.0."),
    (r"^backbone\.slow_path\.layer(\d)_lateral\.conv\.", r"backbone.laterals.\1."),
    (r"^backbone\.slow_path\.", "backbone.slow."),
    (r"^backbone\.fast_path\.", "backbone.fast."),
    # stems
    (r"^backbone\.((?:slow\.|fast\.)?)conv1\.conv\.", r"backbone.\1stem.conv."),
    (r"^backbone\.((?:slow\.|fast\.)?)conv1\.bn\.", r"backbone.\1stem.bn."),
    # non-local blocks
    (r"\.non_local_block\.(g|phi)\.0\.conv\.", r".non_local.\1."),
    (r"\.non_local_block\.theta\.conv\.", ".non_local.theta."),
    (r"\.non_local_block\.conv_out\.conv\.", ".non_local.out_conv."),
    (r"\.non_local_block\.conv_out\.bn\.", ".non_local.out_bn."),
    # blocks (and ACRN): convK.conv -> convK, convK.bn -> bnK
    (r"\.downsample\.conv\.", ".downsample.0."),
    (r"\.downsample\.bn\.", ".downsample.1."),
    (r"\.conv(\d)\.conv\.", r".conv\1."),
    (r"\.conv(\d)\.bn\.", r".bn\1."),
    # LFB non-local operator: the ConvModules of its layers -> plain convs
    (r"(\.fbo\.non_local_layer_\d+\.\w+_conv)\.conv\.", r"\1."),
    # RoI heads
    (r"^roi_head\.bbox_head\.fc_cls\.", "head.classifier."),
    (r"^roi_head\.shared_head\.", "shared_head."),
]]


def convert_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """MMAction2 detector/recognizer weights -> stdet ``ActionDetector`` names (stdet names pass
    unchanged)."""
    out = {}
    for key, value in state.items():
        new = key
        for pattern, repl in _RULES:
            new = pattern.sub(repl, new)
        out[new] = value
    return out


# ------------------------------------------------------------------------------------------------
# loading into a model


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did: keys loaded, keys the model kept (missing), keys of the
    file the model has no place for (unexpected), and shape mismatches (also not loaded)."""

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    # settings the model must change to compute what an MMAction2 file was trained to (callers
    # warn with them: :func:`origin_notes`)
    notes: list[str] = field(default_factory=list)
    # what the file says of the MMAction2 code that trained it (:func:`mmaction2_origin`)
    origin: dict = field(default_factory=dict)

    @property
    def covers(self) -> bool:
        """Whether every weight of the model came from the file (unexpected keys aside)."""
        return not (self.missing or self.mismatched)

    def summary(self, examples: int = 2) -> str:
        """One line: how many keys are missing, mismatched and unexpected, with examples."""
        parts = []
        for title, keys in (("missing", self.missing), ("shape mismatches", self.mismatched),
                            ("unexpected", self.unexpected)):
            if keys:
                more = " ..." if len(keys) > examples else ""
                parts.append(f"{len(keys)} {title} ({'; '.join(keys[:examples])}{more})")
        return ", ".join(parts) or f"all {len(self.loaded)} tensors match"

    def __str__(self) -> str:
        lines = [f"{self.path}: loaded {len(self.loaded)} tensors"]
        for title, keys in (("missing (kept the model's values)", self.missing),
                            ("unexpected (not used)", self.unexpected),
                            ("shape mismatch (not loaded)", self.mismatched)):
            if keys:
                lines.append(f"  {title}: {len(keys)}")
                lines.extend(f"    {k}" for k in keys)
        return "\n".join(lines)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Weights of an MMAction2 or stdet checkpoint, in stdet names."""
    path = Path(path)
    return convert_state_dict(_state_dict_of(read_checkpoint(path), path))


_MAX_POOL = re.compile(r"""temporal_pool_mode\s*=\s*['"]max['"]""")


def mmaction2_origin(obj: dict) -> dict:
    """What a checkpoint says of the MMAction2 code that trained it:
    ``{"version": ..., "temporal_pool": "avg" | "max" | None}``, ``{}`` for stdet's own.

    ``version``: ``"1.x"`` (mmengine's runner: ``mmengine_version`` in ``meta``, the config
    text as ``meta["cfg"]``, a ``message_hub``), ``"0.x"`` (mmcv's runner: ``mmcv_version``, the
    text as ``meta["config"]``), ``"unknown"`` (no such meta, weights in MMAction2's names); a file
    written by ``convert`` keeps its source's facts (``"converted"`` where an earlier stdet wrote
    none). ``temporal_pool``: the pooling of the RoI features over time as the stored config
    sets it (``temporal_pool_mode``, average by default); without the text, 1.x ACRN weights
    mean average: MMAction2 1.x's ACRN configs dropped the ``temporal_pool_mode='max'`` of 0.x,
    and the ACRN checkpoints republished for 1.x were trained that way. (stdet's own meta holds
    a ``config`` name too: only the runners' version keys mark MMAction2's files.)"""
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    if isinstance(meta.get("mmaction2"), dict):  # converted
        return dict(meta["mmaction2"])
    if "converted_from" in meta:
        return {"version": "converted", "temporal_pool": None}
    weights = obj.get("state_dict") if isinstance(obj.get("state_dict"), dict) else obj
    if "mmengine_version" in meta or "message_hub" in obj:
        version, text = "1.x", meta.get("cfg")
    elif "mmcv_version" in meta:
        version, text = "0.x", meta.get("config")
    elif (names := [k for k in weights if isinstance(k, str)]) and \
            list(convert_state_dict(dict.fromkeys(names))) != names:  # some MMAction2 name
        version, text = "unknown", None
    else:
        return {}
    pool = None
    if isinstance(text, str) and "with_temporal_pool" in text:
        pool = "max" if _MAX_POOL.search(text) else "avg"
    elif version == "1.x" and any(str(k).startswith("roi_head.shared_head.conv1") for k in weights):
        pool = "avg"  # ACRN
    return {"version": version, "temporal_pool": pool}


def origin_notes(origin: dict, model: nn.Module, path) -> list[str]:
    """What a model built from a stdet config must change to compute what the MMAction2
    checkpoint ``origin`` (:func:`mmaction2_origin`) was trained to compute."""
    extractor = getattr(model, "roi_extractor", None)
    pool = origin.get("temporal_pool")
    if extractor is None or pool is None or extractor.temporal_pool == pool:
        return []
    why = ("its ACRN config dropped 0.x's temporal_pool_mode='max'"
           if origin.get("version") == "1.x" and pool == "avg" else "as its config sets it")
    return [f"{path} is an MMAction2 {origin['version']} checkpoint whose RoI features are pooled "
            f"over time by {'average' if pool == 'avg' else 'maximum'} ({why}); this model pools "
            f"by {extractor.temporal_pool}: set model.head.temporal_pool={pool}"]


def load_checkpoint(model: nn.Module, path: str | os.PathLike, strict: bool = False) -> LoadReport:
    """Load MMAction2 (0.x / 1.x detector or Kinetics recognizer) or stdet weights into ``model``.

    ``model`` is an ``ActionDetector`` or a bare backbone (then only ``backbone.*`` keys are
    used). Missing, unexpected and mismatched keys are reported by name; with ``strict=True`` any
    of them raises ``KeyError`` after the report is built, before the model is touched.
    """
    path = Path(path)
    obj = read_checkpoint(path)
    state = convert_state_dict(_state_dict_of(obj, path))
    own = model.state_dict()
    if not any(k.startswith("backbone.") for k in own) and any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    report = _load_matching(model, state, path, strict=strict)
    report.origin = mmaction2_origin(obj)
    report.notes = origin_notes(report.origin, model, path)
    return report


def _load_matching(module: nn.Module, state: dict[str, Tensor], path, prefix: str = "",
                   strict: bool = False) -> LoadReport:
    """Load the tensors of ``state`` whose name and shape ``module`` has; report the rest (names
    shown with ``prefix``)."""
    report, usable = match_state(module.state_dict(), state, path, prefix)
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise KeyError(str(report))
    module.load_state_dict(usable, strict=False)
    return report


def match_state(own: dict[str, Tensor], state: dict[str, Tensor], path,
                prefix: str = "") -> tuple[LoadReport, dict[str, Tensor]]:
    """Which tensors of ``state`` fit a model whose state dict is ``own`` (same name and shape):
    the report of what fits and what does not (names shown with ``prefix``), and the fitting
    tensors."""
    report = LoadReport(str(path))
    usable = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(prefix + key)
        elif own[key].shape != value.shape:
            report.mismatched.append(f"{prefix}{key}: file {tuple(value.shape)} vs model "
                                     f"{tuple(own[key].shape)}")
        else:
            usable[key] = value
    report.missing = [prefix + k for k in own if k not in usable and not k.endswith("num_batches_tracked")]
    report.loaded = sorted(prefix + k for k in usable)
    return report, usable


def save_checkpoint(path: str | os.PathLike, model: nn.Module | dict[str, Tensor],
                    meta: dict | None = None, **extra) -> None:
    """Write ``{"state_dict", "meta", **extra}`` atomically (readable with ``weights_only=True``)."""
    state = model.state_dict() if isinstance(model, nn.Module) else model
    buffer = io.BytesIO()
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in state.items()},
                "meta": dict(meta or {}), **extra}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> dict[str, Tensor]:
    """Read an MMAction2 checkpoint and write its weights in stdet names to ``dst``."""
    obj = read_checkpoint(src)
    state = convert_state_dict(_state_dict_of(obj, Path(src)))
    meta = {"converted_from": str(src)}
    origin = mmaction2_origin(obj)
    if origin:
        meta["mmaction2"] = origin
    save_checkpoint(dst, state, meta=meta)
    return state


def _is_two_pathway(keys) -> bool:
    return any(k.startswith(("slow.", "fast.")) for k in keys)


def init_backbone(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Initialise ``model.backbone`` from the ``backbone.*`` weights of a checkpoint.

    The file is a Kinetics recognizer or an AVA detector, MMAction2's or stdet's; its other
    weights (a classifier for other classes, another head) are not used. A single-pathway
    (SlowOnly) backbone also initialises a SlowFast one: its weights go to the slow pathway, and
    the input channels that the slow pathway's convs receive from the laterals start at zero, so
    the SlowFast model starts out computing the SlowOnly one's slow features, and the fast pathway
    and the laterals start from their own initialisation.
    """
    state = {k[len("backbone."):]: v for k, v in load_state_dict_file(path).items()
             if k.startswith("backbone.")}
    if not state:
        raise KeyError(f"{path}: no backbone.* weights")
    own = model.backbone.state_dict()
    inflate = _is_two_pathway(own) and not _is_two_pathway(state)
    if inflate:
        state = {f"slow.{k}": v for k, v in state.items()}
        for key, value in state.items():
            target = own.get(key)
            if (target is not None and value.dim() == 5 and target.dim() == 5
                    and target.shape[0] == value.shape[0] and target.shape[2:] == value.shape[2:]
                    and target.shape[1] > value.shape[1]):
                padded = value.new_zeros(target.shape)
                padded[:, : value.shape[1]] = value   # slow channels first, then the lateral's
                state[key] = padded
    return _load_matching(model.backbone, state, path, prefix="backbone.")
