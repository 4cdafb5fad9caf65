"""Reading checkpoints: every accepted format, clear errors for everything else, strict loading, head re-init."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import slowfast_zoo
from slowfast_zoo import CheckpointError
from slowfast_zoo.weights.checkpoint import read_state_dict
from slowfast_zoo.weights.keys import from_zoo

DATA = Path(__file__).resolve().parents[1] / "data"


TINY = dict(width=8, num_classes=10, num_frames=16)


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    """The slowfast_r50_8x8 fixture network as PySlowFast wrote it."""
    return slowfast_zoo.create("slowfast_r50_8x8", checkpoint=DATA / "slowfast_r50_8x8.pyslowfast.pyth", **TINY)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def write(path, kind: str, sd: dict[str, torch.Tensor]) -> None:
    if kind == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif kind == "zip":
        torch.save({"model_state": sd, "epoch": 3, "cfg": "MODEL:\n  ARCH: slowfast\n"}, path)
    elif kind == "legacy":
        torch.save({"model_state": sd}, path, _use_new_zipfile_serialization=False)
    elif kind == "plain":
        torch.save(sd, path)
    elif kind == "ddp":
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)


@pytest.mark.parametrize("kind", ["safetensors", "zip", "legacy", "plain", "ddp"])
@pytest.mark.parametrize("scheme", ["zoo", "pysf", "ptv", "ptv_wrapper"])
def test_every_container_and_scheme_loads(tmp_path, reference, kind: str, scheme: str) -> None:
    path = tmp_path / "weights.bin"  # the extension says nothing: formats are detected from the bytes
    write(path, kind, from_zoo(reference.state_dict(), scheme))
    model = slowfast_zoo.create("slowfast_r50_8x8", checkpoint=path, **TINY)
    assert model.load_report.key_scheme == scheme
    assert same_weights(model, reference)


def test_state_dict_in_memory_loads(reference) -> None:
    model = slowfast_zoo.create("slowfast_r50_8x8", **TINY)
    report = slowfast_zoo.load_checkpoint(model, from_zoo(reference.state_dict(), "pysf"))
    assert report.key_scheme == "pysf" and same_weights(model, reference)


@pytest.mark.parametrize(
    "file", ["slowfast_r50_8x8.caffe2.pkl", "slowfast_r50_8x8.pyslowfast.pyth", "slow_r50_8x8_ptv.ptv_wrapper.pyth"]
)
def test_truncated_files_fail_with_the_file_name(tmp_path, file: str) -> None:
    data = (DATA / file).read_bytes()
    path = tmp_path / file
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{path}.*(truncated|corrupt|not a readable)"):
        read_state_dict(path)


def test_truncated_safetensors(tmp_path, reference) -> None:
    path = tmp_path / "model.safetensors"
    write(path, "safetensors", reference.state_dict())
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated safetensors"):
        read_state_dict(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "unknown checkpoint format"),
        (b"<html>404 Not Found</html>", "unknown checkpoint format.*<html>"),
        (pickle.dumps([1, 2, 3], protocol=2), "neither a Caffe2"),
        (pickle.dumps({"blobs": [1]}, protocol=2), "'blobs' is list"),
        (pickle.dumps({"blobs": {"conv1_w": "text"}}, protocol=2), "'conv1_w' is str"),
    ],
)
def test_garbage_is_refused_with_what_was_expected(tmp_path, content: bytes, message: str) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        read_state_dict(path)


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        slowfast_zoo.create("slow_r50_8x8", checkpoint="/nonexistent/SLOW_8x8_R50.pyth")


def test_caffe2_pickle_cannot_run_code(tmp_path) -> None:
    """A blob dict whose pickle calls os.system is refused before anything is imported or run."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (__import__("os").system, (f"touch {marker}",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"blobs": {"conv1_w": Evil()}}, protocol=2))
    with pytest.raises(CheckpointError, match=r"refusing to load global (posix|os)\.system"):
        read_state_dict(path)
    assert not marker.exists()


def test_wrong_checkpoint_for_the_model_lists_the_keys() -> None:
    with pytest.raises(CheckpointError) as err:
        slowfast_zoo.create("slowfast_r50_8x8", checkpoint=DATA / "slow_r50_8x8.caffe2.pkl", width=8, num_classes=10)
    message = str(err.value)
    assert "slow_r50_8x8.caffe2.pkl (caffe2, caffe2 keys)" in message
    assert "missing from the checkpoint: fuse.0.bn.bias" in message and "shape mismatch" in message


def test_other_num_classes_reinitializes_only_the_classifier(reference) -> None:
    # the SSv2 tag has 174 classes, the file 10: without an explicit num_classes that is an error ...
    with pytest.raises(CheckpointError, match="only the classifier differs: pass num_classes"):
        slowfast_zoo.create(
            "slowfast_r50_8x8.ssv2_ptv", checkpoint=DATA / "slowfast_r50_8x8.caffe2.pkl", width=8, num_frames=16
        )
    # ... with one, the classifier alone is re-initialized and everything else still loads strictly
    model = slowfast_zoo.create(
        "slowfast_r50_8x8", checkpoint=DATA / "slowfast_r50_8x8.caffe2.pkl", width=8, num_frames=16, num_classes=5
    )
    assert model.load_report.head_reset
    assert model.head.proj.weight.shape == (5, 2304 // 8)
    assert 0.005 < model.head.proj.weight.std().item() < 0.02 and torch.count_nonzero(model.head.proj.bias) == 0
    ours, ref = model.state_dict(), reference.state_dict()
    for k in ref:
        if not k.startswith("head.proj.") and not k.endswith("num_batches_tracked"):
            assert torch.equal(ours[k], ref[k]), k
    assert model.pretrained_cfg.labels is None and model.pretrained_cfg.num_classes == 5


def test_embedding_model_from_a_checkpoint() -> None:
    model = slowfast_zoo.create("slow_r50_8x8", checkpoint=DATA / "slow_r50_8x8.caffe2.pkl", width=8, num_classes=0)
    assert model.load_report.head_reset
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 8, 64, 64)).shape == (1, model.num_features)


def test_loaded_weights_follow_the_requested_dtype() -> None:
    model = slowfast_zoo.create(
        "slow_r50_8x8", checkpoint=DATA / "slow_r50_8x8.caffe2.pkl", width=8, num_classes=10, dtype=torch.bfloat16
    )
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_weights_from_memory_are_copied_and_from_files_stay_trainable(tmp_path, reference) -> None:
    model = slowfast_zoo.create("slowfast_r50_8x8", **TINY)
    slowfast_zoo.load_checkpoint(model, reference.state_dict())
    with torch.no_grad():
        model.head.proj.weight.add_(1.0)  # must not reach the model the state dict came from
    assert not torch.equal(model.head.proj.weight, reference.head.proj.weight)
    path = tmp_path / "model.safetensors"
    write(path, "safetensors", reference.state_dict())
    loaded = slowfast_zoo.create("slowfast_r50_8x8", checkpoint=path, **TINY)
    assert all(p.requires_grad for p in loaded.parameters()) and same_weights(loaded, reference)
    loaded(torch.zeros(1, 3, 16, 64, 64)).sum().backward()
    assert loaded.head.proj.weight.grad is not None
