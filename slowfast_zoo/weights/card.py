"""The Hub model card (``README.md``) that :func:`~slowfast_zoo.weights.publish.save_pretrained` writes.

The YAML header is built with ``huggingface_hub``'s own :class:`~huggingface_hub.ModelCardData`, so the Hub reads
it as it reads any card: ``library_name: slowfast-zoo`` (the "Use this model" snippet and download counts),
``pipeline_tag``, ``license``, ``datasets``, ``tags``, ``base_model`` for derived weights and a ``model-index`` with
the authors' published metrics, only when the card describes exactly their weights.
"""

from __future__ import annotations

import re
from typing import Any

from ..version import __version__
from .manifest import HEX40, REPO_ID, load_manifest

__all__ = ["LIBRARY_NAME", "model_card"]

#: the id the Hub files these repos under (``library_name``), the package's PyPI name
LIBRARY_NAME = "slowfast-zoo"

#: dataset id in the card's ``datasets:`` -> the benchmark's name in the ``model-index``. The ids are the names the
#: datasets go by; none of them is a Hub dataset repository of the authors' copy, so the Hub shows them as plain text.
DATASETS = {
    "kinetics400": "Kinetics-400",
    "kinetics600": "Kinetics-600",
    "ssv2": "Something-Something V2",
    "charades": "Charades",
    "ava": "AVA",
}
#: the zoo's metric key -> (``model-index`` metric type, its display name); values are percentages on the
#: benchmark's validation split, as the authors' MODEL_ZOO tables give them
METRICS = {
    "top1": ("accuracy", "top-1 accuracy"),
    "top5": ("top_5_accuracy", "top-5 accuracy"),
    "mAP": ("mean_average_precision", "mAP"),
}
#: where the manifest's ``metrics_source`` tables are published
SOURCES = {
    "PySlowFast MODEL_ZOO.md": "https://github.com/facebookresearch/SlowFast/blob/main/MODEL_ZOO.md",
    "PyTorchVideo model_zoo.md": "https://github.com/facebookresearch/pytorchvideo/blob/main/docs/source/model_zoo.md",
}
#: The Hub has no spatio-temporal action detection task. An AVA detector takes a clip and person boxes (it proposes
#: no boxes itself) and scores each box's actions over the clip: a video classification per person, so that is the
#: closest task. ``object-detection`` would promise boxes from an image.
DETECTOR_PIPELINE_COMMENT = (
    "# pipeline_tag: the Hub has no spatio-temporal action detection task; this detector classifies the actions of\n"
    "# each given person box over a clip (it proposes no boxes), so video-classification is the closest task."
)


def _published(cfg: Any) -> bool:
    """The card describes the authors' weights unchanged: their metrics and training set apply."""
    return cfg.origin is not None and cfg.parent is None


def _base_model(cfg: Any) -> str | None:
    """The Hub repo of the weights these derive from (fine-tuned or edited), if they were loaded from a known one."""
    parent = cfg.parent
    if parent is None or parent.sha256 is None:  # nothing was loaded: the config names an ancestor, not the tensors
        return None
    hub_file = re.fullmatch(rf"({REPO_ID.pattern})@{HEX40.pattern}", parent.location or "")
    if hub_file:  # loaded from a Hub repo at a commit
        return hub_file[1]
    if parent.name.startswith("hf-hub:"):
        return parent.name[len("hf-hub:") :].partition("@")[0]
    hub = (load_manifest().get(parent.name) or {}).get("hub") or {}  # a registered model, from its authors' file
    return hub.get("repo_id") or None


def _eval_results(cfg: Any) -> list[Any]:
    from huggingface_hub import EvalResult

    source = (load_manifest().get(cfg.name) or {}).get("metrics_source")
    url = SOURCES.get(source) if isinstance(source, str) else None
    version = re.match(r"ava(\d)(\d)", cfg.tag or "")
    results = []
    for key, value in cfg.metrics.items():
        if key not in METRICS:
            continue
        kind, name = METRICS[key]
        results.append(
            EvalResult(
                task_type="video-classification",
                dataset_type=cfg.dataset,
                dataset_name=DATASETS.get(cfg.dataset, cfg.dataset),
                dataset_config=f"v{version[1]}.{version[2]}" if version else None,
                dataset_split="validation",
                metric_type=kind,
                metric_name=name,
                metric_value=value,
                source_name=source if url else None,
                source_url=url,
            )
        )
    return results


def card_data(cfg: Any, repo: str) -> Any:
    """The card's metadata as :class:`huggingface_hub.ModelCardData`."""
    from huggingface_hub import ModelCardData

    published = _published(cfg)
    tags = ["slowfast", "video", "action-recognition", cfg.arch.split("_")[0], "safetensors"]
    if cfg.dataset == "ava":
        tags.append("action-detection")
    results = _eval_results(cfg) if published else []
    return ModelCardData(
        library_name=LIBRARY_NAME,
        pipeline_tag="video-classification",
        license=cfg.license or "other",
        datasets=[cfg.dataset] if published else None,
        tags=list(dict.fromkeys(tags)),
        base_model=_base_model(cfg),
        model_name=repo if results else None,
        eval_results=results or None,
    )


