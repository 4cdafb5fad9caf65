"""Ray engine: the same numbers and files as one process, a killed actor or driver, a corrupt video, resume.

One local Ray instance (2 CPUs, no dashboard) serves the module; the networks are tiny and the videos a few seconds.
Coordination with Ray's worker processes goes through files in ``tmp_path`` (see ``tests/ray_stages.py``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from video_factory import write_video

ray = pytest.importorskip("ray")

import slowfast_zoo  # noqa: E402
from slowfast_zoo import features  # noqa: E402
from slowfast_zoo.cli import main  # noqa: E402
from slowfast_zoo.tasks import ray_jobs  # noqa: E402
from slowfast_zoo.tasks.ray_data import ClassifyClips, DecodeClips, EmbedClips  # noqa: E402

TESTS = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def _worker_path() -> str:
    return os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")])


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    """A local Ray instance for the module; its workers import the tests' helper stages and this checkout."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local test cluster: no token written to ~/.ray
    path = _worker_path()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
        runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}},
    )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> str:
    """Tiny SlowFast saved as a local-dir: folder (every actor builds it): 2 slow / 8 fast frames, 32 px crops,
    2 clips x 2 crops as its reference protocol."""
    torch.manual_seed(0)
    m = slowfast_zoo.create("slowfast_r50_8x8", width=8, num_frames=8, num_classes=5).eval()
    m.pretrained_cfg = m.pretrained_cfg.replace(
        test_short_side=32, test_crop_size=32, test_head_pool="adaptive", test_clips=2, test_crops=("left", "center")
    )
    folder = slowfast_zoo.publish.save_pretrained(
        m, tmp_path_factory.mktemp("tiny") / "model", label_names=list("abcde")
    )
    return f"local-dir:{folder}"


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[str]:
    """Four readable videos (2 s and 3 s) and a corrupt one in the middle."""
    d = tmp_path_factory.mktemp("ray-videos")
    paths = [str(write_video(d / f"v{i}.mp4", num_frames=60 + 30 * (i % 2))) for i in range(4)]
    (d / "corrupt.mp4").write_bytes(b"\x00not a video" * 20)
    paths.insert(2, str(d / "corrupt.mp4"))
    return paths


@pytest.fixture(scope="module")
def local_windows(spec, videos, tmp_path_factory) -> Path:
    """The single-process reference: per-window embeddings, two videos per shard, one view per forward pass.

    The single-process path batches the views of a shard's videos together; the Ray actors batch each row's views on
    their own (rows arrive one at a time). With ``views="fast"`` a row is one view, so ``batch_size=1`` makes the
    batches the same: then the files are equal byte for byte (other batches: within float rounding, tested below)."""
    out = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        features.extract(videos, spec, out, per="window", shard_size=2, batch_size=1, progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name.startswith("features-")}


def _decoded(spec: str, videos: list[str]) -> dict[str, list]:
    """Every video through the decode stage, called here as Ray would call it (one row per batch)."""
    decode = DecodeClips(spec, views="reference")
    out: dict[str, list] = {}
    for p in videos:
        for k, v in decode({"path": [p]}).items():
            out.setdefault(k, []).extend(v)
    return out


def test_pipeline_on_ray_equals_extract(ray_local, spec, videos, tmp_path):
    """rows → DecodeClips tasks → EmbedClips actors on Ray equals features.extract bit for bit in fp32 when the
    batches are the same (each row's 4 views in one batch: ``batch_size=4`` locally); a corrupt file gives a row
    naming the error; decoding and the model stay two operators (Ray does not fuse decoding into the model actors)."""
    rows = [{"path": p, "order": i} for i, p in enumerate(videos)]
    ds = ray_jobs.pipeline(
        rows, DecodeClips(spec, views="reference"), EmbedClips, spec, {},
        actors=1, num_gpus_per_actor=0, cpus_per_actor=1, rows_per_batch=2,
    ).materialize()  # fmt: skip
    stats = ds.stats()
    assert "MapBatches(DecodeClips)->MapBatches(EmbedClips)" not in stats
    assert "Operator 1 MapBatches(DecodeClips)" in stats and "MapBatches(EmbedClips)" in stats
    got = {r["path"]: r for r in ds.take_all()}
    assert set(got) == set(videos)
    corrupt = got[videos[2]]
    assert "not a readable video" in corrupt["error"] and corrupt["num_views"] == 0
    assert torch.isnan(torch.tensor(corrupt["embedding"])).all()

    features.extract(videos, spec, tmp_path, views="reference", batch_size=4, progress=False)
    local = features.load_features(tmp_path)
    for i, path in enumerate(local["paths"]):
        assert got[path]["error"] == "" and got[path]["num_views"] == 4  # 2 clips x 2 crops
        assert torch.equal(torch.tensor(got[path]["embedding"]), local["embeddings"][i])


