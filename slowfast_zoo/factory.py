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
from .registry.config_schema import MAX_PARAMS, check_param_count, validate_pretrained_cfg
from .registry.family import Family, family_of
from .registry.pretrained import LoadedWeights, Parent, PretrainedCfg
from .registry.registry import get_pretrained_cfg
from .weights.checkpoint import LoadReport, load_checkpoint

__all__ = ["create", "download_weights", "expected_state_dict", "load_hf_hub_cfg", "resolve_cfg", "verify_weights"]

log = logging.getLogger(__name__)


# long: the package's main entry point (20 lines of docstring); its steps are one straight line, name to module
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
) -> torch.nn.Module:
    """Build a registered model, optionally with weights: its family's builder called with its config.

    Args:
        name: ``arch``, ``arch.tag`` or an alias (see :func:`list_models`); a bare arch picks its default tag;
            ``hf-hub:org/name[@revision]`` builds a model saved by :func:`slowfast_zoo.publish.push_to_hub`,
            ``local-dir:PATH`` one written by :func:`slowfast_zoo.publish.save_pretrained` (with its weights).
        pretrained: load the tag's published weights (Hugging Face Hub, else the authors' file, converted).
        checkpoint: load this file instead: safetensors, PySlowFast/PyTorchVideo ``.pyth`` or Caffe2 ``.pkl``.
        num_classes: a new classifier size; when it differs from the weights, only the classifier is re-initialized.
        device: where the parameters are created (they are never materialized elsewhere first).
        dtype: parameter dtype, e.g. ``torch.bfloat16``.
        features_only: return the family's feature extractor (ResNet3d: a :class:`ResNet3dFeatures` giving the
            per-pathway maps of the stages in ``out_indices``, 0 = stem, 1..4 = res2..res5) instead of logits.
        max_params: refuse (ValueError) a network with more parameters, counted on the ``meta`` device before
            anything is allocated; ``None`` for no limit.
        overrides: fields of the family's config (:class:`ResNet3dConfig` for the zoo's models), e.g.
            ``head_pool="fixed"``, ``drop_path_rate=0.1``,
            ``global_pool="max"``; timm's ``drop_rate`` is the ``dropout`` field. Unknown names are a ``TypeError``
            listing the valid ones.
    """
    cfg, weights = _resolve(name)
    family = family_of(cfg.model)
    _check_overrides(overrides, family)
    if features_only and family.features is None:
        raise ValueError(f"{cfg.name}: the model family {family.name!r} has no features_only form")
    if checkpoint is None and weights is not None:  # a local-dir: folder brings its own weights
        checkpoint = weights
    changes = dict(overrides)
    if "drop_rate" in changes:  # timm's name for the dropout before the classifier
        changes["dropout"] = changes.pop("drop_rate")
    if num_classes is not None:
        changes["num_classes"] = num_classes
    model_cfg = dataclasses.replace(cfg.model, **changes) if changes else cfg.model
    device = _available(torch.device(device) if device is not None else torch.device("cpu"))

    with torch.device("meta"):
        model = family.builder(model_cfg)
    check_param_count(model, max_params, field=f"model ({cfg.arch}, num_classes={model_cfg.num_classes})")
    model = model.to_empty(device=device)

    report: LoadReport | None = None
    loaded: LoadedWeights | None = None
    source: Any = None
    if checkpoint is not None:
        from .weights.formats import read_verified

        # read once, hash that buffer, deserialize that buffer: a file swapped meanwhile cannot load under this hash;
        # a local-dir: folder's file must also hash to what its config.json records
        own = cfg.hub.sha256 if checkpoint is weights and cfg.hub is not None else None
        source = read_verified(checkpoint, own, recorded_in=f"{Path(checkpoint).parent / 'config.json'}")
        loaded = LoadedWeights(str(checkpoint), source.sha256, "checkpoint")
    elif pretrained:
        from .weights.sources import pretrained_state_dict  # network and cache code is loaded only when asked for

        expected = expected_state_dict(cfg) if cfg.origin is not None else None
        found, source = pretrained_state_dict(cfg, expected=expected)  # deserialized from the bytes that were hashed
        loaded = LoadedWeights(str(found.path), found.sha256, "pretrained", found.location)
    if source is not None:
        report = load_checkpoint(model, source, reset_head=num_classes is not None, classifier=_classifier(model_cfg))
        # the zoo's files are safetensors, read from one hashed buffer
        if loaded is not None and loaded.source == "pretrained":
            report.source, report.file_format = loaded.file, "safetensors"
        if report.head_reset:
            _reset_classifier(model, model_cfg)
            log.info("%s: classifier re-initialized for %d classes", cfg.name, model_cfg.num_classes)
    else:
        _init_weights(model)
    if dtype is not None:
        model = model.to(dtype=dtype)

    if loaded is not None and not _as_in_file(report, source, model, dtype):
        from .weights.cache import tensors_sha256

        # the tensors differ from the file's (cast, renamed, filled, new head): fingerprint them as loaded
        loaded = replace(loaded, tensors_sha256=tensors_sha256(model.state_dict()))
    outside = name.startswith(("hf-hub:", "local-dir:"))
    head_reset = bool(report and report.head_reset)
    # torch's stub types Module.__setattr__'s value as Tensor | Module; any other value becomes a plain attribute
    described = _describe(cfg, model_cfg, loaded, head_reset=head_reset, outside=outside)
    model.pretrained_cfg = described  # type: ignore[assignment]
    model.load_report = report  # type: ignore[assignment]
    if features_only and family.features is not None:  # a family without the form was refused above
        features = family.features(model, tuple(out_indices))
        features.pretrained_cfg = model.pretrained_cfg
        return features
    return model