# long: the card's text, line by line
def model_card(
    cfg: Any,
    *,
    sha256: str,
    size: int,
    repo_id: str | None = None,
    filename: str = "model.safetensors",
) -> str:
    """A Hub model card (README.md with YAML metadata) for one set of weights described by a ``PretrainedCfg``."""
    repo = repo_id or (cfg.hub.repo_id if cfg.hub else cfg.name)
    header = card_data(cfg, repo).to_yaml()
    if cfg.dataset == "ava":
        header = f"{DETECTOR_PIPELINE_COMMENT}\n{header}"
    m = cfg.model
    task = "detect" if cfg.dataset == "ava" else "predict"
    lines = [
        f"# {cfg.name}",
        "",
        f"{cfg.arch} ({'SlowFast' if m.alpha else 'single pathway'}, ResNet-{50 if m.layers[2] == 6 else 101}) "
        f"for {DATASETS.get(cfg.dataset, cfg.dataset)} classes ({cfg.num_classes}). Weights in the key layout of "
        f"[slowfast-zoo](https://pypi.org/project/slowfast-zoo/) {__version__}.",
        "",
        "## Use this model",
        "",
        "```bash",
        "pip install 'slowfast-zoo[video]'",
        "```",
        "",
        "```python",
        "import slowfast_zoo",
        "",
        f'model = slowfast_zoo.create("hf-hub:{repo}", pretrained=True).eval()',
    ]
    if task == "predict":
        lines += ['print(slowfast_zoo.predict("video.mp4", model).top)  # the test protocol below']
    else:
        lines += [
            "# person boxes (x1, y1, x2, y2 in pixels) at a keyframe, from your person detector",
            "boxes = {2.0: [[10, 20, 110, 220]]}",
            'print(slowfast_zoo.detect("video.mp4", model, boxes))',
        ]
    lines += [
        "```",
        "",
        "## Weights",
        "",
        "| file | sha256 | bytes |",
        "|---|---|---|",
        f"| `{filename}` | `{sha256}` | {size} |",
        "",
        "## Provenance",
        "",
        *_provenance_lines(cfg),
        "## Evaluation",
        "",
    ]
    if cfg.metrics and _published(cfg):
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in cfg.metrics.items()]
        lines += ["", "As published by the authors for these weights (validation split)."]
    else:
        lines += ["No metrics were measured on these weights by their authors; none are reported here."]
    lines += [
        "",
        "### Test protocol",
        "",
        f"{cfg.test_clips} clips x {len(cfg.test_crops)} crops ({', '.join(cfg.test_crops)}), short side "
        f"{cfg.test_short_side}, crop {cfg.test_crop_size}, {cfg.activation} scores combined by {cfg.ensemble}. "
        f"Input: {m.num_frames} frames every {cfg.sampling_rate} at {cfg.target_fps:g} fps ({cfg.frame_sampling}), "
        f"RGB in [0, 1], mean {list(cfg.mean)}, std {list(cfg.std)}.",
        "",
        "## Model",
        "",
        f"- parameters: {cfg.params if cfg.params is not None else 'see config.json'}",
        f"- GFLOPs per view: {cfg.gflops if cfg.gflops is not None else 'not computed'}",
        f"- labels: {cfg.labels if isinstance(cfg.labels, str) or not cfg.labels else 'custom, see config.json'}",
        "",
    ]
    if cfg.notes:
        lines += [cfg.notes, ""]
    if cfg.citation:
        lines += ["## Citation", "", cfg.citation, ""]
    lines += ["## License", "", f"{cfg.license or 'See the original release.'}", ""]
    return "\n".join(["---", header.rstrip("\n"), "---", "", *lines])


def _provenance_lines(cfg: Any) -> list[str]:
    """What the weights are, in words: the authors' file unchanged, derived from a parent, or neither."""
    loaded = cfg.weights
    if cfg.parent is not None:
        p = cfg.parent
        src = f" (weights file sha256 `{p.sha256}`" + (f", from {p.location}" if p.location else "") + ")"
        steps = "; ".join(p.changes) or "changed"
        return [
            f"Derived from `{p.name}`{src if p.sha256 else ''}: {steps}. These are not the published weights, "
            "and no published metric applies to them.",
            "",
        ]
    if cfg.origin is not None:
        return [
            f"Converted from the authors' file <{cfg.origin.url}> ({cfg.origin.format}, {cfg.origin.key_scheme} keys"
            + (f", sha256 `{cfg.origin.sha256}`" if cfg.origin.sha256 else "")
            + "); tensors are unchanged, only their names differ.",
            "",
        ]
    if loaded is not None:
        return [f"Loaded from a file with sha256 `{loaded.sha256}`; not one the zoo's manifest knows.", ""]
    return ["Not loaded from any published checkpoint (e.g. randomly initialized or trained from scratch).", ""]
