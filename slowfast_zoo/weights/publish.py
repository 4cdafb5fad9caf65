"""Save, publish and load back the zoo's safetensors files on the Hugging Face Hub.

- :func:`~slowfast_zoo.weights.convert.convert` (re-exported here): an upstream checkpoint -> a zoo-keyed
  ``model.safetensors``, checked against the expected structure.
- :func:`save_pretrained`: ``config.json`` (the pretrained config, with the weights' sha256) + ``model.safetensors``
  + ``README.md`` (model card) in a folder; :func:`push_to_hub` uploads that folder as one commit.
- :func:`publish`: convert a registered model from its origin (or a local file), upload it, and return the commit
  and sha256 to paste into ``weights_manifest.json`` (:func:`~slowfast_zoo.weights.manifest.merge_entries`).
"""

# Over ~400 lines: save_pretrained, push_to_hub, the model card and the maintainers' publish share one folder format.

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..version import __version__
from . import cache as c
from .card import model_card
from .convert import ConvertResult, convert, write_safetensors
from .errors import HashMismatchError, SourceFailed, WeightsError, WeightsNotFoundError, WeightsUnavailableError
from .manifest import HubFile, Parent
from .transfer import LIBRARY_NAME

#: a :class:`slowfast_zoo.PretrainedCfg`; weights/ reads its fields and never imports registry/
PretrainedCfg = Any

__all__ = [
    "ConvertResult",
    "PublishResult",
    "convert",
    "model_card",
    "publish",
    "push_to_hub",
    "read_local_dir",
    "save_pretrained",
]

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def _as_saved(model: torch.nn.Module, cfg: PretrainedCfg) -> PretrainedCfg:
    """``cfg`` as it describes the tensors being saved: if they changed since they were loaded (training, edits)
    or were never loaded from a known file, the published tag, origin and metrics no longer apply."""
    loaded = cfg.weights
    same = _unchanged(model, loaded) if loaded is not None else False
    if same:
        return cfg  # exactly the tensors that were loaded
    if loaded is None and not (cfg.tag or cfg.origin or cfg.metrics or cfg.parent):
        return cfg  # nothing published is claimed
    step = "weights changed after loading (trained or edited)"
    if same is None:
        step = f"unchanged weights cannot be shown: {loaded.file} no longer holds the file they were loaded from"
    parent: Parent | None
    if cfg.parent is not None:
        parent = dataclasses.replace(cfg.parent, changes=(*cfg.parent.changes, step))
    elif loaded is not None:
        parent = Parent(cfg.name, loaded.sha256, loaded.location, (step,))
    else:  # a config that claims published weights, but nothing was loaded into this model
        parent = Parent(cfg.name, None, None, ("tensors not loaded from its published file",))
    return cfg.replace(tag=None, origin=None, hub=None, metrics={}, weights=None, parent=parent)


def _unchanged(model: torch.nn.Module, loaded: Any) -> bool | None:
    """Whether the model's tensors are still those it was loaded with (None: the file to compare with is gone).

    ``create`` fingerprints tensors that differ from their file's (``tensors_sha256``); tensors that are exactly
    the file's are compared with that file, read once and checked against its sha256, only here.
    """
    sd = model.state_dict()
    if loaded.tensors_sha256 is not None:
        return loaded.tensors_sha256 == c.tensors_sha256(sd)
    from .formats import CheckpointError, read_verified

    try:
        tensors = read_verified(loaded.file, loaded.sha256).tensors
    except (OSError, CheckpointError):
        return None
    return tensors.keys() == sd.keys() and all(
        t.dtype == sd[k].dtype and t.shape == sd[k].shape and torch.equal(t, sd[k].detach().cpu())
        for k, t in tensors.items()
    )