def _classifier(model_cfg: Any) -> str:
    """The key prefix of the classifier (the config's ``classifier``, as timm's; ``head.proj`` when it has none)."""
    return getattr(model_cfg, "classifier", "head.proj")


def _init_weights(model: torch.nn.Module) -> None:
    """Initialize a model materialized by ``to_empty``: its own ``init_weights``, else each layer's default init."""
    init = getattr(model, "init_weights", None)
    if init is not None:
        init()
        return
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None)
        if reset is not None:
            reset()


def _reset_classifier(model: torch.nn.Module, model_cfg: Any) -> None:
    """A fresh classifier of ``model_cfg.num_classes`` outputs: the model's ``reset_classifier``, else the classifier
    layer's own initialization (it was built with that size)."""
    reset_classifier = getattr(model, "reset_classifier", None)
    if reset_classifier is not None:
        reset_classifier(model_cfg.num_classes)
    else:
        getattr(model.get_submodule(_classifier(model_cfg)), "reset_parameters")()  # noqa: B009 (Module.__getattr__ types it a Tensor)


def _as_in_file(report: LoadReport | None, source: Any, model: torch.nn.Module, dtype: torch.dtype | None) -> bool:
    """Whether the model holds exactly the file's tensors (zoo names, same dtypes, nothing filled or re-initialized):
    then the file's sha256 stands for them and no second pass hashes the tensors (``save_pretrained`` compares
    with the file itself when it needs to know)."""
    if report is None or dtype is not None or report.key_scheme != "zoo" or report.filled or report.head_reset:
        return False
    tensors = source.tensors if hasattr(source, "tensors") else source
    own = model.state_dict()
    return tensors.keys() == own.keys() and all(t.dtype == own[k].dtype for k, t in tensors.items())


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


def _check_overrides(overrides: dict[str, Any], family: Family) -> None:
    """Refuse keywords that are neither ``create`` arguments nor architecture fields, listing what is valid."""
    fields = [f.name for f in dataclasses.fields(family.config_cls)]
    unknown = sorted(set(overrides) - set(fields) - {"drop_rate"})
    if unknown:
        own = [p for p in inspect.signature(create).parameters if p != "overrides"]
        raise TypeError(
            f"create() got unknown keyword argument(s) {unknown}; valid: its arguments {', '.join(own)}, "
            f"timm's drop_rate, and the {family.config_cls.__name__} fields {', '.join(fields)}"
        )
    if "drop_rate" in overrides and "dropout" in overrides:
        raise TypeError("create(): give drop_rate (timm's name) or dropout, not both")


