"""A malicious pickle given as a checkpoint, in every pickle format the zoo accepts, is refused unexecuted."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_server import caches_fixture, hub_fixture, tiny_cfg  # noqa: F401  (fixtures)

import slowfast_zoo
from slowfast_zoo import CheckpointError
from slowfast_zoo.registry.pretrained import Origin
from slowfast_zoo.weights.checkpoint import read_state_dict
from slowfast_zoo.weights.publish import convert, publish
from slowfast_zoo.weights.sources import pretrained_file

NAME = "slow_r50_8x8.k400_pysf"


class Evil:
    """Unpickling this calls ``os.mkdir(marker)``: any code execution leaves the marker directory behind."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _payloads(marker: Path) -> dict[str, bytes]:
    """One malicious file per accepted pickle-based format (and the older pickle protocols)."""
    evil = Evil(marker)
    weight = np.zeros((2, 3, 1, 1, 1), dtype=np.float32)
    out = {}
    # Caffe2 .pkl: a protocol-2 pickle {'blobs': {...}}, the payload as a blob and at the top level
    out["caffe2_blob"] = pickle.dumps({"blobs": {"conv1_w": weight, "pred_w": evil}}, protocol=2)
    out["caffe2_top"] = pickle.dumps(evil, protocol=2)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        out[f"pickle_protocol{protocol}"] = pickle.dumps({"blobs": {"conv1_w": evil}}, protocol=protocol)
    # PyTorch: zip (the default since 1.6) and legacy torch.save (PySlowFast .pyth, multigrid .pkl), PTV layout
    for zip_format in (True, False):
        for label, obj in (
            ("pysf", {"epoch": 1, "model_state": {"s1.pathway0_stem.conv.weight": torch.zeros(1), "x": evil}}),
            ("ptv", {"model_state": evil}),
        ):
            buf = io.BytesIO()
            torch.save(obj, buf, _use_new_zipfile_serialization=zip_format)
            out[f"torch_{'zip' if zip_format else 'legacy'}_{label}"] = buf.getvalue()
    return out


def test_the_payload_is_live(tmp_path):
    """Plain pickle.loads would run it: the refusal below is not vacuous."""
    marker = tmp_path / "ran"
    pickle.loads(_payloads(marker)["caffe2_blob"])
    assert marker.is_dir()


@pytest.mark.parametrize("fmt", sorted(_payloads(Path("unused"))))
def test_malicious_checkpoint_refused(tmp_path, fmt):
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil-{fmt}.pkl"
    path.write_bytes(_payloads(marker)[fmt])
    with pytest.raises(CheckpointError):
        read_state_dict(path)
    with pytest.raises(CheckpointError):
        slowfast_zoo.create(NAME, width=8, checkpoint=path)
    with pytest.raises(CheckpointError):
        convert(path, tiny_cfg(NAME), tmp_path / "out.safetensors")
    assert not marker.exists(), "the pickle's code ran"
    assert not (tmp_path / "out.safetensors").exists()


def test_malicious_origin_download_refused(hub, caches, tmp_path):
    marker = tmp_path / "pwned"
    data = _payloads(marker)["caffe2_blob"]
    cfg = tiny_cfg(NAME, origin=Origin(hub.serve_file("evil/SLOW_8x8_R50.pkl", data), "caffe2_pkl", "caffe2"))
    with pytest.raises(CheckpointError):
        pretrained_file(cfg)
    assert not marker.exists()
    assert not [p for p in caches.zoo.rglob("*") if p.is_file() and ".locks" not in p.parts]


def test_malicious_publish_source_refused(hub, caches, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pyth"
    path.write_bytes(_payloads(marker)["torch_legacy_pysf"])
    with pytest.raises(CheckpointError):
        publish(tiny_cfg(NAME), "org/evil", source=path, endpoint=hub.url)
    assert not marker.exists()
    assert "org/evil" not in hub.repos and not [r for r in hub.requests if r.method == "POST"]
