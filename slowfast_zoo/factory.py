"""``create``: a name becomes a module on the requested device, with its weights loaded and its config attached."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
from typing import Any

import torch

from .models.resnet3d import ResNet3d, ResNet3dConfig, ResNet3dFeatures
from .registry.pretrained import PretrainedCfg
from .registry.registry import get_pretrained_cfg
from .weights.checkpoint import LoadReport, load_checkpoint

__all__ = ["create"]

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
        overrides: :class:`ResNet3dConfig` fields, e.g. ``head_pool="fixed"``, ``drop_path_rate=0.1``,
            ``global_pool="max"``; timm's ``drop_rate`` is the ``dropout`` field. Unknown names are a ``TypeError``
            listing the valid ones.
    """
    _check_overrides(overrides)
    if name.startswith("hf-hub:"):  # a repo written by slowfast_zoo.publish.push_to_hub
        from .weights.sources import load_hf_hub_cfg

        cfg = load_hf_hub_cfg(name)
    elif name.startswith("local-dir:"):  # a folder written by slowfast_zoo.publish.save_pretrained: its own weights
        from .weights.publish import load_local_dir

        cfg, weights = load_local_dir(name[len("local-dir:") :])
        checkpoint = checkpoint if checkpoint is not None else weights
    else:
        cfg = get_pretrained_cfg(name)
    changes = dict(overrides)
    if "drop_rate" in changes:  # timm's name for the dropout before the classifier
        changes["dropout"] = changes.pop("drop_rate")
    if num_classes is not None:
        changes["num_classes"] = num_classes
    model_cfg = cfg.model.replace(**changes) if changes else cfg.model
    device = torch.device(device) if device is not None else torch.device("cpu")

    with torch.device("meta"):
        model = ResNet3d(model_cfg)
    model = model.to_empty(device=device)

    report: LoadReport | None = None
    source = checkpoint
    if source is None and pretrained:
        from .weights.sources import pretrained_file  # network and cache code is loaded only when weights are asked for

        source = pretrained_file(cfg)
    if source is not None:
        report = load_checkpoint(model, source, reset_head=num_classes is not None)
        if report.head_reset:
            model.reset_classifier(model_cfg.num_classes)
            log.info("%s: classifier re-initialized for %d classes", cfg.name, model_cfg.num_classes)
    else:
        model.init_weights()
    if dtype is not None:
        model = model.to(dtype=dtype)

    model.pretrained_cfg = _describe(cfg, model_cfg)
    model.load_report = report
    if features_only:
        features = ResNet3dFeatures(model, tuple(out_indices))
        features.pretrained_cfg = model.pretrained_cfg
        return features
    return model


#: config fields that change how the network runs, not what its weights are
_RUNTIME_FIELDS = ("head_pool", "dropout", "bn_momentum", "roi_aligned", "drop_path_rate", "global_pool")


def _check_overrides(overrides: dict[str, Any]) -> None:
    """Refuse keywords that are neither ``create`` arguments nor architecture fields, listing what is valid."""
    fields = [f.name for f in dataclasses.fields(ResNet3dConfig)]
    unknown = sorted(set(overrides) - set(fields) - {"drop_rate"})
    if unknown:
        own = [p for p in inspect.signature(create).parameters if p != "overrides"]
        raise TypeError(
            f"create() got unknown keyword argument(s) {unknown}; valid: its arguments {', '.join(own)}, "
            f"timm's drop_rate, and the ResNet3dConfig fields {', '.join(fields)}"
        )
    if "drop_rate" in overrides and "dropout" in overrides:
        raise TypeError("create(): give drop_rate (timm's name) or dropout, not both")


def _describe(cfg: PretrainedCfg, model_cfg: ResNet3dConfig) -> PretrainedCfg:
    """The config of what was built: provenance is kept only for what the weights still are."""
    if model_cfg == cfg.model:
        return cfg
    changes: dict[str, Any] = {"model": model_cfg}
    if model_cfg.num_classes != cfg.model.num_classes:  # a new classifier: the label set and metrics no longer apply
        changes.update(labels=None, metrics={})
    same_weights = {f: getattr(cfg.model, f) for f in ("num_classes", *_RUNTIME_FIELDS)}
    if model_cfg.replace(**same_weights) != cfg.model:  # another network altogether
        changes.update(tag=None, origin=None, hub=None, metrics={}, params=None, gflops=None)
    return cfg.replace(**changes)
