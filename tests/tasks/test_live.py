"""Live sources: a real stream from another process over a local socket, scored as the same frames in a file are."""

from __future__ import annotations

import threading

import pytest
import torch
from stream_server import Server

from slowfast_zoo import create
from slowfast_zoo.tasks.live import predict_stream
from slowfast_zoo.tasks.predict import predict_windows
from slowfast_zoo.video.io import VideoError

av = pytest.importorskip("av")


def tiny(name="slow_r50_8x8", **cfg_changes):
    frames = 16 if name.startswith("slowfast") else 4
    m = create(name, width=8, num_classes=10, num_frames=frames, crop_size=64).eval()
    m.pretrained_cfg = m.pretrained_cfg.replace(test_short_side=64, test_crop_size=64, **cfg_changes)
    return m


@pytest.fixture
def serve(tmp_path):
    started = []

    def start(*args: str) -> Server:
        started.append(Server(tmp_path, *args))
        return started[-1]

    yield start
    for s in started:
        s.stop()


@pytest.mark.parametrize("name", ["slow_r50_8x8", "slowfast_r50_8x8"])
def test_stream_windows_equal_predict_windows_on_the_same_frames(serve, one_thread, name):
    model = tiny(name)
    server = serve("--frames", "120", "--fps", "30")
    run = predict_stream(server.url, model, window=2.0, hop=0.5, top_k=3, skip=False, fast=False)
    live = list(run)
    server.stop()
    ref = list(predict_windows(server.copy, model, 2.0, 0.5, views="fast", top_k=3))
    assert [(w.prediction.start, w.prediction.end) for w in live] == [(r.start, r.end) for r in ref]
    assert len(live) == 5
    for w, r in zip(live, ref):
        torch.testing.assert_close(w.prediction.scores, r.scores, rtol=0, atol=0)
        assert w.prediction.labels == r.labels
        assert w.dropped == 0
    assert run.stats.windows == 5 and run.stats.dropped == 0
    assert run.stats.end == "ended"
    assert run.stats.peak_buffered <= run.stats.capacity


@pytest.mark.parametrize("name", ["slow_r50_8x8", "slowfast_r50_8x8"])
def test_large_source_is_buffered_preprocessed_with_the_same_scores(serve, one_thread, name):
    """A source larger than the model's input is buffered resized and normalized: smaller, and scored bit for bit."""
    model = tiny(name)
    server = serve("--frames", "60", "--fps", "30", "--width", "320", "--height", "240")
    run = predict_stream(server.url, model, window=1.0, hop=0.5, skip=False, fast=False)
    live = list(run)
    server.stop()
    ref = list(predict_windows(server.copy, model, 1.0, 0.5, views="fast"))
    assert len(live) == len(ref) == 3
    for w, r in zip(live, ref):
        torch.testing.assert_close(w.prediction.scores, r.scores, rtol=0, atol=0)
    # 64 px short side, float32: 3 * 64 * 85 * 4 bytes a frame instead of 320 * 240 * 3 decoded
    assert run.stats.frame_bytes == 3 * 64 * 85 * 4 < 320 * 240 * 3
    assert 0 < run.stats.peak_buffer_bytes <= run.stats.capacity * run.stats.frame_bytes


def test_small_source_is_buffered_as_decoded(serve, one_thread):
    """Below the model's size the decoded uint8 frame is the smaller one, so it is what the buffer holds."""
    server = serve("--frames", "30", "--fps", "30")
    run = predict_stream(server.url, tiny(), window=1.0, hop=1.0, skip=False, fast=False)
    assert len(list(run)) == 1
    server.stop()
    assert run.stats.frame_bytes == 64 * 48 * 3


def test_http_stream_equals_the_file(serve, one_thread):
    model = tiny()
    server = serve("--http", "--frames", "90", "--fps", "30")
    assert server.url.startswith("http://127.0.0.1:")
    run = predict_stream(server.url, model, window=1.0, hop=0.5, skip=False, fast=False)
    live = list(run)
    server.stop()
    ref = list(predict_windows(server.copy, model, 1.0, 0.5, views="fast"))
    assert [w.prediction.start for w in live] == [r.start for r in ref] == [0.0, 0.5, 1.0, 1.5, 2.0]
    for w, r in zip(live, ref):
        torch.testing.assert_close(w.prediction.scores, r.scores, rtol=0, atol=0)
    assert run.stats.end.startswith("ended")  # FFmpeg reports the closed body as an I/O error: named, not raised


