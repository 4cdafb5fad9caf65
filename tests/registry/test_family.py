"""A model family is one registration: a tiny non-ResNet network, defined and registered here and nowhere in the
package, is created, saved and loaded back through ``local-dir:``, pushed to a (local) Hub and loaded back through
``hf-hub:``, and frozen, with the package's own code paths."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import pytest
import torch
from hub_server import caches_fixture, hub_fixture  # noqa: F401  (fixtures)
from torch import nn

import slowfast_zoo
from slowfast_zoo.factory import expected_state_dict
from slowfast_zoo.registry import family as families
from slowfast_zoo.registry import registry
from slowfast_zoo.registry.config_schema import validate_config
from slowfast_zoo.registry.family import Family, register_family
from slowfast_zoo.weights.publish import push_to_hub, save_pretrained

ARCH = "tinyconv_test"


@dataclass(frozen=True)
class TinyConvConfig:
    """A three-layer video classifier: its own fields, none of ResNet3dConfig's."""

    num_classes: int = 5
    num_frames: int = 4
    channels: int = 4
    pool: Literal["avg", "max"] = "avg"

    @property
    def classifier(self) -> str:
        return "fc"


class TinyConv(nn.Module):
    """conv-BN stem, conv-BN body, linear classifier ``fc``."""

    stage_order = ("stem", "body", "fc")

    def __init__(self, cfg: TinyConvConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        self.stem = nn.Sequential(nn.Conv3d(3, c, 3, padding=1, bias=False), nn.BatchNorm3d(c), nn.ReLU())
        self.body = nn.Sequential(nn.Conv3d(c, c, 3, padding=1, bias=False), nn.BatchNorm3d(c), nn.ReLU())
        self.fc = nn.Linear(c, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(self.stem(x))
        x = x.mean((2, 3, 4)) if self.cfg.pool == "avg" else x.amax((2, 3, 4))
        return self.fc(x)


@pytest.fixture
def tiny(monkeypatch):
    """The tiny family and one architecture of it registered, for this test only."""
    monkeypatch.setattr(families, "_FAMILIES", dict(families._FAMILIES))
    for name in ("_ARCHS", "_PRETRAINED", "_DEFAULT_TAG", "_ALIASES"):
        monkeypatch.setattr(registry, name, dict(getattr(registry, name)))
    register_family(Family("tinyconv", TinyConvConfig, TinyConv))
    registry.register_arch(ARCH, TinyConvConfig(), labels=None, dataset="toy")
    return slowfast_zoo.get_pretrained_cfg(ARCH)


def _clip(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def _trained(model: nn.Module) -> nn.Module:
    """The model with every tensor changed from its initialization (BatchNorm statistics too), in eval mode."""
    torch.manual_seed(3)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if key.endswith("running_var"):
                t.copy_(torch.rand_like(t) + 0.5)
            elif t.is_floating_point():
                t.copy_(torch.randn_like(t))
    return model.eval()


def _same(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    torch.testing.assert_close(a.eval()(_clip()), b.eval()(_clip()))


def test_create_builds_the_family_from_its_config(tiny):
    model = slowfast_zoo.create(ARCH)
    assert type(model) is TinyConv and model.cfg == TinyConvConfig()
    # materialized from the meta device, then initialized by each layer's own reset_parameters
    assert torch.equal(model.stem[1].weight, torch.ones(4)) and torch.equal(model.stem[1].running_var, torch.ones(4))
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert model.eval()(_clip()).shape == (2, 5)
    assert model.pretrained_cfg.family == "tinyconv" and model.pretrained_cfg.model == TinyConvConfig()
    assert expected_state_dict(tiny).keys() == model.state_dict().keys()

    wide = slowfast_zoo.create(ARCH, channels=6, pool="max", num_classes=3)
    assert wide.cfg == TinyConvConfig(num_classes=3, channels=6, pool="max") and wide(_clip()).shape == (2, 3)
    with pytest.raises(TypeError, match=r"TinyConvConfig fields num_classes, num_frames, channels, pool"):
        slowfast_zoo.create(ARCH, width=8)  # a ResNet3dConfig field, not one of this family's
    with pytest.raises(ValueError, match="'tinyconv' has no features_only"):
        slowfast_zoo.create(ARCH, features_only=True)


def test_save_pretrained_and_local_dir(tiny, tmp_path):
    model = _trained(slowfast_zoo.create(ARCH))
    folder = save_pretrained(model, tmp_path / "tiny")
    config = json.loads((folder / "config.json").read_text())
    assert config["pretrained_cfg"]["family"] == "tinyconv"
    assert config["pretrained_cfg"]["model"] == {"num_classes": 5, "num_frames": 4, "channels": 4, "pool": "avg"}
    assert "TinyConvConfig" in (folder / "README.md").read_text()

    loaded = slowfast_zoo.create(f"local-dir:{folder}")
    assert type(loaded) is TinyConv and loaded.pretrained_cfg.family == "tinyconv"
    assert (
        loaded.load_report.key_scheme == "zoo"
        and loaded.pretrained_cfg.weights.sha256 == config["pretrained_cfg"]["hub"]["sha256"]
    )
    _same(loaded, model)

    # a new classifier on the loaded trunk: the family's classifier (``fc``) alone is re-initialized
    other = slowfast_zoo.create(f"local-dir:{folder}", num_classes=7)
    assert other.load_report.head_reset and other.fc.weight.shape == (7, 4)
    assert torch.equal(other.body[0].weight, model.body[0].weight)
    assert bool(torch.isfinite(other.fc.weight).all()) and other.fc.weight.abs().max() <= 0.5  # Linear's own init


def test_push_to_hub_and_hf_hub(tiny, hub, caches):
    model = _trained(slowfast_zoo.create(ARCH, pool="max"))
    result = push_to_hub(model, "org/tinyconv", endpoint=hub.url)
    stored = json.loads(hub.repos["org/tinyconv"].commits[result.revision]["config.json"])
    assert stored["pretrained_cfg"]["family"] == "tinyconv"

    loaded = slowfast_zoo.create(f"hf-hub:org/tinyconv@{result.revision}", pretrained=True)
    assert type(loaded) is TinyConv and loaded.cfg.pool == "max"
    assert loaded.pretrained_cfg.hub.sha256 == result.sha256 and loaded.load_report.file_format == "safetensors"
    _same(loaded, model)


def test_freeze_and_param_groups_follow_the_stage_order(tiny):
    model = slowfast_zoo.create(ARCH)
    assert slowfast_zoo.freeze(model, "stem") == ["stem"]
    assert not any(p.requires_grad for p in model.stem.parameters())
    assert all(p.requires_grad for p in [*model.body.parameters(), *model.fc.parameters()])
    assert type(model.stem[1]) is slowfast_zoo.FrozenBatchNorm3d and type(model.body[1]) is nn.BatchNorm3d
    groups = slowfast_zoo.param_groups(model, lr=1.0, stage_decay=0.5)
    # biases and norm affines (one dimension) go without weight decay when the model lists none of its own
    assert {g["name"]: g["lr"] for g in groups} == {"body": 0.5, "body.no_decay": 0.5, "fc": 1.0, "fc.no_decay": 1.0}
    with pytest.raises(ValueError, match=r"up_to must be one of \('stem', 'body'\)"):
        slowfast_zoo.freeze(model, "res4")


def test_config_json_is_checked_against_the_family_config(tiny, tmp_path):
    folder = save_pretrained(_trained(slowfast_zoo.create(ARCH)), tmp_path / "tiny")
    config = json.loads((folder / "config.json").read_text())
    validate_config(config)
    bad = json.loads(json.dumps(config))
    bad["pretrained_cfg"]["model"]["pool"] = "median"  # a Literal of the family's dataclass: no schema edit
    with pytest.raises(ValueError, match=r"'pretrained_cfg.model.pool': expected one of \['avg', 'max'\]"):
        validate_config(bad)
    bad = json.loads(json.dumps(config))
    bad["pretrained_cfg"]["model"]["layers"] = [3, 4, 6, 3]  # a ResNet3d field is no field of this family
    with pytest.raises(ValueError, match=r"'pretrained_cfg.model': unknown field\(s\) \['layers'\]"):
        validate_config(bad)
    bad = json.loads(json.dumps(config))
    bad["pretrained_cfg"]["family"] = "notafamily"
    with pytest.raises(ValueError, match=r"'pretrained_cfg.family': expected one of \['resnet3d', 'tinyconv'\]"):
        validate_config(bad)


def test_a_config_without_family_is_a_resnet3d(tmp_path):
    """config.json files written before families existed name none: they still load, as ResNet3d."""
    model = slowfast_zoo.create("slow_r50_8x8", width=8, num_classes=3)
    folder = save_pretrained(model, tmp_path / "old")
    config = json.loads((folder / "config.json").read_text())
    assert config["pretrained_cfg"].pop("family") == "resnet3d"
    (folder / "config.json").write_text(json.dumps(config))
    loaded = slowfast_zoo.create(f"local-dir:{folder}")
    assert type(loaded) is slowfast_zoo.ResNet3d and loaded.cfg == model.cfg


def test_predict_runs_another_familys_classifier(tiny):
    """predict takes a family's network as it is: its forward's logits, one set per view, softmaxed and averaged over
    the checkpoint's views (no ResNet3d head positions, no head_pool field)."""
    from slowfast_zoo.tasks.predict import predict, sample_video
    from slowfast_zoo.tasks.runner import read_view_inputs

    model = _trained(slowfast_zoo.create(ARCH))
    cfg = model.pretrained_cfg.replace(test_clips=2, test_crops=("center",), test_short_side=32, test_crop_size=32)
    model.pretrained_cfg = cfg
    got = predict(sample_video(), model, views="reference", top_k=2)
    _, views = read_view_inputs(sample_video(), cfg, "reference", torch.device("cpu"))
    assert got.num_views == len(views) == 2
    with torch.no_grad():
        want = torch.stack([model(v[None]).softmax(-1)[0] for v in views]).mean(0)
    torch.testing.assert_close(got.scores, want, rtol=1e-6, atol=1e-7)
    assert [p.index for p in got.top] == want.topk(2).indices.tolist()
