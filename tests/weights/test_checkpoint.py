"""Reading checkpoints: every accepted format, clear errors for everything else, strict loading, head re-init."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import slowfast_zoo
from slowfast_zoo import CheckpointError
from slowfast_zoo.factory import expected_state_dict
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


@pytest.mark.self_consistency
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
    assert "missing from the checkpoint: lateral.res2.bn.bias" in message and "shape mismatch" in message


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


# --- the AVA R101 detectors: PySlowFast files named .pkl ---------------------------------------------------------
# SF:MODEL_ZOO.md (facebookresearch/SlowFast @ 287ec00), "## AVA" table rows 2-4, verbatim: architecture | size |
# Pretrain Model | frame length x sample rate | MAP | AVA version | model.
MODEL_ZOO_AVA_R101 = """
| SlowFast | R101 | [Kinetics 600](https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/ava/pretrain/SLOWFAST_32x2_R101_50_50_v2.1.pkl) | 8 x 8 | 28.2 | 2.1 | [`link`](https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/ava/SLOWFAST_32x2_R101_50_50_v2.1.pkl) |
| SlowFast | R101 | [Kinetics 600](https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/ava/pretrain/SLOWFAST_32x2_R101_50_50.pkl) | 8 x 8 | 29.1 | 2.2 | [`link`](https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/ava/SLOWFAST_32x2_R101_50_50.pkl) |
| SlowFast | R101 | [Kinetics 600](https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/ava/pretrain/SLOWFAST_64x2_R101_50_50.pkl) | 16 x 8 | 29.4 | 2.2 | [`link`](https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/ava/SLOWFAST_64x2_R101_50_50.pkl) |
"""  # noqa: E501
# The file formats, in the maintainers' words (the table does not say): SlowFast issue #85 (the 64x2 link serves a
# PyTorch model) and #170 (pickle.load of either v2.2 file returns an int: torch's legacy serialization magic);
# SlowFast issues #132 and #299: the v2.1 file is a Caffe2 pickle.
FORMAT_OF = {
    "SLOWFAST_32x2_R101_50_50.pkl": ("pysf_pyth", "pysf"),
    "SLOWFAST_64x2_R101_50_50.pkl": ("pysf_pyth", "pysf"),
    "SLOWFAST_32x2_R101_50_50_v2.1.pkl": ("caffe2_pkl", "caffe2"),
}


def _model_zoo_rows() -> dict[str, tuple[str, str, float]]:
    """{zoo name: (url, published file name, mAP)} from the quoted MODEL_ZOO.md rows."""
    rows = {}
    for line in MODEL_ZOO_AVA_R101.strip().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        frames, rate = (int(v) for v in cells[3].split(" x "))
        url = cells[6].split("(")[1].rstrip(")")
        name = f"slowfast_nln_r101_50_50_{frames}x{rate}_det.ava{cells[5].replace('.', '')}_pysf"
        rows[name] = (url, url.rsplit("/", 1)[1], float(cells[4]))
    return rows


AVA_FILES = {name: ("ava/" + file, *FORMAT_OF[file]) for name, (_, file, _) in _model_zoo_rows().items()}


@pytest.mark.parametrize("name", sorted(AVA_FILES))
def test_ava_r101_origin_is_the_model_zoo_row(name: str) -> None:
    url, file, map_ = _model_zoo_rows()[name]
    cfg = slowfast_zoo.get_pretrained_cfg(name)
    assert cfg.origin.url == url and dict(cfg.metrics) == {"mAP": map_}
    assert (cfg.origin.format, cfg.origin.key_scheme) == FORMAT_OF[file]


def _pysf_legacy_checkpoint(model: torch.nn.Module, path: Path) -> None:
    """PySlowFast's save_checkpoint layout (SF:slowfast/utils/checkpoint.py), in torch's legacy serialization."""
    params = [p for p in model.parameters()]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()  # momentum buffers, keyed by parameter index, as a resumed run holds them
    state = {
        "epoch": 20,
        "model_state": from_zoo(model.state_dict(), "pysf"),
        "optimizer_state": opt.state_dict(),
        "cfg": "DETECTION:\n  ENABLE: true\nMODEL:\n  ARCH: slowfast\n  NUM_CLASSES: 80\n",
    }
    torch.save(state, path, _use_new_zipfile_serialization=False)


@pytest.mark.parametrize("name", [n for n, (_, fmt, _) in AVA_FILES.items() if fmt == "pysf_pyth"])
def test_ava_v22_r101_files_load_in_their_published_layout(tmp_path, name: str) -> None:
    from hub_server import random_model, tiny_cfg

    from slowfast_zoo.weights.formats import sniff_format
    from slowfast_zoo.weights.publish import convert

    cfg = tiny_cfg(name)
    model = random_model(cfg)
    path = tmp_path / Path(AVA_FILES[name][0]).name
    _pysf_legacy_checkpoint(model, path)
    with open(path, "rb") as f:  # what SlowFast issue #170 reports for both published files
        assert isinstance(pickle.load(f), int)
    assert sniff_format(path) == "torch_legacy"
    loaded = slowfast_zoo.create(name, checkpoint=path, width=8)
    assert loaded.load_report.file_format == "torch" and loaded.load_report.key_scheme == "pysf"
    assert same_weights(loaded, model)
    result = convert(path, cfg, tmp_path / "model.safetensors", expected=expected_state_dict(cfg))
    assert (result.file_format, result.key_scheme) == ("torch", "pysf")
    converted = slowfast_zoo.create(name, checkpoint=result.path, width=8)
    assert same_weights(converted, model)


# --- pickle protocols: every one reaches the restricted unpickler -------------------------------------------------
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_pickle_protocol_reaches_the_restricted_unpickler(tmp_path, protocol: int) -> None:
    """A Caffe2 blob dict in any protocol loads; the same dict with a code-running payload is refused by the
    restricted unpickler itself (its own message), not by an earlier format check."""
    import numpy as np

    blobs = from_zoo(slowfast_zoo.create("slow_r50_8x8", width=8, num_classes=10).state_dict(), "caffe2")
    good = tmp_path / f"good{protocol}.pkl"
    good.write_bytes(pickle.dumps({"blobs": {k: v.numpy() for k, v in blobs.items()}}, protocol=protocol))
    sd, fmt, _ = read_state_dict(good)
    assert fmt == "caffe2" and all(np.array_equal(sd[k].numpy(), v.numpy()) for k, v in blobs.items())

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (__import__("os").mkdir, (str(marker),))

    evil = tmp_path / f"evil{protocol}.pkl"
    evil.write_bytes(pickle.dumps({"blobs": {"conv1_w": Evil()}}, protocol=protocol))
    with pytest.raises(CheckpointError, match=r"refusing to load global (posix|os)\.mkdir"):
        read_state_dict(evil)
    assert not marker.exists()


# --- C2D_NOPOOL_8x8_R50.pkl: reported damaged upstream ---------------------------------------------------------------
def test_the_damaged_upstream_c2d_nopool_file_is_reported_as_such(tmp_path) -> None:
    """SlowFast issue #98: `invalid load key '\\x1f'` (a gzip stream); #163: the maintainers call the file corrupted
    (C2D_NOPOOL_8x8_R50.pkl). The bytes here are a gzip stream, as reported."""
    import gzip

    path = tmp_path / "C2D_NOPOOL_8x8_R50.pkl"
    path.write_bytes(gzip.compress(b"not a checkpoint" * 100))
    with pytest.raises(CheckpointError) as err:
        slowfast_zoo.create("c2d_nopool_r50_8x8", width=8, checkpoint=path)
    message = str(err.value)
    assert str(path) in message and "gzip" in message
    assert "authors' published file itself is reported damaged" in message
    assert "SlowFast/issues/98" in message and "SlowFast/issues/163" in message
    other = tmp_path / "SLOW_8x8_R50.pkl"  # any other file with the same bytes: no such claim about the authors
    other.write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError) as err:
        read_state_dict(other)
    assert "reported damaged" not in str(err.value)


# --- the structural check takes the expected {key: shape}, never module internals -------------------------------
def test_structure_is_checked_against_expected_shapes_with_the_classifier_as_a_parameter() -> None:
    from slowfast_zoo.weights.checkpoint import check_state_dict

    expected = {"body.weight": (4, 3), "body.count": torch.zeros((), dtype=torch.long), "fc.weight": (10, 4)}
    good = {
        "body.weight": torch.zeros(4, 3),
        "body.count": torch.zeros((), dtype=torch.long),
        "fc.weight": torch.zeros(10, 4),
    }
    assert check_state_dict(good, expected, classifier="fc") == ([], False)
    other_head = dict(good, **{"fc.weight": torch.zeros(5, 4)})
    with pytest.raises(
        CheckpointError, match=r"(?s)fc\.weight: checkpoint \(5, 4\) vs model \(10, 4\).*only the classifier"
    ):
        check_state_dict(other_head, expected, classifier="fc")
    assert check_state_dict(other_head, expected, reset_head=True, classifier="fc") == (["fc.weight"], True)
    with pytest.raises(CheckpointError, match="shape mismatch"):  # the default classifier key is the zoo's head.proj
        check_state_dict(other_head, expected, reset_head=True)
    wrong_kind = dict(good, **{"body.count": torch.zeros(())})
    with pytest.raises(
        CheckpointError, match=r"(?s)dtype mismatch.*body\.count: checkpoint torch\.float32 vs model torch\.int64"
    ):
        check_state_dict(wrong_kind, expected, classifier="fc")


def test_a_float64_file_is_checked_then_cast(tmp_path, reference) -> None:
    """A float64 file with a wrong shape fails naming the shape; a right one loads into float32 parameters.
    (That the check comes before any copy is shown by the memory-capped tests in test_formats_hostile.py.)"""
    sd = from_zoo(reference.state_dict(), "pysf")
    sd = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
    sd["s2.pathway0_res0.branch2.a.weight"] = torch.zeros(7, 3, dtype=torch.float64)
    path = tmp_path / "f64.pyth"
    torch.save({"model_state": sd}, path)
    with pytest.raises(CheckpointError, match=r"res2\.slow\.0\.a\.conv\.weight: checkpoint \(7, 3\)"):
        slowfast_zoo.create("slowfast_r50_8x8", checkpoint=path, **TINY)
    good = from_zoo(reference.state_dict(), "pysf")
    torch.save({"model_state": {k: v.double() if v.is_floating_point() else v for k, v in good.items()}}, path)
    model = slowfast_zoo.create("slowfast_r50_8x8", checkpoint=path, **TINY)
    assert {p.dtype for p in model.parameters()} == {torch.float32} and same_weights(model, reference)


def _mapped(path: Path) -> bool:
    """Whether this process maps ``path`` (one line of /proc/self/maps per mapping, the file's path last)."""
    return any(line.rstrip().endswith(str(path.resolve())) for line in Path("/proc/self/maps").read_text().splitlines())


def test_a_zip_checkpoint_is_mapped_not_copied_and_training_never_writes_the_file(tmp_path, reference) -> None:
    """torch zip files load with mmap (copy-on-write): parameters can change, the file's bytes never do."""
    import gc
    import hashlib

    path = tmp_path / "model.pyth"
    write(path, "zip", from_zoo(reference.state_dict(), "pysf"))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if Path("/proc/self/maps").is_file():  # Linux: the process's mappings name the file while its tensors live
        sd, _, _ = read_state_dict(path)
        assert _mapped(path), "a zip checkpoint read from a path was copied into memory, not mapped"
        del sd
        gc.collect()  # the mapping goes with the last tensor on it
        sd, _, _ = read_state_dict(path, path.read_bytes())
        assert not _mapped(path), "bytes given in memory must be parsed from memory, not mapped again"
        del sd
    model = slowfast_zoo.create("slowfast_r50_8x8", checkpoint=path, **TINY)
    assert same_weights(model, reference)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model(torch.zeros(1, 3, 16, 64, 64)).sum().backward()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert not torch.equal(model.head.proj.weight, reference.head.proj.weight)


@pytest.mark.parametrize("kind", ["safetensors", "zip", "legacy", "caffe2"])
def test_the_bytes_given_are_the_bytes_read(tmp_path, reference, kind: str) -> None:
    """read_state_dict(path, data) parses the bytes in hand (e.g. the ones just hashed); the path only names them."""
    path = tmp_path / f"model.{kind}"
    written = from_zoo(reference.state_dict(), {"safetensors": "zoo", "caffe2": "caffe2"}.get(kind, "pysf"))
    if kind == "caffe2":
        path.write_bytes(pickle.dumps({"blobs": {k: v.numpy() for k, v in written.items()}}, protocol=2))
    else:
        write(path, kind, written)
    data = path.read_bytes()
    path.write_bytes(b"<html>replaced after hashing</html>")  # what a racing writer could put there
    sd, fmt, _ = read_state_dict(path, data)
    assert fmt == {"safetensors": "safetensors", "caffe2": "caffe2"}.get(kind, "torch")
    assert sd.keys() == written.keys() and all(torch.equal(sd[k], written[k]) for k in written)
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        read_state_dict(path)