@pytest.mark.parametrize(
    ("resources", "actors", "cpus", "gpus", "short"),
    [
        ({"CPU": 3.0}, 2, 1.0, 0.0, None),
        ({"CPU": 2.0}, 2, 1.0, 0.0, "3 CPUs, it has 2"),
        ({"CPU": 8.0, "GPU": 1.0}, 2, 1.0, 0.5, None),
        ({"CPU": 8.0}, 1, 1.0, 1.0, "1 GPUs, it has 0"),
    ],
)
def test_resource_shortfall(resources, actors, cpus, gpus, short):
    got = ray_jobs.resource_shortfall(resources, actors, cpus, gpus)
    assert got is None if short is None else short in got


def test_pipeline_warns_when_the_actors_leave_no_cpu_to_decode(ray_local, spec, videos, caplog):
    """2 actors on the module's 2-CPU instance would wait forever for decode tasks: said before anything runs."""
    rows = [{"path": p, "order": i} for i, p in enumerate(videos)]
    with caplog.at_level("WARNING", logger="slowfast_zoo.tasks.ray_jobs"):  # the dataset is lazy: nothing runs
        ray_jobs.pipeline(
            rows, DecodeClips(spec, views="reference"), EmbedClips, spec, {},
            actors=2, num_gpus_per_actor=0, cpus_per_actor=1, rows_per_batch=2,
        )  # fmt: skip
    assert "need more than the Ray cluster holds now (3 CPUs, it has 2)" in caplog.text


def test_classify_stage_equals_predict(spec, videos):
    """ClassifyClips on the decoded reference views gives predict's scores and top label, bit for bit."""
    batch = _decoded(spec, videos)
    out = ClassifyClips(spec)(batch)
    model = slowfast_zoo.create(spec, pretrained=True, head_pool="adaptive").eval()
    for i, path in enumerate(batch["path"]):
        if path == videos[2]:
            assert out["label"][i] == "" and torch.isnan(torch.tensor(out["scores"][i])).all()
            continue
        expected = slowfast_zoo.predict(path, model, views="reference")
        assert torch.equal(torch.tensor(out["scores"][i]), expected.scores) and out["num_views"][i] == 4
        assert out["label"][i] == expected.top[0].label


def test_classify_stage_takes_predicts_precision_and_fast(spec, videos):
    """precision / fast reach the actors: bf16 on the optimized copy gives predict's bf16 fast scores, bit for bit
    (and not the fp32 ones)."""
    batch = _decoded(spec, videos[:1])
    got = torch.tensor(ClassifyClips(spec, precision="bf16", fast=True)(batch)["scores"][0])
    model = slowfast_zoo.create(spec, pretrained=True, head_pool="adaptive").eval()
    expected = slowfast_zoo.predict(videos[0], model, views="reference", precision="bf16", fast=True).scores
    assert torch.equal(got, expected)
    assert not torch.equal(got, slowfast_zoo.predict(videos[0], model, views="reference").scores)


def test_decode_rows_with_start_and_end(spec, videos, local_windows):
    """A row's ``start`` / ``end`` (seconds) is the span embedded: [1, 3) of a 3 s video is its second window."""
    decode = DecodeClips(spec)
    batch = decode({"path": [videos[1], videos[1]], "start": [1.0, float("nan")], "end": [3.0, float("nan")]})
    assert batch["start"] == [1.0, 0.0] and batch["end"][0] == 3.0 and batch["end"][1] == pytest.approx(3.0, abs=0.05)
    got = torch.tensor(EmbedClips(spec)(batch)["embedding"])
    local = features.load_features(local_windows)
    rows = [i for i, p in enumerate(local["paths"]) if p == videos[1]]
    assert local["start"][rows].tolist() == [0.0, 1.0]
    assert torch.equal(got[0], local["embeddings"][rows[1]])
    assert not torch.equal(got[1], got[0])  # no span: the whole video, centred

    windows = DecodeClips(spec, per="window", window_s=1.0, stride_s=0.5)(
        {"path": [videos[1]], "start": [1.0], "end": [3.0]}
    )
    assert list(zip(windows["start"], windows["end"])) == [(1.0, 2.0), (1.5, 2.5), (2.0, 3.0)]
    assert windows["windows"] == [3, 3, 3]