def test_window_frames_are_the_ones_the_file_reader_picks(serve, one_thread):
    """The clip scored holds the frames predict_windows reads from the file (told apart by the index drawn on them)."""
    from video_factory import read_index

    from slowfast_zoo.video.io import VideoReader
    from slowfast_zoo.video.views import plan_views

    model = tiny()
    server = serve("--frames", "75", "--fps", "25", "--width", "128", "--height", "96")
    run = predict_stream(server.url, model, window=1.0, hop=0.4, skip=False, fast=False)
    got = []
    buffered = run.source.frames_at

    def spy(instants):
        frames = buffered(instants)
        got.append([read_index(f) for f in frames.numpy()])
        return frames

    run.source.frames_at = spy
    windows = list(run)
    server.stop()
    assert [w.prediction.start for w in windows] == [0.0, 0.4, 0.8, 1.2, 1.6, 2.0]
    for w, indices in zip(windows, got):
        with VideoReader(server.copy) as reader:  # one reader per window: reads forward from the start, no seeking
            span = (w.prediction.start, w.prediction.end)
            (view,) = plan_views(model.pretrained_cfg, reader.info, "fast", window=span)
            assert indices == [read_index(f) for f in reader.frames_at_positions(view.positions).numpy()]
    assert got[0] == [0, 8, 17, 24]  # 4 frames over 1 s at 25 fps (clip of 8*4/30 s, longer: clamped to the window)


def test_slow_model_skips_windows_and_the_buffer_stays_bounded(serve, one_thread):
    model = tiny()
    server = serve("--frames", "300", "--fps", "30")  # 10 s: 17 windows of 2 s every 0.5 s
    now = [0.0]  # an injected clock: frames arrive at 0, the first window's model call ends at 100
    run = predict_stream(server.url, model, window=2.0, hop=0.5, fast=False, clock=lambda: now[0])
    inner = model.position_logits
    calls = []

    def blocked(x):
        if not calls:  # the first window waits until the source has sent everything
            assert run.source.wait(lambda: False, timeout=60) is False
            assert run.source.state == "ended"
            now[0] = 100.0
        calls.append(1)
        return inner(x)

    model.position_logits = blocked
    windows = list(run)
    assert len(windows) == 2  # the newest complete window when the model was free, then straight to the newest
    # the first is window 0 unless the decoder completed more before this thread looked (a loaded machine): then
    # the newest of those, the earlier ones counted as skipped
    first = windows[0].prediction.start
    assert first in (0.0, 0.5, 1.0) and windows[0].dropped == int(first / 0.5)
    assert windows[1].prediction.start == 8.0 and windows[1].dropped == 15 - windows[0].dropped
    assert run.stats.dropped == 15 and run.stats.sustained_hop == 8.0 - first
    # latency counts from when the window was complete (clock 0), not from when the model got to it (clock 100)
    assert [(w.latency, w.compute) for w in windows] == [(100.0, 100.0), (100.0, 0.0)]
    # every frame of all 17 windows was wanted; the buffer held a fixed number, the oldest dropped as they came
    assert run.source.evicted > 0
    assert run.stats.peak_buffered <= run.stats.capacity < 17 * 4
    ref = list(predict_windows(server.copy, model, 2.0, 0.5, views="fast"))
    torch.testing.assert_close(windows[1].prediction.scores, ref[16].scores, rtol=0, atol=0)


def test_ending_the_server_ends_the_stream(serve, one_thread):
    server = serve("--frames", "90", "--hold")
    run = predict_stream(server.url, tiny(), window=1.0, hop=1.0, skip=False, fast=False, read_timeout=60)
    got = []
    for w in run:
        got.append(w)
        if len(got) == 2:
            threading.Thread(target=server.stop).start()  # the server hangs up while we read
    assert [w.prediction.start for w in got] == [0.0, 1.0, 2.0]
    assert run.stats.end == "ended"


def test_stalled_source_ends_cleanly(serve, one_thread):
    server = serve("--frames", "45", "--hold")  # sends 1.5 s, then nothing, connection open
    run = predict_stream(server.url, tiny(), window=1.0, hop=0.5, fast=False, read_timeout=1.0)
    got = [w.prediction.start for w in run]
    assert got == [0.0, 0.5]  # the decoder's held-back frames are flushed: all 1.5 s sent are scored
    assert run.stats.end == "stalled: no data for 1 s"


