"""The model contract users fine-tune and extract features with (timm's names and semantics), and export."""

from __future__ import annotations

import pytest
import torch
import torchvision
from tiny import tiny
from torch import nn

import slowfast_zoo
from slowfast_zoo import FrozenBatchNorm3d, freeze, param_groups
from slowfast_zoo.registry import design_space

ARCHS = slowfast_zoo.list_models()
#: compiled and exported here: every published or authors-configured architecture, and one design-space network per
#: mechanism it adds (time-strided sampling, time-to-channel, no lateral, Fast-only, half resolution, time
#: differences); the other ablations and Figure-2 points reuse those code paths (tests/models/test_design_space.py)
MECHANISMS = [
    "fast_r50_4x16",
    "slowfast_r50_4x16_nolateral",
    "slowfast_r50_4x16_tsample",
    "slowfast_r50_4x16_ttoc_sum",
    "slowfast_r50_4x16_ttoc_concat",
    "slowfast_r50_4x16_fast_halfres",
    "slowfast_r50_4x16_fast_timediff",
]
EXPORTED = [n for n in ARCHS if n not in design_space.NAMES] + MECHANISMS
#: compiled in the default run: one pathway with a temporal pool and non-local blocks, and two pathways with laterals
#: under an ROI head (each compile and export takes seconds); every other one runs with the slow tests (CI)
QUICK_EXPORTS = ("i3d_nln_r50_8x8", "slowfast_r50_8x8_det")
CLASSIFIERS = [a for a in ARCHS if not slowfast_zoo.get_pretrained_cfg(a).model.roi_head]


def clip(model, batch: int = 2, size: int = 64) -> list[torch.Tensor]:
    cfg = model.cfg
    torch.manual_seed(0)
    if cfg.alpha is None:
        return [torch.randn(batch, 3, 4, size, size)]
    return [torch.randn(batch, 3, 2, size, size), torch.randn(batch, cfg.input_chans(1), 2 * cfg.alpha, size, size)]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_features_head_and_embedding(name: str) -> None:
    model = tiny(name).eval()
    x = clip(model)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert [f.shape[1] for f in feats] == list(model.head.in_chs)
        embedding = model.forward_head(feats, pre_logits=True)
        assert embedding.shape == (2, model.num_features)
        torch.testing.assert_close(model.get_classifier()(embedding), model(x), rtol=0, atol=1e-6)
        model.reset_classifier(0)  # an embedding model
        assert model.num_classes == 0 and torch.equal(model(x), embedding)
        model.reset_classifier(3)
        assert model(x).shape == (2, 3) and model.num_classes == 3


def test_full_size_embedding_widths() -> None:
    """2304-d for SlowFast R50/R101 (2048 slow + 256 fast), 2048-d for Slow."""
    for name, dim in [("slowfast_r50_8x8", 2304), ("slowfast_r101_16x8", 2304), ("slow_r50_8x8", 2048)]:
        assert slowfast_zoo.create(name, device="meta").num_features == dim


@pytest.mark.parametrize("name", ARCHS)
def test_features_only_matches_feature_info(name: str) -> None:
    model = tiny(name, features_only=True, out_indices=(0, 1, 2, 3, 4)).eval()
    x = clip(model.model)
    with torch.no_grad():
        out = model(x)
    assert len(out) == len(model.feature_info) == 5
    t_in = [t.shape[2] for t in x]
    for maps, info in zip(out, model.feature_info):
        assert [m.shape[1] for m in maps] == list(info["num_chs"]), info
        for p, (m, (t_red, s_red)) in enumerate(zip(maps, info["reduction"])):
            assert m.shape[2] == t_in[p] // t_red and m.shape[3] == 64 // s_red, (info, m.shape)
    assert not any(isinstance(m, nn.Linear) for m in model.modules())  # no classifier left


def test_features_only_stops_at_the_last_index() -> None:
    model = tiny("slowfast_r50_8x8", features_only=True, out_indices=(1, 2))
    assert len(model.model.res4) == 0 and len(model.model.res5) == 0
    with pytest.raises(ValueError, match="increasing stage numbers"):
        tiny("slow_r50_8x8", features_only=True, out_indices=(3, 1))


