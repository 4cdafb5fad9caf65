"""Optical flow for the flow Fast pathway: shapes, [slow, flow] packing, clear errors when RAFT's weights miss."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.optical_flow import raft_small

import slowfast_zoo
from slowfast_zoo.video.flow import FlowPathway, load_raft, raft_flow

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def raft() -> torch.nn.Module:
    torch.manual_seed(0)
    return raft_small(weights=None).eval()  # random weights: the plumbing, not the flow quality


def test_missing_weights_name_the_file_and_how_to_get_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torch hub cache
    with pytest.raises(FileNotFoundError, match=r"raft_small_C_T_V2-01064c6d\.pth.*download\.pytorch\.org"):
        load_raft("small")
    with pytest.raises(ValueError, match="'small' or 'large'"):
        load_raft("tiny")


def test_a_file_with_the_wrong_hash_is_refused(tmp_path) -> None:
    bad = tmp_path / "raft_small_C_T_V2-01064c6d.pth"
    torch.save(raft_small(weights=None).state_dict(), bad)  # loadable, but not torchvision's file
    with pytest.raises(ValueError, match="does not start with 01064c6d"):
        load_raft("small", bad)


def test_flow_shape_and_end_frame(raft) -> None:
    frames = torch.rand(2, 3, 3, 130, 140)  # neither side a multiple of 8
    flow = raft_flow(raft, frames, num_flow_updates=1)
    assert flow.shape == (2, 2, 3, 130, 140) and torch.isfinite(flow).all()
    torch.testing.assert_close(flow[:, :, 2], flow[:, :, 1])  # the last frame repeats the flow before it
    assert raft_flow(raft, frames[0], num_flow_updates=1).shape == (2, 3, 130, 140)
    with pytest.raises(ValueError, match=r"\(N, 3, T, H, W\) with T >= 2"):
        raft_flow(raft, torch.rand(1, 3, 1, 128, 128))
    with pytest.raises(ValueError, match="at least 128x128"):
        raft_flow(raft, torch.rand(1, 3, 2, 64, 128))


def test_flow_pathway_feeds_the_flow_variant(raft) -> None:
    model = slowfast_zoo.create("slowfast_r50_4x16_fast_flow", width=16, num_classes=3).eval()
    cfg = model.pretrained_cfg
    slow, fast = torch.randn(1, 3, 2, 128, 128), torch.randn(1, 3, 16, 128, 128)
    packed = FlowPathway(raft, cfg.mean, cfg.std, num_flow_updates=1)([slow, fast])
    assert packed[0] is slow and packed[1].shape == (1, 2, 16, 128, 128)
    with torch.no_grad():
        assert model(packed).shape == (1, 3)
