"""``create``: a name becomes a module on the requested device, with its weights loaded and its config attached."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .errors import DeviceUnavailableError
from .models.resnet3d import ResNet3d, ResNet3dConfig, ResNet3dFeatures
from .registry.config_schema import MAX_PARAMS, check_param_count, validate_pretrained_cfg
from .registry.pretrained import LoadedWeights, Parent, PretrainedCfg
from .registry.registry import get_pretrained_cfg
from .weights.checkpoint import LoadReport, load_checkpoint
from .weights.convert import set_structure_provider

__all__ = ["create", "download_weights", "expected_state_dict", "load_hf_hub_cfg", "resolve_cfg", "verify_weights"]

log = logging.getLogger(__name__)


# long: a third of it is the docstring of the package's main entry point; the steps are one straight line
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
    max_params: int | None = MAX_PARAMS,
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
        max_params: refuse (ValueError) a network with more parameters, counted on the ``meta`` device before
            anything is allocated; ``None`` for no limit.
        overrides: :class:`ResNet3dConfig` fields, e.g. ``head_pool="fixed"``, ``drop_path_rate=0.1``,
            ``global_pool="max"``; timm's ``drop_rate`` is the ``dropout`` field. Unknown names are a ``TypeError``
            listing the valid ones.
    """
    _check_overrides(overrides)
    cfg, weights = _resolve(name)
    if checkpoint is None and weights is not None:  # a local-dir: folder brings its own weights
        checkpoint = weights
    changes = dict(overrides)
    if "drop_rate" in changes:  # timm's name for the dropout before the classifier
        changes["dropout"] = changes.pop("drop_rate")
    if num_classes is not None:
        changes["num_classes"] = num_classes
    model_cfg = cfg.model.replace(**changes) if changes else cfg.model
    device = _available(torch.device(device) if device is not None else torch.device("cpu"))

    with torch.device("meta"):
        model = ResNet3d(model_cfg)
    check_param_count(model, max_params, field=f"model (num_classes={model_cfg.num_classes}, width={model_cfg.width})")
    model = model.to_empty(device=device)

    report: LoadReport | None = None
    source: Any = checkpoint
    loaded: LoadedWeights | None = None
    if source is None and pretrained:
        from .weights.sources import pretrained_state_dict  # network and cache code is loaded only when asked for

        found, source = pretrained_state_dict(cfg)  # tensors deserialized from the very bytes that were hashed
        loaded = LoadedWeights(str(found.path), found.sha256, "pretrained", found.location)
    if source is not None:
        report = load_checkpoint(model, source, reset_head=num_classes is not None, classifier=model_cfg.classifier)
        if loaded is not None:  # the zoo's files are safetensors, read from one hashed buffer
            report.source, report.file_format = loaded.file, "safetensors"
        else:
            from .weights.cache import sha256_file

            # a local-dir: folder's weights were just hashed against its config.json (read_local_dir): reuse that
            own = source is weights and cfg.hub is not None and cfg.hub.sha256
            loaded = LoadedWeights(str(source), own or sha256_file(source), "checkpoint")
        if report.head_reset:
            model.reset_classifier(model_cfg.num_classes)
            log.info("%s: classifier re-initialized for %d classes", cfg.name, model_cfg.num_classes)
    else:
        model.init_weights()
    if dtype is not None:
        model = model.to(dtype=dtype)

    if loaded is not None:
        from .weights.cache import tensors_sha256

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
        cfg, weights = load_hf_hub_cfg(name), None
    elif name.startswith("local-dir:"):  # a folder written by slowfast_zoo.publish.save_pretrained: its own weights
        cfg, weights = _load_local_dir(name[len("local-dir:") :])
    else:
        return get_pretrained_cfg(name), None
    validate_pretrained_cfg(cfg.to_dict())  # a config from outside: every field checked before building
    return cfg, weights


