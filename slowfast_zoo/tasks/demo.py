"""A demo page: upload or record a video, pick a model, see its top-5 labels and the annotated video.

``slowfast-zoo demo [--model NAME]`` (or ``python app.py`` in a Hugging Face Space) serves :func:`build_demo` with
Gradio (``pip install "slowfast-zoo[demo]"``). Classifiers give the top-5 labels of the one-view prediction and the
video with each 2 s window's labels drawn; AVA detectors find the persons on each second's keyframe
(:func:`slowfast_zoo.tasks.detect.detect`) and draw their boxes and actions.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from .detect import detect
from .predict import load_model, predict, predict_windows, sample_video
from .render import render_detections, render_predictions

__all__ = ["DEFAULT_MODELS", "analyze", "build_demo"]

#: the models offered by default: one Slow, one SlowFast, the AVA detector
DEFAULT_MODELS = ("slow_r50_8x8", "slowfast_r50_8x8", "slowfast_r50_8x8_det")


@lru_cache(maxsize=2)
def _model(name: str) -> Any:
    from ..factory import create, resolve_cfg

    if resolve_cfg(name).model.roi_head:
        return create(name, pretrained=True).eval()
    return load_model(name)


def _is_detector(model: Any) -> bool:
    return bool(getattr(getattr(model, "cfg", None), "roi_head", False))


def analyze(video: str, model: Any, out_dir: str | Path, *, window: float = 2.0, hop: float = 1.0) -> tuple[dict, Path]:
    """``({label: score} of the top 5, annotated video path)`` for one uploaded video."""
    out_dir = Path(out_dir)
    if _is_detector(model):
        boxes = detect(video, model)
        scores: dict[str, float] = {}
        for b in boxes:
            for label, score in b.actions:
                scores[label] = max(scores.get(label, 0.0), score)
        top = dict(sorted(scores.items(), key=lambda kv: -kv[1])[:5])
        return top, render_detections(video, boxes, out_dir / "detections.mp4")
    result = predict(video, model, views="fast", top_k=5)
    windows = list(predict_windows(video, model, window, hop, top_k=3))
    return {p.label: p.score for p in result.top}, render_predictions(video, windows, out_dir / "predictions.mp4")


def build_demo(models: Sequence[str] | None = None, *, loaded: dict[str, Any] | None = None) -> Any:
    """The Gradio Blocks app; ``models`` are offered in the dropdown, ``loaded`` maps names to ready models."""
    try:
        import gradio as gr
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('the demo needs Gradio: pip install "slowfast-zoo[demo]"') from e
    names = list(models or DEFAULT_MODELS)
    loaded = dict(loaded or {})

    def run(video: str | None, name: str) -> tuple[dict, str]:
        if not video:
            raise gr.Error("upload or record a video first")
        model = loaded[name] if name in loaded else _model(name)
        out_dir = tempfile.mkdtemp(prefix="slowfast-zoo-demo-")
        try:
            labels, annotated = analyze(video, model, out_dir)
        except (OSError, RuntimeError, ValueError) as e:
            raise gr.Error(str(e)) from e
        return labels, str(annotated)

    with gr.Blocks(title="slowfast-zoo") as app:
        gr.Markdown("## slowfast-zoo: SlowFast and Slow video models\nUpload or record a video and pick a model.")
        with gr.Row():
            with gr.Column():
                video = gr.Video(label="video", sources=["upload", "webcam"], elem_id="video-in")
                model = gr.Dropdown(names, value=names[0], label="model", elem_id="model")
                button = gr.Button("Run", variant="primary", elem_id="run")
                gr.Examples([[str(sample_video())]], inputs=[video])
            with gr.Column():
                labels = gr.Label(num_top_classes=5, label="top-5", elem_id="labels")
                annotated = gr.Video(label="annotated", elem_id="video-out")
        button.click(run, [video, model], [labels, annotated])
    return app