def test_mixed_rows_match_within_float_rounding(spec, videos):
    """mix_rows batches views of several videos together: a convolution over a batch of 8 may sum in another order
    than over 4, so equal to ~1e-5 (relative), not bit for bit."""
    batch = _decoded(spec, [p for p in videos if "corrupt" not in p])
    apart = EmbedClips(spec, batch_size=8)(batch)["embedding"]
    mixed = EmbedClips(spec, batch_size=8, mix_rows=True)(batch)["embedding"]
    torch.testing.assert_close(torch.tensor(mixed), torch.tensor(apart), rtol=1e-5, atol=1e-6)
    assert not torch.isnan(torch.tensor(mixed)).any()


@pytest.mark.parametrize("format", ["safetensors", "parquet"])
def test_engine_ray_writes_the_single_process_files(ray_local, spec, videos, local_windows, tmp_path, format):
    out = tmp_path / "ray"
    argv = ["features", *videos, "-o", str(out), "--model", spec, "--per", "window", "--shard-size", "2"]
    argv += ["--engine", "ray", "--format", format, "--no-progress"]
    assert main(argv) == 1  # one video could not be read: listed, the rest written
    expected = features.load_features(local_windows)
    got = features.load_features(out)
    assert got["failed"] == expected["failed"] and list(got["failed"]) == [videos[2]]
    assert got["paths"] == expected["paths"] and torch.equal(got["start"], expected["start"])
    assert torch.equal(got["embeddings"], expected["embeddings"]) and len(got["paths"]) == 6  # 2 s: 1 window, 3 s: 2
    if format == "safetensors":
        assert _files(out) == _files(local_windows)  # the same bytes
        # the single-process default batches views of several videos together: equal within float rounding
        features.extract(videos, spec, tmp_path / "default", per="window", shard_size=2, progress=False)
        default = features.load_features(tmp_path / "default")
        torch.testing.assert_close(got["embeddings"], default["embeddings"], rtol=1e-5, atol=1e-6)
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(out / "features-00000-of-00003.parquet")
        assert table.column_names == ["video", "start", "end", "embedding"]
        assert b"slowfast_zoo.features" in table.schema.metadata