def _available(device: torch.device) -> torch.device:
    """``device`` if this machine has it, else a clear error (not one from deep inside torch)."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"device={str(device)!r} was asked for, but torch sees no CUDA GPU on this machine"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceUnavailableError(
                f"device={str(device)!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)"
            )
    return device


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


# --- weights by name: the registry and the structure check meet the weights subsystem here ----------------------
def expected_state_dict(cfg: PretrainedCfg) -> dict[str, torch.Tensor]:
    """The ``{key: tensor}`` (on the meta device: shapes and dtypes, no memory) a checkpoint of ``cfg`` must fit."""
    with torch.device("meta"):
        return ResNet3d(cfg.model).state_dict()


set_structure_provider(expected_state_dict)  # weights/ checks converted files without importing models/


def load_hf_hub_cfg(spec: str, **kwargs: Any) -> PretrainedCfg:
    """The pretrained config of a ``hf-hub:org/name[@revision]`` repo, its weights pinned to the resolved commit
    and to the sha256 recorded in its verified ``config.json``."""
    from .registry.pretrained import label_names
    from .weights.hub import read_hf_hub_config
    from .weights.manifest import HubFile
    from .weights.sources import WeightsError

    config, repo_id, commit = read_hf_hub_config(spec, **kwargs)
    try:
        cfg = PretrainedCfg.from_dict(config["pretrained_cfg"])
    except (TypeError, ValueError, KeyError) as e:
        raise WeightsError(f"{repo_id}@{commit}: config.json has an invalid pretrained_cfg ({e})") from e
    recorded = cfg.hub
    if recorded is None or not recorded.sha256:
        raise WeightsError(f"{repo_id}@{commit}: config.json records no sha256 for the weights; cannot verify them")
    hub = HubFile(repo_id, commit, recorded.filename, recorded.sha256, recorded.size)
    labels = cfg.labels
    if isinstance(labels, str):
        try:
            label_names(labels)
        except ValueError:  # a label set this installation does not ship: config.json lists the names
            labels = tuple(config["label_names"]) if config.get("label_names") else None
    return cfg.replace(hub=hub, labels=labels)


def _load_local_dir(folder: str | os.PathLike[str]) -> tuple[PretrainedCfg, Any]:
    from .weights.publish import read_local_dir

    config, weights = read_local_dir(folder)
    try:
        return PretrainedCfg.from_dict(config["pretrained_cfg"]), weights
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{folder}: not a slowfast_zoo config ({e})") from e


def _cfg_for_weights(name: str, **kwargs: Any) -> PretrainedCfg:
    from .weights.sources import WeightsUnavailableError

    if name.startswith("hf-hub:"):
        return load_hf_hub_cfg(name, **kwargs)
    cfg = get_pretrained_cfg(name)
    if not cfg.has_weights:
        raise WeightsUnavailableError(f"{cfg.name} has no pretrained weights (see slowfast-zoo list --pretrained)")
    return cfg


def download_weights(names: Iterable[str] | None = None, *, all: bool = False, **kwargs: Any) -> list[Any]:
    """Fetch and verify the weights of ``names`` (``arch.tag``, aliases or ``hf-hub:org/name[@rev]``), or of every
    pretrained model with ``all=True``; one :class:`~slowfast_zoo.weights.sources.Weights` (path, sha256, source)
    per name. ``kwargs`` go to :func:`~slowfast_zoo.weights.sources.resolve_weights`."""
    from .registry.registry import list_pretrained
    from .weights.sources import download

    todo = list(list_pretrained()) if all else list(names or [])
    if not todo:
        raise ValueError("name at least one model, or pass all=True")
    keys = ("endpoint", "cache_dir", "local_files_only", "timeout", "token")
    cfg_kwargs = {k: v for k, v in kwargs.items() if k in keys}
    return download([_cfg_for_weights(n, **cfg_kwargs) for n in todo], **kwargs)


def verify_weights(names: Iterable[str] | None = None, **kwargs: Any) -> list[Any]:
    """Re-hash what the caches hold for ``names`` (default: every pretrained model), without network; see
    :func:`~slowfast_zoo.weights.sources.verify`."""
    from .registry.registry import list_pretrained
    from .weights.sources import verify

    return verify([get_pretrained_cfg(n) for n in (names or list_pretrained())], **kwargs)


def check_manifest(path: str | os.PathLike[str] | None = None) -> list[Any]:
    """Check ``weights_manifest.json`` against its schema and the registered tags (``verify --manifest``)."""
    from .registry.registry import list_pretrained
    from .weights.manifest import verify_manifest

    return verify_manifest(path, {n: get_pretrained_cfg(n) for n in list_pretrained()})