# --- save / push ----------------------------------------------------------------------------------------------
def _write_folder(
    folder: Path,
    cfg: PretrainedCfg,
    weights: Path,
    sha256: str,
    size: int,
    repo_id: str | None,
    label_names: Sequence[str] | None,
) -> None:
    """config.json + README.md next to an already written model.safetensors."""
    if label_names is None:
        label_names = cfg.label_names
    if label_names is not None and len(label_names) != cfg.num_classes:
        raise ValueError(f"{len(label_names)} label names for {cfg.num_classes} classes")
    hub = HubFile(
        repo_id=repo_id or (cfg.hub.repo_id if cfg.hub else ""),
        revision=None,
        filename=weights.name,
        sha256=sha256,
        size=size,
    )
    cfg = cfg.replace(hub=hub)
    config = {
        "library": "slowfast_zoo",
        "slowfast_zoo_version": __version__,
        "architecture": cfg.arch,
        "name": cfg.name,
        "num_classes": cfg.num_classes,
        "label_names": list(label_names) if label_names is not None else None,
        "pretrained_cfg": cfg.to_dict(),
    }
    c.atomic_write(folder / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")
    card = model_card(cfg, sha256=sha256, size=size, repo_id=repo_id, filename=weights.name)
    c.atomic_write(folder / "README.md", card)


def save_pretrained(
    model: torch.nn.Module,
    save_directory: str | os.PathLike[str],
    *,
    cfg: PretrainedCfg | None = None,
    repo_id: str | None = None,
    label_names: Sequence[str] | None = None,
) -> Path:
    """Write ``model.safetensors`` + ``config.json`` + ``README.md`` for a zoo model into ``save_directory``.

    ``cfg`` defaults to ``model.pretrained_cfg`` (set by :func:`slowfast_zoo.create`); its architecture is taken
    from the model itself. ``label_names`` gives the class names of a fine-tuned model with its own label set.
    Returns the folder.
    """
    cfg = cfg or getattr(model, "pretrained_cfg", None)
    if cfg is None:
        raise ValueError("the model has no pretrained_cfg; pass cfg=")
    model_cfg = getattr(model, "cfg", None)
    if model_cfg is not None and model_cfg != cfg.model:
        cfg = cfg.replace(model=model_cfg)
    if label_names is not None:  # a fine-tuned label set travels inside config.json
        cfg = cfg.replace(labels=tuple(label_names))
    cfg = _as_saved(model, cfg)
    folder = Path(save_directory)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_NAME
    sha, size = write_safetensors(dict(model.state_dict()), weights)
    _write_folder(folder, cfg, weights, sha, size, repo_id, label_names)
    return folder


def read_local_dir(folder: str | os.PathLike[str]) -> tuple[dict[str, Any], Path]:
    """(parsed config.json, weights path) of a folder written by :func:`save_pretrained`.

    ``config.json`` is read under the same size and nesting limits as a Hub repo's. The weights are not read here:
    the caller reads them once, checks that buffer's sha256 against the one ``config.json`` records and
    deserializes the same buffer (:func:`~slowfast_zoo.weights.formats.read_verified`).
    """
    from .formats import read_config

    folder = Path(folder)
    config_path, weights = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_path.is_file() or not weights.is_file():
        raise FileNotFoundError(f"{folder}: expected {CONFIG_NAME} and {WEIGHTS_NAME} written by save_pretrained")
    config = read_config(config_path)
    pretrained = config.get("pretrained_cfg") if isinstance(config, dict) else None
    if not isinstance(pretrained, dict) or not isinstance(pretrained.get("hub") or {}, dict):
        raise ValueError(f"{config_path}: not a slowfast_zoo config (no pretrained_cfg object)")
    return config, weights


@dataclass(frozen=True)
class PublishResult:
    """A commit on the Hub and what to paste into ``weights_manifest.json``."""

    repo_id: str
    revision: str
    filename: str
    sha256: str
    size: int
    commit_url: str
    origin_sha256: str | None = None
    origin_size: int | None = None

    def manifest_entry(self) -> dict[str, Any]:
        """The manifest fields this publication fills in."""
        entry: dict[str, Any] = {
            "hub": {
                "repo_id": self.repo_id,
                "revision": self.revision,
                "filename": self.filename,
                "sha256": self.sha256,
                "size": self.size,
            }
        }
        if self.origin_sha256:
            entry["origin"] = {"sha256": self.origin_sha256, "size": self.origin_size}
        return entry

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision} {self.filename} sha256 {self.sha256} ({self.size} bytes)"


