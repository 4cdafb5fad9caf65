"""The model card save_pretrained / push_to_hub write, read back with huggingface_hub's own card parser."""

from __future__ import annotations

import re
from importlib import resources

import pytest
import yaml
from hub_server import caches_fixture, hub_fixture, pin_in_manifest, random_model, tiny_cfg  # noqa: F401  (fixtures)
from huggingface_hub import ModelCard

import slowfast_zoo
from slowfast_zoo.registry.pretrained import LoadedWeights
from slowfast_zoo.weights.cache import tensors_sha256
from slowfast_zoo.weights.card import model_card
from slowfast_zoo.weights.publish import push_to_hub, save_pretrained

SF = "slowfast_r50_8x8.k400_pysf"
AVA = "slowfast_r50_8x8_det.ava22_ptv"
SHA = "ab" * 32


def _card(name: str) -> tuple[str, ModelCard]:
    text = model_card(slowfast_zoo.get_pretrained_cfg(name), sha256=SHA, size=123)
    return text, ModelCard(text, ignore_metadata_errors=False)


def _header(text: str) -> str:
    return text.split("---\n")[1]


def test_published_card_is_read_by_the_hub_parser() -> None:
    _, card = _card(SF)
    data = card.data
    assert data.library_name == "slowfast-zoo" and data.pipeline_tag == "video-classification"
    assert data.license == "apache-2.0" and data.datasets == ["kinetics400"] and data.base_model is None
    assert {"slowfast", "video", "action-recognition"} <= set(data.tags)
    # PySlowFast MODEL_ZOO.md, Kinetics/c2/SLOWFAST_8x8_R50: top-1 77.0, top-5 92.6
    got = {(r.metric_type, r.metric_value, r.dataset_type, r.dataset_split, r.task_type) for r in data.eval_results}
    assert got == {
        ("accuracy", 77.0, "kinetics400", "validation", "video-classification"),
        ("top_5_accuracy", 92.6, "kinetics400", "validation", "video-classification"),
    }
    assert {r.source_url for r in data.eval_results} == {
        "https://github.com/facebookresearch/SlowFast/blob/main/MODEL_ZOO.md"
    }
    assert "## Use this model" in card.text and "## Provenance" in card.text and "### Test protocol" in card.text
    assert 'slowfast_zoo.create("hf-hub:slowfast-zoo/slowfast_r50_8x8.k400_pysf", pretrained=True)' in card.text
    assert "10 clips x 3 crops" in card.text and "## Citation" in card.text and "arXiv:1812.03982" in card.text
    assert "SlowFast_8x8_R50.pkl".lower() in card.text.lower()  # the authors' file it was converted from


def test_detector_card_names_the_closest_task_and_why() -> None:
    text, card = _card(AVA)
    header = _header(text)
    assert re.search(r"^# pipeline_tag: the Hub has no spatio-temporal action detection task", header, re.M)
    assert yaml.safe_load(header)["pipeline_tag"] == "video-classification"
    assert card.data.pipeline_tag == "video-classification" and "action-detection" in card.data.tags
    # PyTorchVideo model_zoo.md, AVA SlowFast 8x8 R50 detector: 24.67 mAP on AVA v2.2
    [result] = card.data.eval_results
    assert (result.metric_type, result.metric_value) == ("mean_average_precision", 24.67)
    assert (result.dataset_type, result.dataset_config) == ("ava", "v2.2")
    assert "slowfast_zoo.detect(" in card.text


def test_weights_without_published_metrics_have_no_model_index() -> None:
    _, card = _card("slowfast_nln_r101_50_50_8x8.k600_pysf")  # the authors published no accuracy for this file
    assert card.data.eval_results is None and card.data.library_name == "slowfast-zoo"


def test_fine_tuned_card_names_its_base_model(tmp_path, monkeypatch) -> None:
    cfg = tiny_cfg(SF, origin=slowfast_zoo.get_pretrained_cfg(SF).origin)
    model = random_model(cfg)
    fingerprint = tensors_sha256(model.state_dict())
    model.pretrained_cfg = cfg.replace(weights=LoadedWeights("x", "0" * 64, "pretrained", None, fingerprint))
    published = save_pretrained(model, tmp_path / "published")  # the published tensors, unchanged
    assert ModelCard.load(published / "README.md").data.base_model is None
    pin_in_manifest(monkeypatch, SF, published / "model.safetensors")  # the base counts only where it is pinned

    tuned = slowfast_zoo.create(f"local-dir:{published}", num_classes=3)
    card = ModelCard.load(save_pretrained(tuned, tmp_path / "tuned", label_names=["a", "b", "c"]) / "README.md")
    assert card.data.base_model == "slowfast-zoo/slowfast_r50_8x8.k400_pysf"
    # the published metrics and training set describe the base model, not these weights
    assert card.data.eval_results is None and card.data.datasets is None
    assert card.data.library_name == "slowfast-zoo"


def test_random_weights_under_a_published_config_claim_no_base_model(tmp_path) -> None:
    card = ModelCard.load(save_pretrained(random_model(tiny_cfg(SF)), tmp_path / "out") / "README.md")
    assert card.data.base_model is None and card.data.eval_results is None


def test_use_this_model_snippet_runs_against_the_hub(hub, caches, capsys) -> None:
    """The card's own snippet, executed: the pushed repo loads and predicts on the packaged sample clip."""
    base = random_model(tiny_cfg("slow_r50_4x16.k400_pysf"), seed=1)
    result = push_to_hub(base, "org/base", endpoint=hub.url)
    text = hub.repos["org/base"].commits[result.revision]["README.md"].decode()
    [snippet] = re.findall(r"```python\n(.*?)```", text, re.S)
    assert 'create("hf-hub:org/base", pretrained=True)' in snippet
    sample = resources.files("slowfast_zoo").joinpath("assets", "sample.mp4")
    scope: dict = {}
    exec(snippet.replace('"video.mp4"', repr(str(sample))), scope)
    assert scope["model"].pretrained_cfg.hub.revision == result.revision
    printed = capsys.readouterr().out
    assert printed.count("Prediction(") == 5, printed  # the top 5 of the sample clip

    # fine-tuned from that repo: the new card names it as the base model
    tuned = slowfast_zoo.create(f"hf-hub:org/base@{result.revision}", pretrained=True, num_classes=2)
    pushed = push_to_hub(tuned, "me/tuned", label_names=["x", "y"], endpoint=hub.url)
    card = ModelCard(hub.repos["me/tuned"].commits[pushed.revision]["README.md"].decode())
    assert card.data.base_model == "org/base" and card.data.library_name == "slowfast-zoo"


@pytest.mark.parametrize("name", slowfast_zoo.list_pretrained())
def test_every_registered_card_parses(name) -> None:
    _, card = _card(name)
    cfg = slowfast_zoo.get_pretrained_cfg(name)
    assert card.data.library_name == "slowfast-zoo" and card.data.license == cfg.license
    assert len(card.data.eval_results or []) == len(cfg.metrics)
