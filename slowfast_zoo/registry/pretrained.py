"""Pretrained configs: everything a checkpoint was trained and evaluated with, attached to every created model."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal

from ..models.resnet3d import ResNet3dConfig
from ..weights.manifest import HubFile, LoadedWeights, Origin, Parent, load_manifest

__all__ = [
    "HubFile",
    "LoadedWeights",
    "Origin",
    "Parent",
    "PretrainedCfg",
    "label_names",
    "label_set_names",
    "load_manifest",
]


#: where a test crop sits along the frame's long side, or the whole frame
Crop = Literal["left", "top", "center", "centre", "right", "bottom", "full"]


@dataclass(frozen=True)
class PretrainedCfg:
    """Architecture, preprocessing, evaluation protocol and provenance of one ``arch.tag``."""

    arch: str
    tag: str | None
    model: ResNet3dConfig
    dataset: str = "kinetics400"
    #: label set shipped in ``slowfast_zoo/labels`` (by name), or the class names themselves (index = model output)
    labels: str | tuple[str, ...] | None = "kinetics400"
    #: model outputs the benchmark scores (AVA: the 60 of 80 actions in its mAP), or None for all of them
    evaluated_classes: tuple[int, ...] | None = None
    #: detectors: person boxes of the proposals file kept at this score or above (``AVA.DETECTION_SCORE_THRESH``)
    person_score_threshold: float | None = None
    # temporal sampling: the fast (or only) pathway takes model.num_frames frames every sampling_rate frames
    sampling_rate: int = 8
    target_fps: float = 30.0
    #: ``uniform``: frames at a fixed stride in a clip; ``segment``: middle frame of equal segments (SSv2)
    frame_sampling: Literal["uniform", "segment"] = "uniform"
    #: how the test protocol places clips and picks their frames (:mod:`slowfast_zoo.video.views`):
    #: ``pysf_uniform`` (PySlowFast ``decoder.py``), ``ptv_constant`` (pytorchvideo 0.1.5 constant-clips sampler),
    #: ``pysf_charades`` (PySlowFast ``charades.py``), ``ptv_charades`` (its pytorchvideo Charades wrapper),
    #: ``segments`` (SSv2), ``keyframe`` (AVA)
    test_clip_sampler: Literal[
        "pysf_uniform", "ptv_constant", "pysf_charades", "ptv_charades", "segments", "keyframe"
    ] = "pysf_uniform"
    # spatial
    train_short_side: tuple[int, int] = (256, 320)
    train_crop_size: int = 224
    test_short_side: int = 256
    test_crop_size: int = 256
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    #: random horizontal flip in training (off where labels depend on direction, e.g. Something-Something)
    train_flip: bool = True
    #: normalize before resizing (PySlowFast Kinetics) or after (PySlowFast AVA)
    normalize_before_resize: bool = True
    # pixel values: RGB in [0, 1], then (x - mean) / std
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    #: always RGB, the only order accepted: every authors' checkpoint was trained and tested on RGB. PySlowFast
    #: (facebookresearch/SlowFast 287ec00) decodes Kinetics with PyAV in RGB; it reads Charades and SSv2 frames
    #: with cv2 (BGR) and flips them back (``DATA.REVERSE_INPUT_CHANNEL: True`` in configs/Charades/*.yaml and
    #: configs/SSv2/*.yaml, applied in slowfast/datasets/utils.py ``pack_pathway_output``); AVA flips cv2's BGR to
    #: RGB unless ``AVA.BGR`` (False in every configs/AVA/c2/*.yaml). PyTorchVideo decodes RGB.
    channel_order: Literal["RGB"] = "RGB"
    # evaluation protocol
    test_clips: int = 10
    #: spatial crops per clip along the long side (``left`` = left or top); ``("full",)``: the whole frame (AVA)
    test_crops: tuple[Crop, ...] = ("left", "center", "right")
    activation: Literal["softmax", "sigmoid"] = "softmax"
    #: how view scores are combined: ``mean`` or ``max``
    ensemble: Literal["mean", "max"] = "mean"
    #: head pooling the reference evaluated with
    test_head_pool: Literal["fixed", "adaptive"] = "fixed"
    # provenance (from weights_manifest.json)
    metrics: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    params: int | None = None
    gflops: float | None = None
    origin: Origin | None = None
    hub: HubFile | None = None
    license: str | None = None
    citation: str | None = None
    notes: str = ""
    #: the file the tensors were loaded from (None: not loaded, e.g. random initialization)
    weights: LoadedWeights | None = None
    #: the model these weights derive from, when they are not the published ones unchanged
    parent: Parent | None = None

    @property
    def name(self) -> str:
        return f"{self.arch}.{self.tag}" if self.tag else self.arch

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def num_frames(self) -> int:
        return self.model.num_frames

    @property
    def alpha(self) -> int | None:
        return self.model.alpha

    @property
    def has_weights(self) -> bool:
        return self.origin is not None or self.hub is not None

    @property
    def label_names(self) -> tuple[str, ...] | None:
        if isinstance(self.labels, tuple):
            return self.labels
        return label_names(self.labels) if self.labels else None

    def replace(self, **changes: Any) -> PretrainedCfg:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (what ``config.json`` of a Hub repo holds)."""
        return _jsonable(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PretrainedCfg:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["model"] = _dataclass_from_dict(ResNet3dConfig, d["model"])
        for key, kind in (("origin", Origin), ("hub", HubFile), ("weights", LoadedWeights), ("parent", Parent)):
            if d.get(key) is not None:
                d[key] = _dataclass_from_dict(kind, d[key])
        d["metrics"] = MappingProxyType(dict(d.get("metrics") or {}))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown pretrained config field(s): {sorted(unknown)}")
        return _dataclass_from_dict(cls, d)


def _jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x):
        return {f.name: _jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, Mapping):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x


def _dataclass_from_dict(cls: type, d: Mapping[str, Any]) -> Any:
    return cls(**{k: _tuplify(v) for k, v in d.items()})


@cache
def label_set_names() -> frozenset[str]:
    """Names of the label sets shipped in ``slowfast_zoo/labels`` (the only names a config may refer to)."""
    folder = resources.files("slowfast_zoo").joinpath("labels")
    return frozenset(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def _label_file(name: str) -> str:
    # a name is looked up in the package's own list, never joined into a path: '../x' cannot reach another file
    if not isinstance(name, str) or name not in label_set_names():
        raise ValueError(f"unknown label set {name!r}; known: {sorted(label_set_names())}")
    return (resources.files("slowfast_zoo") / "labels" / f"{name}.json").read_text(encoding="utf-8")


@cache
def evaluated_classes(name: str) -> tuple[int, ...]:
    """Model output indices listed in a label file of ``{id, model_index, name}`` rows (e.g. AVA's evaluated 60)."""
    return tuple(row["model_index"] for row in json.loads(_label_file(name)))


@cache
def label_names(labels: str) -> tuple[str, ...]:
    """Class names of a label file in ``slowfast_zoo/labels`` (index = model output)."""
    names = json.loads(_label_file(labels))
    return tuple(n if isinstance(n, str) else n["name"] for n in names)