def test_garbage_is_a_clear_error(serve):
    server = serve("--mode", "garbage")
    with pytest.raises(VideoError, match="not a readable video stream"):
        predict_stream(server.url, tiny(), fast=False)


@pytest.mark.parametrize(("size", "match"), [(100000, "not a readable video stream"), (16000, "exceed the limit")])
def test_huge_frames_are_refused_before_decoding(serve, size, match):
    server = serve("--mode", "huge", "--width", str(size), "--height", str(size))
    with pytest.raises(VideoError, match=match):
        predict_stream(server.url, tiny(), fast=False, format="yuv4mpegpipe")


def test_max_pixels_applies_to_every_stream(serve):
    server = serve("--frames", "30", "--width", "128", "--height", "96")
    with pytest.raises(VideoError, match=r"128x96 frames exceed the limit of 10000 pixels"):
        predict_stream(server.url, tiny(), fast=False, max_pixels=10000)


def test_fast_path_folds_batchnorm_and_agrees(serve, one_thread):
    model = tiny()
    server = serve("--frames", "60")
    run = predict_stream(server.url, model, window=2.0, hop=2.0, skip=False, precision="fp32")
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in run.model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in model.modules())  # the caller's model is untouched
    (w,) = list(run)
    server.stop()
    (ref,) = list(predict_windows(server.copy, model, 2.0, 2.0, views="fast"))
    torch.testing.assert_close(w.prediction.scores, ref.scores, rtol=1e-4, atol=1e-5)


def test_bf16_fast_path_stores_its_weights_once(serve, one_thread):
    """precision="bf16": the weights are stored in bf16 (no per-call casts), scored as predict scores that model."""
    from slowfast_zoo import optimize_for_inference

    model = tiny()
    server = serve("--frames", "60")
    run = predict_stream(server.url, model, window=2.0, hop=2.0, skip=False, precision="bf16", device="cpu")
    assert {p.dtype for p in run.model.parameters()} == {torch.bfloat16}
    (w,) = list(run)
    server.stop()
    fast = optimize_for_inference(model, dtype=torch.bfloat16)
    (ref,) = list(predict_windows(server.copy, fast, 2.0, 2.0, views="fast"))
    torch.testing.assert_close(w.prediction.scores, ref.scores, rtol=0, atol=0)


def test_growing_file_is_followed(serve, tmp_path, one_thread):
    server = serve("--frames", "90", "--fps", "30")
    with av.open(server.url) as c:  # take the stream once, to have its bytes
        list(c.demux())
    server.stop()
    data = server.copy.read_bytes()
    growing = tmp_path / "growing.ts"
    growing.write_bytes(data[: len(data) // 2])  # about 1.5 s of 3
    run = predict_stream(
        str(growing), tiny(), 1.0, 0.5, skip=False, fast=False, options={"follow": "1"}, read_timeout=2
    )
    starts = []
    for w in run:
        starts.append(w.prediction.start)
        if len(starts) == 1:  # the writer catches up only after the first window was scored
            with growing.open("ab") as f:
                f.write(data[len(data) // 2 :])
    assert starts[:4] == [0.0, 0.5, 1.0, 1.5]  # windows that need the appended 1.5 s
    assert run.stats.end == "stalled: no data for 2 s"  # a followed file never ends: it goes quiet


def test_a_1080p_frame_is_buffered_at_the_checkpoint_size():
    """The README's figure: a 1080p frame at SlowFast R50's 256-px test short side in float32 is 1.4 MB, not 6.2 MB."""
    from slowfast_zoo.registry.registry import get_pretrained_cfg
    from slowfast_zoo.tasks.live import _buffer_preprocessing
    from slowfast_zoo.video.io import VideoInfo

    info = VideoInfo("cam", 1920, 1080, 30.0, 1.0, 30, 0, "h264", "mpegts")
    prepare = _buffer_preprocessing(get_pretrained_cfg("slowfast_r50_8x8"), info, torch.device("cpu"))
    out = prepare(torch.zeros(1080, 1920, 3, dtype=torch.uint8))
    assert out.shape == (3, 256, 455) and out.dtype == torch.float32
    assert out.numel() * out.element_size() == 1_397_760 < 1920 * 1080 * 3 == 6_220_800