def _upload(folder: Path, repo_id: str, *, origin: tuple[str, int] | None = None, **kw: Any) -> PublishResult:
    """Upload a folder written by :func:`save_pretrained` as one commit; the one upload call site."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    config = json.loads((folder / CONFIG_NAME).read_text())
    hub = config["pretrained_cfg"]["hub"]
    endpoint = c.endpoint_url(kw["endpoint"])
    api = HfApi(endpoint=endpoint, token=kw["token"], library_name=LIBRARY_NAME, library_version=__version__)
    try:
        api.create_repo(repo_id, exist_ok=True, private=kw["private"])
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            revision=kw["branch"],
            commit_message=kw["commit_message"] or f"Upload {config['name']}",
        )
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        raise WeightsError(f"upload of {repo_id} to {endpoint} refused: HTTP {status}: {str(e).splitlines()[0]}") from e
    except Exception as e:  # the HTTP client's own errors (connection refused, DNS, timeouts) have no common base
        if type(e).__module__.split(".")[0] not in ("httpx", "httpx2", "huggingface_hub"):
            raise
        raise WeightsUnavailableError(f"cannot upload {repo_id} to {endpoint}: {type(e).__name__}: {e}") from e
    osha, osize = origin or (None, None)
    return PublishResult(repo_id, info.oid, WEIGHTS_NAME, hub["sha256"], hub["size"], info.commit_url, osha, osize)


def push_to_hub(
    model: torch.nn.Module,
    repo_id: str,
    *,
    cfg: PretrainedCfg | None = None,
    label_names: Sequence[str] | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    private: bool | None = None,
    branch: str | None = None,
    commit_message: str | None = None,
) -> PublishResult:
    """:func:`save_pretrained` into a temporary folder and upload it as one commit (creating the repo if needed).

    Load it back with ``slowfast_zoo.create("hf-hub:<repo_id>@<revision>", pretrained=True)``.
    """
    with tempfile.TemporaryDirectory(prefix="slowfast-zoo-push-") as tmp:
        folder = save_pretrained(model, tmp, cfg=cfg, repo_id=repo_id, label_names=label_names)
        kw: dict[str, Any] = {"endpoint": endpoint, "token": token, "private": private, "branch": branch}
        return _upload(folder, repo_id, commit_message=commit_message, **kw)


def _converted(
    cfg: PretrainedCfg,
    source: str | os.PathLike[str] | None,
    expected: Mapping[str, torch.Tensor],
    out: Path,
    tmp: Path,
    timeout: float | None,
) -> tuple[str, int, str, int]:
    """The authors' file converted into ``out``: (sha256, size, the authors' file's sha256 and size).

    ``source`` is read once, and the sha256 of the very buffer converted must be the one the manifest pins (when
    known). Without it, the file is fetched as ``create(pretrained=True)`` fetches it: the origin URL then its
    mirrors, checked against the manifest's sha256 and size (:func:`~slowfast_zoo.weights.origin.download_origin`).
    """
    from .convert import convert_read
    from .formats import read_checkpoint
    from .origin import converted_paths, download_origin
    from .transfer import Deadline

    origin = cfg.origin
    if source is not None:
        data, actual = c.read_hashed(source)
        if origin is not None and origin.sha256 and actual != origin.sha256:  # refused before it is deserialized
            raise HashMismatchError(
                source=str(source),
                revision=None,
                filename=Path(source).name,
                expected=origin.sha256,
                actual=actual,
                detail=f"the manifest pins this sha256 for {origin.url}",
            )
        raw = read_checkpoint(source, data)
        raw.sha256, raw.size = actual, len(data)
        result = convert_read(raw, cfg, out, expected=expected)
        return result.sha256, result.size, result.source_sha256, result.source_size
    if origin is None:
        raise ValueError(f"{cfg.name} has no origin URL; pass source=<file>")
    zoo = tmp / "zoo"
    try:
        path, digest, _, _ = download_origin(
            cfg, expected, zoo, timeout=c.timeout_seconds(timeout), deadline=Deadline.of(None), allow_changed=False
        )
    except (SourceFailed, WeightsNotFoundError) as e:
        raise WeightsUnavailableError(f"{cfg.name}: cannot download the authors' file: {e}") from None
    meta = json.loads(converted_paths(cfg.name, zoo)[1].read_text())
    os.replace(path, out)
    return digest, out.stat().st_size, meta["origin_sha256"], meta["origin_size"]


def publish(
    cfg: PretrainedCfg,
    repo_id: str | None = None,
    *,
    source: str | os.PathLike[str] | None = None,
    expected: Mapping[str, torch.Tensor],
    endpoint: str | None = None,
    token: str | bool | None = None,
    private: bool | None = None,
    timeout: float | None = None,
    commit_message: str | None = None,
) -> PublishResult:
    """Publish a registered model's weights: convert, write the model card, upload, return revision + sha256.

    Args:
        cfg: the pretrained config of an ``arch.tag`` (``slowfast_zoo.get_pretrained_cfg(name)``).
        repo_id: target repo (default: the manifest's ``hub.repo_id``).
        source: a local copy of the authors' file; by default it is downloaded from the manifest's origin URL or
            its mirrors (and must match the origin sha256 and size when the manifest knows them).
        expected: the structure the converted file must fit (``slowfast_zoo.factory.expected_state_dict(cfg)``).
        endpoint: Hub URL, passed to :class:`huggingface_hub.HfApi` (default ``HF_ENDPOINT``).
        token: passed to :class:`huggingface_hub.HfApi`.
        private: passed to :class:`huggingface_hub.HfApi` when the repo is created.

    The converted file is the same, byte for byte, as what ``create(pretrained=True)`` would convert from the
    origin. Paste :meth:`PublishResult.manifest_entry` into ``weights_manifest.json``.
    """
    if isinstance(cfg, str):
        raise TypeError(f"pass a pretrained config, e.g. slowfast_zoo.get_pretrained_cfg({cfg!r})")
    if not cfg.tag:
        raise ValueError(f"{cfg.name} is an architecture without weights; publish an arch.tag")
    repo_id = repo_id or (cfg.hub.repo_id if cfg.hub else None)
    if not repo_id:
        raise ValueError(f"{cfg.name}: no repo_id given and none in the manifest")
    with tempfile.TemporaryDirectory(prefix="slowfast-zoo-publish-") as tmp:
        folder = Path(tmp, "repo")
        folder.mkdir()
        weights = folder / WEIGHTS_NAME
        sha, size, origin_sha, origin_size = _converted(cfg, source, expected, weights, Path(tmp), timeout)
        _write_folder(folder, cfg, weights, sha, size, repo_id, None)
        message = commit_message or f"Upload {cfg.name} converted from the authors' weights"
        kw = {"endpoint": endpoint, "token": token, "private": private, "branch": None}
        out = _upload(folder, repo_id, origin=(origin_sha, origin_size), commit_message=message, **kw)
    log.info("published %s: %s", cfg.name, out)
    return out