@pytest.mark.parametrize("name", ["slowfast_r50_8x8", "i3d_nln_r50_8x8"])
def test_grad_checkpointing_changes_nothing_but_memory(name: str) -> None:
    model = tiny(name, dropout=0.0)
    with torch.no_grad():
        for p in model.parameters():  # no zero-init gammas, so that every gradient is non-trivial
            p.add_(torch.randn_like(p) * 0.05)
    x = clip(model)
    grads = []
    for enable in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        out = model(x)
        out.square().sum().backward()
        grads.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=0)
    for n in grads[0][1]:
        torch.testing.assert_close(grads[0][1][n], grads[1][1][n], rtol=1e-5, atol=1e-7, msg=n)


def test_freeze_up_to_res4_with_frozen_bn() -> None:
    model = tiny("slowfast_r50_8x8")
    frozen = freeze(model, up_to="res4")
    assert frozen == ["stem", "res2", "res3", "res4"]
    for name, p in model.named_parameters():
        trainable = name.startswith(("res5.", "head."))
        assert p.requires_grad == trainable, name
    assert not any(isinstance(m, nn.BatchNorm3d) for m in (model.stem, model.res2, model.res4, model.lateral))
    assert isinstance(model.res5.slow[0].a.bn, nn.BatchNorm3d)
    assert isinstance(model.res4.slow[0].a.bn, FrozenBatchNorm3d)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(clip(model)).sum().backward()
    opt.step()
    after = model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"res5", "head"}  # frozen stages keep weights and BN statistics in train mode


def test_frozen_bn_equals_eval_batchnorm() -> None:
    bn = nn.BatchNorm3d(6)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 6, 3, 4, 4)
    torch.testing.assert_close(FrozenBatchNorm3d.from_batchnorm(bn)(x), bn.eval()(x), rtol=1e-5, atol=1e-6)


def test_frozen_bn_needs_running_statistics() -> None:
    with pytest.raises(ValueError, match="running statistics"):
        FrozenBatchNorm3d.from_batchnorm(nn.BatchNorm3d(6, track_running_stats=False))


def test_param_groups_decay_by_stage() -> None:
    model = tiny("slowfast_r50_8x8")
    freeze(model, up_to="res2")
    groups = param_groups(model, lr=0.1, weight_decay=1e-4, stage_decay=0.5)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {
        "res3",
        "res3.no_decay",
        "res4",
        "res4.no_decay",
        "res5",
        "res5.no_decay",
        "head",
        "head.no_decay",
    }
    assert by_name["head"]["lr"] == 0.1 and by_name["res5"]["lr"] == 0.05 and by_name["res3"]["lr"] == 0.1 * 0.5**3
    assert by_name["res4.no_decay"]["weight_decay"] == 0.0 and by_name["res4"]["weight_decay"] == 1e-4
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters() if p.requires_grad)


@pytest.mark.usefixtures("one_thread")  # bit-for-bit across implementations: see the fixture
def test_sync_batchnorm_conversion_keeps_keys_and_outputs() -> None:
    model = tiny("slowfast_r50_8x8").eval()
    x = clip(model)
    with torch.no_grad():
        expected = model(x)
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model).eval()
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
    with torch.no_grad():
        assert torch.equal(synced(x), expected)
    assert list(synced.state_dict()) == list(model.state_dict())


@pytest.mark.parametrize(
    "name", [n if n in QUICK_EXPORTS else pytest.param(n, marks=pytest.mark.slow) for n in EXPORTED]
)
def test_compiles_without_graph_breaks_and_exports(name: str) -> None:
    model = tiny(name).eval()
    x = clip(model, batch=1)
    boxes = [torch.tensor([[2.0, 2.0, 50.0, 60.0]])] if model.cfg.roi_head else None
    with torch.no_grad():
        expected = model(x, boxes)
        torch._dynamo.reset()  # each test's fresh model would otherwise count against the recompile limit
        compiled = torch.compile(model, fullgraph=True, backend="eager")  # fullgraph: a graph break raises
        torch.testing.assert_close(compiled(x, boxes), expected, rtol=0, atol=0)
        exported = torch.export.export(model, (x, boxes))
        torch.testing.assert_close(exported.module()(x, boxes), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_inductor_compile_matches_eager() -> None:
    model = tiny("slowfast_r50_8x8").eval()
    x = clip(model, batch=1)
    torch._dynamo.reset()
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, fullgraph=True)(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPORTED)
def test_onnx_export_matches_eager(name: str, tmp_path) -> None:
    import onnxruntime as ort

    model = tiny(name).eval()
    x = clip(model, batch=1)
    args = (x, [torch.tensor([[2.0, 2.0, 50.0, 60.0]])]) if model.cfg.roi_head else (x,)
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, args, dynamo=True).save(str(path))
    session = ort.InferenceSession(str(path))
    flat = [*x, *args[1]] if len(args) == 2 else x
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), flat)}
    with torch.no_grad():
        expected = model(*args).numpy()
    out = session.run(None, feeds)[0]
    assert out.shape == expected.shape
    assert abs(out - expected).max() < 1e-4


