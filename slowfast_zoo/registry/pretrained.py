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

__all__ = ["HubFile", "LoadedWeights", "Origin", "Parent", "PretrainedCfg", "label_names", "load_manifest"]

MANIFEST = "weights_manifest.json"


@dataclass(frozen=True)
class Origin:
    """The authors' original file and how to read it."""

    url: str
    #: ``caffe2_pkl``, ``pysf_pyth`` (PySlowFast torch.save) or ``ptv_pyth`` (PyTorchVideo)
    format: str
    #: key scheme of its state dict, see :mod:`slowfast_zoo.weights.keys`
    key_scheme: str
    sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class HubFile:
    """The converted safetensors file on the Hugging Face Hub, pinned to a commit."""

    repo_id: str
    revision: str | None = None
    filename: str = "model.safetensors"
    sha256: str | None = None
    size: int | None = None

    @property
    def published(self) -> bool:
        return bool(self.revision and self.sha256)


@dataclass(frozen=True)
class LoadedWeights:
    """The file a model's tensors were loaded from (set by ``create``; None means random initialization)."""

    #: the local file that was read
    file: str
    #: sha256 of that file
    sha256: str
    #: ``pretrained`` (the registry's verified weights) or ``checkpoint`` (a file the caller passed)
    source: str
    #: Hub repo@revision or URL the file came from, when known
    location: str | None = None
    #: sha256 over the tensors as loaded (names, dtypes, shapes, bytes): later training or edits are detectable
    tensors_sha256: str | None = None


@dataclass(frozen=True)
class Parent:
    """The model that fine-tuned or otherwise changed weights derive from."""

    #: its name (``arch.tag``, an ``hf-hub:`` repo or a bare arch)
    name: str
    #: sha256 of the file its weights were loaded from
    sha256: str | None = None
    #: Hub repo@revision or URL of that file
    location: str | None = None
    #: what was done to it, in order (e.g. ``classifier re-initialized for 3 classes``)
    changes: tuple[str, ...] = ()


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
    # temporal sampling: the fast (or only) pathway takes model.num_frames frames every sampling_rate frames
    sampling_rate: int = 8
    target_fps: float = 30.0
    #: ``uniform``: frames at a fixed stride in a clip; ``segment``: middle frame of equal segments (SSv2)
    frame_sampling: Literal["uniform", "segment"] = "uniform"
    # spatial
    train_short_side: tuple[int, int] = (256, 320)
    train_crop_size: int = 224
    test_short_side: int = 256
    test_crop_size: int = 256
    interpolation: str = "bilinear"
    # pixel values: RGB in [0, 1], then (x - mean) / std
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    channel_order: str = "RGB"
    # evaluation protocol
    test_clips: int = 10
    #: spatial crops per clip along the long side (``left`` = left or top)
    test_crops: tuple[str, ...] = ("left", "center", "right")
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
def load_manifest() -> Mapping[str, Mapping[str, Any]]:
    """The weight records of ``weights_manifest.json`` shipped with the package, by ``arch.tag``."""
    text = resources.files("slowfast_zoo").joinpath(MANIFEST).read_text(encoding="utf-8")
    return MappingProxyType(json.loads(text)["models"])


@cache
def evaluated_classes(name: str) -> tuple[int, ...]:
    """Model output indices listed in a label file of ``{id, model_index, name}`` rows (e.g. AVA's evaluated 60)."""
    text = resources.files("slowfast_zoo").joinpath("labels", f"{name}.json").read_text(encoding="utf-8")
    return tuple(row["model_index"] for row in json.loads(text))


@cache
def label_names(labels: str) -> tuple[str, ...]:
    """Class names of a label file in ``slowfast_zoo/labels`` (index = model output)."""
    try:
        text = resources.files("slowfast_zoo").joinpath("labels", f"{labels}.json").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"unknown label set {labels!r}") from None
    names = json.loads(text)
    return tuple(n if isinstance(n, str) else n["name"] for n in names)