def test_a_killed_model_actor_is_restarted_and_the_output_is_complete(ray_local, spec, videos, local_windows, tmp_path):
    control = tmp_path / "control"
    control.mkdir()
    out = tmp_path / "ray"
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["summary"] = ray_jobs.extract(
                videos, spec, out, per="window", shard_size=2, progress=False,
                stage=__import__("ray_stages").PausedEmbed, stage_kwargs={"control": str(control)},
            )  # fmt: skip
        except BaseException as e:
            result["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    started = _wait_for_file(control, "started-*")
    os.kill(int(started.name.split("-")[1]), signal.SIGKILL)  # the actor's process, mid-batch
    (control / "go").touch()
    thread.join(timeout=240)
    assert not thread.is_alive() and "error" not in result, result.get("error")
    assert _files(out) == _files(local_windows)


def test_driver_killed_then_rerun_gives_identical_files(ray_local, spec, videos, local_windows, tmp_path):
    """A driver killed (SIGKILL) after one shard leaves only complete shards; a rerun does the rest.

    The driver runs in a subprocess whose shard writer, once it has written a shard, says so in a file and waits:
    the test kills it there, mid-run, with exactly one shard on disk."""
    control = tmp_path / "control"
    control.mkdir()
    out = tmp_path / "ray"
    script = f"""
import pathlib, time, ray
from slowfast_zoo.tasks import features, ray_jobs
real = features.write_shard
def write_then_wait(path, *args):
    real(path, *args)
    pathlib.Path({str(control)!r}, "written").touch()
    time.sleep(3600)  # killed here by the test
features.write_shard = write_then_wait
ray.init(address={ray_local!r})
ray_jobs.extract({videos!r}, {spec!r}, {str(out)!r}, per="window", shard_size=2, progress=False)
"""
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_file(control, "written", driver)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    partial = _files(out)
    assert len(partial) == 1 and partial.items() <= _files(local_windows).items()
    summary = ray_jobs.extract(videos, spec, out, per="window", shard_size=2, progress=False)
    assert summary.shards_skipped == list(partial) and len(summary.shards_written) == 2
    assert _files(out) == _files(local_windows)
    assert not list(out.glob(".*.incomplete"))


def _wait_for_file(folder: Path, pattern: str, process: subprocess.Popen | None = None) -> Path:
    """The first file matching ``pattern`` (an event written by a Ray worker); fails if ``process`` died first."""
    deadline = time.monotonic() + 180  # a stuck test fails instead of hanging; not a timing assumption
    while time.monotonic() < deadline:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the driver exited ({process.returncode}) early: {process.stderr.read().decode()}")
        time.sleep(0.02)
    raise AssertionError(f"no {pattern} in {folder}")


def test_evaluate_engine_ray_writes_the_single_process_result(ray_local, spec, videos, tmp_path):
    """The same results file as the local path, bit for bit: per-video scores equal, the corrupt and the missing
    video listed as skipped."""
    root = Path(videos[0]).parent
    lines = [f"{Path(p).name} {i % 5}" for i, p in enumerate(videos)] + ["gone.mp4 1"]
    (tmp_path / "val.txt").write_text("\n".join(lines) + "\n")
    args = [spec, "--dataset", "kinetics400", "--root", str(root), "--annotations", str(tmp_path / "val.txt")]
    assert main(["evaluate", *args, "--out", str(tmp_path / "local.json"), "--workers", "1"]) == 0
    assert main(["evaluate", *args, "--out", str(tmp_path / "ray.json"), "--engine", "ray"]) == 0
    local, got = (tmp_path / "local.json").read_bytes(), (tmp_path / "ray.json").read_bytes()
    assert got == local and b"gone.mp4" in got and b"corrupt.mp4" in got

    def records(name: str) -> set[str]:
        return set((tmp_path / f"{name}.json.parts" / "shard-00000-of-00001.jsonl").read_text().splitlines())

    assert records("ray") == records("local") and len(records("ray")) == 1 + 6  # the header and every video


def test_engine_ray_refuses_static_shards(spec, videos, tmp_path, capsys):
    """Ray spreads the whole list itself: a --rank / --shard meant for static sharding is refused, not ignored."""
    argv = ["features", videos[0], "-o", str(tmp_path / "f"), "--model", spec, "--engine", "ray", "--rank", "1"]
    assert main(argv) == 2 and "--rank/--world-size are for the local engine" in capsys.readouterr().err
    ann = tmp_path / "val.txt"
    ann.write_text(f"{Path(videos[0]).name} 0\n")
    argv = ["evaluate", spec, "--dataset", "kinetics400", "--root", str(Path(videos[0]).parent), "--annotations"]
    argv += [str(ann), "--out", str(tmp_path / "r.json"), "--engine", "ray", "--shard", "0/2"]
    assert main(argv) == 2 and "the Ray engine does the whole list" in capsys.readouterr().err
    assert not (tmp_path / "f").exists() and not (tmp_path / "r.json.parts").exists()


def test_a_folder_of_frames_is_read_at_the_rows_fps(spec, videos, tmp_path):
    """A ``path`` that is a folder is read as frame images at the row's ``fps`` (evaluate's frame folders)."""
    import av
    from PIL import Image

    from slowfast_zoo.tasks.eval_datasets import FrameFolderVideo

    with av.open(videos[1]) as container:
        for i, frame in enumerate(container.decode(video=0)):
            Image.fromarray(frame.to_ndarray(format="rgb24")).save(tmp_path / f"{i:05d}.png")
    out = ClassifyClips(spec)(DecodeClips(spec, views="reference")({"path": [str(tmp_path)], "fps": [15.0]}))
    model = slowfast_zoo.create(spec, pretrained=True, head_pool="adaptive").eval()
    expected = slowfast_zoo.predict(FrameFolderVideo(tmp_path, 15.0), model, views="reference").scores
    assert out["error"] == [""] and torch.equal(torch.tensor(out["scores"][0]), expected)
    assert out["end"] == [90 / 15.0]  # 90 frames at 15 fps