def test_frozen_model_state_dict_loads_into_a_plain_model(tmp_path) -> None:
    """Freezing keeps every state-dict key, so a fine-tuned frozen model saves and reloads strictly."""
    from slowfast_zoo.weights.publish import save_pretrained

    model = tiny("slowfast_r50_8x8")
    plain_keys = list(model.state_dict())
    freeze(model, up_to="res3")
    assert list(model.state_dict()) == plain_keys
    save_pretrained(model, tmp_path / "run", label_names=["a", "b", "c", "d", "e"])
    loaded = slowfast_zoo.create(f"local-dir:{tmp_path / 'run'}").eval()
    assert loaded.pretrained_cfg.label_names == ("a", "b", "c", "d", "e")
    x = clip(model)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_local_dir_with_other_weights_is_refused_and_kept(tmp_path) -> None:
    from slowfast_zoo import CheckpointError
    from slowfast_zoo.weights.publish import save_pretrained

    folder = save_pretrained(tiny("slow_r50_8x8"), tmp_path / "run")
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same length, other bytes
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: sha256 [0-9a-f]{64}, but .*config\.json records"):
        slowfast_zoo.create(f"local-dir:{folder}")
    assert weights.read_bytes() == bytes(data)  # the user's file is reported, never deleted
    with pytest.raises(FileNotFoundError, match=r"expected config\.json and model\.safetensors"):
        slowfast_zoo.create(f"local-dir:{tmp_path / 'missing'}")


@pytest.mark.parametrize("out_indices", [(1, 2), (0,), (2, 3), (0, 1, 2, 3, 4)])
def test_features_only_leaves_no_parameter_without_a_gradient(out_indices: tuple[int, ...]) -> None:
    """DDP raises on parameters that get no gradient: unused laterals must not stay behind."""
    model = tiny("slowfast_r50_8x8", features_only=True, out_indices=out_indices)
    out = model(clip(model.model))
    sum(m.square().mean() for maps in out for m in maps).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, no_grad


def test_freeze_and_param_groups_work_on_features_only_models() -> None:
    model = tiny("slowfast_r50_8x8", features_only=True, out_indices=(1, 2, 3))
    assert freeze(model, up_to="res2") == ["stem", "res2"]
    assert isinstance(model.model.res2.slow[0].a.bn, FrozenBatchNorm3d)
    groups = param_groups(model, lr=0.1, stage_decay=0.5)
    assert {g["name"] for g in groups} == {"res3", "res3.no_decay", "res4", "res4.no_decay"}
    grouped = sorted(id(p) for g in groups for p in g["params"])
    assert grouped == sorted(id(p) for p in model.parameters() if p.requires_grad)


def test_feature_info_has_timm_accessors() -> None:
    """SlowFast R50 stage outputs (Feichtenhofer et al. 2019, Table 1): slow 256/512/1024/2048 channels, fast 1/8 of
    that (beta = 1/8), at spatial strides 4, 8, 16, 32 of the 224 input (56^2 .. 7^2)."""
    model = slowfast_zoo.create("slowfast_r50_8x8", device="meta", features_only=True)
    info = model.feature_info
    assert info.channels() == [256, 512, 1024, 2048] and info.channels(pathway=1) == [32, 64, 128, 256]
    assert info.reduction() == [4, 8, 16, 32] and info.reduction(3, pathway=1) == 32
    assert info.channels(0) == 256 and info.module_name() == ["res2", "res3", "res4", "res5"]
    assert info.temporal_reduction() == [1, 1, 1, 1]


def test_single_element_list_is_not_a_slowfast_clip() -> None:
    model = tiny("slowfast_r50_8x8")
    with pytest.raises(ValueError, match=r"2 pathway\(s\).*a list of 2 tensors.*got a list of 1"):
        model([torch.zeros(1, 3, 8, 64, 64)])


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float64, torch.float16, torch.bfloat16])
def test_input_dtype_is_named_in_the_error(dtype: torch.dtype) -> None:
    model = tiny("slow_r50_8x8")
    with pytest.raises(TypeError, match=r"expected .*dtype torch\.float32.*got torch\." + str(dtype).split(".")[1]):
        model(torch.zeros(1, 3, 4, 64, 64, dtype=dtype))


