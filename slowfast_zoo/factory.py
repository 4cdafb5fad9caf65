"""``create``: a name becomes a module on the requested device, with its weights loaded and its config attached."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .models.resnet3d import ResNet3d, ResNet3dConfig, ResNet3dFeatures
from .registry.pretrained import LoadedWeights, Parent, PretrainedCfg
from .registry.registry import get_pretrained_cfg
from .weights.checkpoint import LoadReport, load_checkpoint

__all__ = ["create", "resolve_cfg"]

log = logging.getLogger(__name__)


def create(
    name: str,
    *,
    pretrained: bool = False,
    checkpoint: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    features_only: bool = False,
    out_indices: tuple[int, ...] = (1, 2, 3, 4),
    **overrides: Any,
) -> ResNet3d | ResNet3dFeatures:
    """Build a registered model, optionally with weights.

    Args:
        name: ``arch``, ``arch.tag`` or an alias (see :func:`list_models`); a bare arch picks its default tag;
            ``hf-hub:org/name[@revision]`` builds a model saved by :func:`slowfast_zoo.publish.push_to_hub`,
            ``local-dir:PATH`` one written by :func:`slowfast_zoo.publish.save_pretrained` (with its weights).
        pretrained: load the tag's published weights (Hugging Face Hub, else the authors' file, converted).
        checkpoint: load this file instead: safetensors, PySlowFast/PyTorchVideo ``.pyth`` or Caffe2 ``.pkl``.
        num_classes: a new classifier size; when it differs from the weights, only the classifier is re-initialized.
        device: where the parameters are created (they are never materialized elsewhere first).
        dtype: parameter dtype, e.g. ``torch.bfloat16``.
        features_only: return a :class:`ResNet3dFeatures` giving the per-pathway maps of the stages in
            ``out_indices`` (0 = stem, 1..4 = res2..res5) instead of logits.
        overrides: :class:`ResNet3dConfig` fields, e.g. ``head_pool="fixed"`` or ``dropout=0.0``.
    """
    cfg, weights = _resolve(name)
    if checkpoint is None and weights is not None:  # a local-dir: folder brings its own weights
        checkpoint = weights
    changes = dict(overrides)
    if num_classes is not None:
        changes["num_classes"] = num_classes
    model_cfg = cfg.model.replace(**changes) if changes else cfg.model
    device = _available(torch.device(device) if device is not None else torch.device("cpu"))

    with torch.device("meta"):
        model = ResNet3d(model_cfg)
    model = model.to_empty(device=device)

    report: LoadReport | None = None
    source, loaded = checkpoint, None
    if source is None and pretrained:
        from .weights.sources import resolve_weights  # network and cache code is loaded only when weights are asked for

        found = resolve_weights(cfg)
        source = found.path
        loaded = LoadedWeights(str(found.path), found.sha256, "pretrained", found.location)
    if source is not None:
        report = load_checkpoint(model, source, reset_head=num_classes is not None)
        if report.head_reset:
            model.reset_classifier(model_cfg.num_classes)
            log.info("%s: classifier re-initialized for %d classes", cfg.name, model_cfg.num_classes)
        if loaded is None:
            from .weights.sources import sha256_file

            loaded = LoadedWeights(str(source), sha256_file(source), "checkpoint")
    else:
        model.init_weights()
    if dtype is not None:
        model = model.to(dtype=dtype)

    if loaded is not None:
        from .weights.publish import tensors_sha256

        loaded = replace(loaded, tensors_sha256=tensors_sha256(model.state_dict()))
    model.pretrained_cfg = _describe(cfg, model_cfg, loaded, head_reset=bool(report and report.head_reset))
    model.load_report = report
    if features_only:
        features = ResNet3dFeatures(model, tuple(out_indices))
        features.pretrained_cfg = model.pretrained_cfg
        return features
    return model


def resolve_cfg(name: str) -> PretrainedCfg:
    """The pretrained config a name given to :func:`create` stands for: registry name, ``hf-hub:`` or ``local-dir:``."""
    return _resolve(name)[0]


def _resolve(name: str) -> tuple[PretrainedCfg, Path | None]:
    if name.startswith("hf-hub:"):  # a repo written by slowfast_zoo.publish.push_to_hub
        from .weights.sources import load_hf_hub_cfg

        return load_hf_hub_cfg(name), None
    if name.startswith("local-dir:"):  # a folder written by slowfast_zoo.publish.save_pretrained: its own weights
        from .weights.publish import load_local_dir

        return load_local_dir(name[len("local-dir:") :])
    return get_pretrained_cfg(name), None


def _available(device: torch.device) -> torch.device:
    """``device`` if this machine has it, else a clear error (not one from deep inside torch)."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device={str(device)!r} was asked for, but torch sees no CUDA GPU on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(f"device={str(device)!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return device


#: config fields that change how the network runs, not what its weights are
_RUNTIME_FIELDS = ("head_pool", "dropout", "bn_momentum", "roi_aligned")
#: what no longer applies once the weights are not the published ones
_NOT_PUBLISHED: dict[str, Any] = dict(tag=None, origin=None, hub=None, metrics={})


def _verified(cfg: PretrainedCfg, loaded: LoadedWeights) -> bool:
    """Whether the loaded file is the one ``cfg`` describes: fetched and verified by the registry, or hash-pinned."""
    pinned = {h.sha256 for h in (cfg.origin, cfg.hub) if h is not None and h.sha256}
    return loaded.source == "pretrained" or loaded.sha256 in pinned


def _describe(
    cfg: PretrainedCfg, model_cfg: ResNet3dConfig, loaded: LoadedWeights | None, *, head_reset: bool = False
) -> PretrainedCfg:
    """The config of what was built: provenance follows what the weights are, derived from the load."""
    changes: dict[str, Any] = {"model": model_cfg, "weights": loaded}
    new_head = head_reset or model_cfg.num_classes != cfg.model.num_classes
    if new_head:  # the label set (and which classes a benchmark scores) no longer applies
        changes.update(labels=None, evaluated_classes=None)
    same_weights = {f: getattr(cfg.model, f) for f in ("num_classes", *_RUNTIME_FIELDS)}
    if model_cfg.replace(**same_weights) != cfg.model:  # another network altogether
        return cfg.replace(**changes, **_NOT_PUBLISHED, parent=None, params=None, gflops=None)
    if loaded is None:  # random initialization: nothing of the published weights applies
        return cfg.replace(**changes, **_NOT_PUBLISHED, parent=None)
    verified = _verified(cfg, loaded)
    if new_head:  # a new classifier on the loaded trunk: the loaded model is its parent
        step = f"classifier re-initialized for {model_cfg.num_classes} classes"
        steps = (*cfg.parent.changes, step) if verified and cfg.parent else (step,)
        parent = Parent(cfg.name if verified else cfg.arch, loaded.sha256, loaded.location, steps)
        return cfg.replace(**changes, **_NOT_PUBLISHED, parent=parent)
    if not verified:  # some file loaded into this architecture: it speaks for itself only
        return cfg.replace(**changes, **_NOT_PUBLISHED, parent=None)
    return cfg.replace(**changes)
