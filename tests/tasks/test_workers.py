"""Decoding ahead of the model in worker threads or processes: the same results as inline, bit for bit, in order;
bounded look-ahead; a bad video or a dead worker skipped per video; no process left behind; CUDA transfers."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path
from types import MappingProxyType

import pytest
import torch
import worker_jobs
from video_factory import write_video

from slowfast_zoo import create, evaluate, features, predict
from slowfast_zoo.tasks import evaluate as evaluate_module
from slowfast_zoo.tasks import features as features_module
from slowfast_zoo.tasks.predict import predict_many
from slowfast_zoo.tasks.runner import TransferPlan, ViewRunner, pooled_features, transfer_plan
from slowfast_zoo.tasks.workers import Prefetcher, WorkerCrashed

pytest.importorskip("av")
pytestmark = pytest.mark.usefixtures("one_thread")

#: (workers, kind): inline, two threads, two processes
MODES = [(0, "thread"), (2, "thread"), (2, "process")]


def _children() -> set[int]:
    """This process's child processes, live or unreaped (Linux: /proc), but multiprocessing's resource tracker,
    which the standard library starts once per process for every spawned child and keeps."""
    me = os.getpid()
    if Path("/proc/self/stat").exists():
        found = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == me:
                found.add(int(stat.parent.name))
    else:  # pragma: no cover - other systems
        found = {p.pid for p in multiprocessing.active_children()}
    from multiprocessing import resource_tracker

    return found - {getattr(resource_tracker._resource_tracker, "_pid", None)}


@pytest.fixture
def no_leaked_children():
    before = _children()
    yield
    assert _children() <= before, "a worker process outlived its prefetcher"
    assert not multiprocessing.active_children()


# ---- the prefetcher itself ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("workers", "kind"), MODES)
def test_results_come_in_input_order_with_bounded_look_ahead(workers, kind, no_leaked_children):
    """Later items finish first (they wait less); results still come in input order, and the consumer is never
    more than ``workers + 1`` items behind what was taken from the input."""
    taken = []

    def items():
        for i in range(9):
            taken.append(i)
            yield i

    got, ahead = [], []
    with Prefetcher(workers, kind) as pool:
        for value in pool.map(worker_jobs.square, items()):
            got.append(value)
            ahead.append(len(taken) - len(got))
    assert got == [i * i for i in range(9)]
    assert max(ahead) <= workers + 1
    if workers:
        assert max(ahead) >= 1  # it did read ahead


def test_worker_processes_run_torch_with_one_thread_and_ignore_ctrl_c(no_leaked_children):
    """Each worker runs torch with one thread; SIGINT sent to a worker (Ctrl-C reaches the process group) leaves
    it working: the consumer alone decides to stop."""
    with Prefetcher(1, "process") as pool:
        results = pool.map(worker_jobs.pid_and_threads, range(3))
        _, pid, threads = next(results)
        assert threads == 1 and pid != os.getpid()
        os.kill(pid, signal.SIGINT)
        assert [(x, p) for x, p, _ in results] == [(1, pid), (2, pid)]


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_an_exception_in_a_worker_is_raised_at_its_place(kind, no_leaked_children):
    got = []
    with pytest.raises(ValueError, match="item 2 is bad"), Prefetcher(2, kind) as pool:
        for value in pool.map(worker_jobs.fail_on_two, range(5)):
            got.append(value)
    assert got == [0, 1]


def test_a_dead_worker_gives_its_item_a_reason_and_is_replaced(no_leaked_children):
    with Prefetcher(2, "process") as pool:
        got = list(pool.map(worker_jobs.die_on_one, range(5), lambda item, reason: f"{item}: {reason}"))
        assert got[0] == 0 and got[2:] == [2, 3, 4]
        assert got[1] == "1: the worker process was killed by SIGKILL"
        with pytest.raises(WorkerCrashed, match="SIGKILL while computing 1"):
            list(pool.map(worker_jobs.die_on_one, range(3)))  # no on_crash: raised at the item's place
        assert list(pool.map(worker_jobs.square, range(3))) == [0, 1, 4]  # the replacements work


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_no_process_outlives_an_exception_in_the_consumer(error, no_leaked_children):
    with pytest.raises(error), Prefetcher(2, "process") as pool:
        for value in pool.map(worker_jobs.tensor_of, range(6)):
            assert value.shape == (3, 4, 8, 8) and value[0, 0, 0, 0] == 0
            raise error("the consumer gave up")


@pytest.mark.parametrize("transport", ["shm", "pickle"])
def test_tensors_cross_from_worker_processes_intact(transport, no_leaked_children):
    with Prefetcher(2, "process", transport=transport) as pool:
        got = list(pool.map(worker_jobs.tensor_of, range(4)))
    assert all(torch.equal(t, torch.full((3, 4, 8, 8), float(i))) for i, t in enumerate(got))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="'thread' or 'process'"):
        Prefetcher(1, "fork")  # type: ignore[arg-type]


# ---- the tasks: the same bytes whatever decodes -------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    """A tiny Slow model whose protocol is 2 clips x 2 crops of 32 px (random weights: equality is the test); its
    config holds published metrics read-only, as the registry's configs do."""
    torch.manual_seed(0)
    model = create("slow_r50_8x8", width=8, num_classes=3, num_frames=4, crop_size=32, head_pool="fixed").eval()
    model.pretrained_cfg = model.pretrained_cfg.replace(
        test_short_side=32, test_crop_size=32, test_clips=2, test_crops=("left", "center"),
        metrics=MappingProxyType({"top1": 50.0}),
    )  # fmt: skip
    return model


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Five videos of different lengths and sizes, a broken file at index 2 and a missing one at index 4."""
    d = tmp_path_factory.mktemp("worker-videos")
    paths = [write_video(d / f"v{i}.mp4", num_frames=30 + 17 * i, width=64 + 16 * (i % 2)) for i in range(5)]
    broken = d / "broken.mp4"
    broken.write_bytes(b"\x00not a video" * 10)
    return [*paths[:2], broken, *paths[2:4], d / "gone.mp4", paths[4]]


@pytest.mark.parametrize(("workers", "kind"), MODES)
def test_predict_many_equals_predict_per_video(tiny, clips, workers, kind, no_leaked_children):
    got = list(predict_many(clips, tiny, workers=workers, worker_type=kind))
    assert [name for name, _ in got] == [str(c) for c in clips]
    for clip, (_, result) in zip(clips, got):
        if clip.name in ("broken.mp4", "gone.mp4"):
            assert isinstance(result, (OSError, RuntimeError, ValueError)) and clip.name in str(result)
            continue
        expected = predict(clip, tiny, views="reference")
        assert torch.equal(result.scores, expected.scores), clip.name
        assert (result.top, result.num_views, result.video) == (expected.top, 4, expected.video)


def test_cli_predict_decodes_ahead_in_processes_with_the_same_output(tiny, clips, tmp_path, capsys):
    """``predict A B C --workers 2 --worker-type process``: the same JSON lines and error lines as without
    workers, in the order given, and exit status 1 for the unreadable video."""
    from slowfast_zoo import cli
    from slowfast_zoo.weights.publish import save_pretrained

    folder = save_pretrained(tiny, tmp_path / "tiny", label_names=("a", "b", "c"))
    argv = ["predict", *map(str, clips[:4]), "--model", f"local-dir:{folder}", "--json"]
    outputs = []
    for extra in ([], ["--workers", "2", "--worker-type", "process"]):
        assert cli.main([*argv, *extra]) == 1
        captured = capsys.readouterr()
        errors = [line for line in captured.err.splitlines() if line.startswith("slowfast-zoo: error:")]
        outputs.append((captured.out, errors))
    assert outputs[0] == outputs[1]
    videos = [json.loads(line)["video"] for line in outputs[0][0].splitlines()]
    assert videos == [str(clips[i]) for i in (0, 1, 3)] and "broken.mp4" in outputs[0][1][0]


def _evaluate_lines(model, clips, tmp_path, workers, kind, **kw):
    root = clips[0].parent
    ann = tmp_path / "list.txt"
    ann.write_text("".join(f"{c.name} {i % 3}\n" for i, c in enumerate(clips)))
    out = tmp_path / f"r-{workers}-{kind}.json"
    result = evaluate(model, "kinetics400", root, ann, out=out, workers=workers, worker_type=kind, progress=False, **kw)
    return result, (Path(f"{out}.parts") / "shard-00000-of-00001.jsonl").read_text().splitlines()


def test_evaluate_writes_the_same_records_inline_in_threads_and_in_processes(tiny, clips, tmp_path):
    runs = {(w, k): _evaluate_lines(tiny, clips, tmp_path, w, k) for w, k in MODES}
    (inline, lines), *others = runs.values()
    assert len(lines) == 1 + len(clips)  # header + one record per video, in list order
    assert set(inline.skipped) == {"broken.mp4", "gone.mp4"} and inline.used == 5
    for result, other in others:
        assert other == lines  # every score, bit for bit
        assert result.skipped == inline.skipped


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_evaluate_skips_and_lists_a_video_whose_worker_dies(tiny, clips, tmp_path, kind, monkeypatch):
    """The video whose decoding kills its worker process is skipped with the reason; the others are scored as in
    a run without it (threads: the same decoder without the kill, which would end the test process)."""
    _, plain = _evaluate_lines(tiny, clips, tmp_path, 0, "thread")
    monkeypatch.setattr(evaluate_module, "_decode_views", worker_jobs.evaluate_decode_or_die)
    monkeypatch.setenv("SFZ_TEST_DIE_ON", "v1.mp4" if kind == "process" else "none")
    before = _children()
    result, lines = _evaluate_lines(tiny, clips, tmp_path, 2, kind)
    assert _children() <= before
    if kind == "thread":
        assert lines == plain
        return
    assert result.skipped["v1.mp4"] == f"{clips[1]}: the worker process was killed by SIGKILL while decoding it"
    assert [line for line in lines if '"v1.mp4"' not in line] == [line for line in plain if '"v1.mp4"' not in line]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_evaluate_leaves_no_process_when_the_model_raises(tiny, clips, tmp_path, error, no_leaked_children):
    model = create("slow_r50_8x8", width=8, num_classes=3, num_frames=4, crop_size=32, head_pool="fixed").eval()
    model.pretrained_cfg = tiny.pretrained_cfg
    calls = []

    def broken(x):
        calls.append(x)
        if len(calls) == 2:
            raise error("the model failed")
        return tiny.position_logits(x)

    model.position_logits = broken
    with pytest.raises(error, match="the model failed"):
        _evaluate_lines(model, clips, tmp_path, 2, "process")


def _extract(model, clips, out, workers, kind):
    paths = [str(c) for c in clips if c.name != "gone.mp4"]
    summary = features.extract(
        paths, model, out, shard_size=3, workers=workers, worker_type=kind, batch_size=3, progress=False
    )
    return summary, {p.name: p.read_bytes() for p in sorted(Path(out).glob("features-*"))}


def test_features_writes_the_same_bytes_inline_in_threads_and_in_processes(tiny, clips, tmp_path):
    runs = [_extract(tiny, clips, tmp_path / f"{w}-{k}", w, k) for w, k in MODES]
    (summary, files), *others = runs
    assert len(files) == 2 and list(summary.failed) == [str(clips[2])]  # broken.mp4
    for other_summary, other_files in others:
        assert other_files == files
        assert other_summary.failed == summary.failed


def test_features_lists_a_video_whose_worker_dies(tiny, clips, tmp_path, monkeypatch):
    _, plain = _extract(tiny, clips, tmp_path / "plain", 0, "thread")
    monkeypatch.setattr(features_module, "_decode_rows", worker_jobs.features_decode_or_die)
    monkeypatch.setenv("SFZ_TEST_DIE_ON", "v3.mp4")
    before = _children()
    summary, files = _extract(tiny, clips, tmp_path / "died", 2, "process")
    assert _children() <= before
    died = str(clips[4])
    assert summary.failed[died] == "the worker process was killed by SIGKILL while decoding it"
    assert files.keys() == plain.keys()
    assert files[next(iter(files))] == plain[next(iter(plain))]  # the first shard (v0, v1, broken) is unchanged


# ---- moving batches to the model ----------------------------------------------------------------------------------
def test_transfer_plan_pins_and_overlaps_host_batches_for_cuda_only():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert transfer_plan(cuda, cpu) == TransferPlan(pin=True, overlap=True)
    assert transfer_plan(cpu, cpu) == TransferPlan(pin=False, overlap=False)
    assert transfer_plan(cuda, cuda) == TransferPlan()  # frames the decoder or transforms put there already
    assert transfer_plan(torch.device("meta"), cpu) == TransferPlan()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: the pinned, overlapped copy needs one")
def test_host_views_reach_a_cuda_model_through_pinned_overlapped_copies():
    """Host views through the pinned side-stream copy give what the same views already on the device give."""
    model = create("slow_r50_8x8", width=8, num_classes=3, num_frames=4, crop_size=32).cuda().eval()
    views = [torch.randn(3, 4, 32, 32) for _ in range(7)]
    outs, streams = [], []
    for on_device in (False, True):
        runner = ViewRunner(model, pooled_features(model), 3)
        with torch.inference_mode():
            for v in views:
                runner.add(v.cuda() if on_device else v)
            outs.append(runner.take())
        streams.append(runner._copy_stream is not None)
    assert streams == [True, False]  # a side stream for host views only
    assert torch.equal(outs[0], outs[1])