#: what no longer applies once the weights are not the published ones
_NOT_PUBLISHED: dict[str, Any] = dict(tag=None, origin=None, hub=None, metrics={})


#: what only the installed package's manifest may say about a set of weights
_PROVENANCE = ("tag", "origin", "hub", "metrics", "license", "citation", "parent")


def _verified(cfg: PretrainedCfg, loaded: LoadedWeights, outside: bool) -> bool:
    """Whether the loaded file is the published one of ``cfg.name``: resolved by the registry from the manifest, or
    with a sha256 the installed manifest (or the zoo's own first download of the authors' file) pins. A folder's
    or repo's ``config.json`` recording its own sha256 vouches for nothing."""
    if loaded.source == "pretrained" and not outside:
        return True
    from .weights.sources import trusted_sha256s

    return loaded.sha256 in trusted_sha256s(cfg)


def _describe(
    cfg: PretrainedCfg,
    model_cfg: Any,
    loaded: LoadedWeights | None,
    *,
    head_reset: bool = False,
    outside: bool = False,
) -> PretrainedCfg:
    """The config of what was built: provenance follows what the weights are, derived from the load."""
    changes: dict[str, Any] = {"model": model_cfg, "weights": loaded}
    new_head = head_reset or model_cfg.num_classes != cfg.model.num_classes
    if new_head:  # the label set (and which classes a benchmark scores) no longer applies
        changes.update(labels=None, evaluated_classes=None)
    own = {f.name for f in dataclasses.fields(model_cfg)}
    same_weights = {f: getattr(cfg.model, f) for f in ("num_classes", *_RUNTIME_FIELDS) if f in own}
    if dataclasses.replace(model_cfg, **same_weights) != cfg.model:  # another network altogether
        return cfg.replace(**changes, **_NOT_PUBLISHED, parent=None, params=None, gflops=None)
    if loaded is None:  # random initialization: nothing of the published weights applies
        return cfg.replace(**changes, **_NOT_PUBLISHED, parent=None)
    verified = _verified(cfg, loaded, outside)
    if verified and outside:  # the published file under a name from outside: the manifest's record, not the folder's
        published = get_pretrained_cfg(cfg.name)
        cfg = cfg.replace(**{f: getattr(published, f) for f in _PROVENANCE})
    if new_head:  # a new classifier on the loaded trunk: the loaded model is its parent
        step = f"classifier re-initialized for {model_cfg.num_classes} classes"
        steps = (*cfg.parent.changes, step) if verified and cfg.parent else (step,)
        parent = Parent(cfg.name if verified else cfg.arch, loaded.sha256, loaded.location, steps)
        return cfg.replace(**changes, **_NOT_PUBLISHED, parent=parent)
    if not verified:  # some file loaded into this architecture: it speaks for itself only
        # an hf-hub: repo's commit and file, checked by the zoo on download, stay as where the weights came from
        hub = cfg.hub if outside and loaded.source == "pretrained" else None
        return cfg.replace(**changes, **{**_NOT_PUBLISHED, "hub": hub}, parent=None)
    return cfg.replace(**changes)


# --- weights by name: the registry and the structure check meet the weights subsystem here ----------------------
def expected_state_dict(cfg: PretrainedCfg) -> dict[str, torch.Tensor]:
    """The ``{key: tensor}`` (on the meta device: shapes and dtypes, no memory) a checkpoint of ``cfg`` must fit."""
    with torch.device("meta"):
        return family_of(cfg.model).builder(cfg.model).state_dict()


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
    from .weights.sources import resolve_weights

    todo = list(list_pretrained()) if all else list(names or [])
    if not todo:
        raise ValueError("name at least one model, or pass all=True")
    keys = ("endpoint", "cache_dir", "local_files_only", "timeout", "token")
    cfg_kwargs = {k: v for k, v in kwargs.items() if k in keys}
    cfgs = [_cfg_for_weights(n, **cfg_kwargs) for n in todo]
    return [resolve_weights(cfg, expected=expected_state_dict(cfg), **kwargs) for cfg in cfgs]


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