def test_autocast_takes_low_precision_input() -> None:
    model = tiny("slow_r50_8x8").eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.zeros(1, 3, 4, 64, 64, dtype=torch.bfloat16)).shape == (1, 5)


def test_drop_rate_and_drop_path_rate_as_timm() -> None:
    model = tiny("slowfast_r50_8x8", drop_rate=0.3, drop_path_rate=0.15)
    assert model.head.drop.p == 0.3 and model.cfg.dropout == 0.3
    for p in ("slow", "fast"):  # 3 + 4 + 6 + 3 = 16 blocks per pathway: rate 0.15 * k / 15 for block k (timm)
        blocks = [b for stage in (model.res2, model.res3, model.res4, model.res5) for b in stage[p]]
        assert len(blocks) == 16 and isinstance(blocks[0].drop_path, nn.Identity)
        rates = [b.drop_path.p for b in blocks[1:]]
        assert rates == pytest.approx([0.01 * k for k in range(1, 16)])
    assert all(b.drop_path.mode == "row" for b in model.res5.slow)  # per sample, as timm's DropPath
    with torch.no_grad():
        for prm in model.parameters():  # no zero-init gammas, so that dropping a branch changes the output
            prm.add_(torch.randn_like(prm) * 0.05)
    x = clip(model)
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, model(x))  # a different set of branches dropped
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    plain = tiny("slowfast_r50_8x8")
    assert not any(isinstance(m, torchvision.ops.StochasticDepth) for m in plain.modules())


def test_global_pool_avg_max_and_none() -> None:
    model = tiny("slowfast_r50_8x8", global_pool="max").eval()
    x = clip(model)
    with torch.no_grad():
        feats = model.forward_features(x)
        expected = torch.cat([f.amax(dim=(2, 3, 4)) for f in feats], dim=1)
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True), expected, rtol=0, atol=0)
        model.reset_classifier(0, global_pool="")
        maps = model(x)
        assert len(maps) == 2 and all(torch.equal(a, b) for a, b in zip(maps, feats))
        model.reset_classifier(0, global_pool="avg")
        expected = torch.cat([f.mean(dim=(2, 3, 4)) for f in feats], dim=1)
        torch.testing.assert_close(model(x), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="needs num_classes=0"):
        tiny("slow_r50_8x8", global_pool="")
    assert len(tiny("slow_r50_8x8", num_classes=0, global_pool="")(clip(tiny("slow_r50_8x8")))) == 1


def test_no_weight_decay_names_bn_and_biases() -> None:
    model = tiny("i3d_nln_r50_8x8")
    names = model.no_weight_decay()
    assert "head.proj.bias" in names and "head.proj.weight" not in names and "stem.slow.bn.weight" in names
    assert "stem.slow.conv.weight" not in names
    bn_params = {
        f"{m}.{p}" for m, mod in model.named_modules() if isinstance(mod, nn.BatchNorm3d) for p in ["weight", "bias"]
    }
    assert bn_params <= names  # the reference's BN.WEIGHT_DECAY = 0 (SF:slowfast/config/defaults.py)
    groups = param_groups(model, lr=0.1)
    assert {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]} == {
        id(p) for n, p in model.named_parameters() if n in names
    }


def test_unknown_create_keyword_lists_the_valid_ones() -> None:
    with pytest.raises(TypeError, match=r"unknown keyword argument\(s\) \['drop_pth_rate'\].*drop_path_rate"):
        slowfast_zoo.create("slow_r50_8x8", device="meta", drop_pth_rate=0.1)
    with pytest.raises(TypeError, match=r"valid fields: .*num_classes"):
        slowfast_zoo.get_pretrained_cfg("slow_r50_8x8").model.replace(num_class=3)


def test_classifier_name_is_part_of_the_architecture() -> None:
    model = tiny("slowfast_r50_8x8")
    assert model.cfg.classifier == "head.proj"  # timm's pretrained_cfg["classifier"]
    assert model.get_submodule(model.cfg.classifier) is model.get_classifier()
    assert {k for k in model.state_dict() if k.startswith(model.cfg.classifier + ".")} == {
        "head.proj.weight",
        "head.proj.bias",
    }
