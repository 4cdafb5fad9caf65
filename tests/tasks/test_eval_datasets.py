"""Dataset readers against small copies of each benchmark's on-disk layout, written here."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("av")

from video_factory import index_frame, read_index, write_video

from slowfast_zoo.registry.pretrained import label_names
from slowfast_zoo.tasks.eval_datasets import (
    FrameFolderVideo,
    read_ava,
    read_charades,
    read_kinetics,
    read_ssv2,
)

K400 = label_names("kinetics400")


def test_kinetics400_label_order():
    # labels/kinetics400.json is PySlowFast's kinetics_classnames.json (alphabetical),
    # the file PTV:tutorials/torchhub_inference_tutorial.ipynb downloads
    assert K400[:3] == ("abseiling", "air drumming", "answering questions")


def test_kinetics_official_csv_resolves_the_usual_file_names(tmp_path):
    root = tmp_path / "val"
    (root / "abseiling").mkdir(parents=True)
    (root / "air_drumming").mkdir()
    write_video(root / "abseiling" / "abc123def45_000010_000020.mp4", num_frames=8)  # ActivityNet downloader name
    write_video(root / "air_drumming" / "zyx987wvu65.mkv", num_frames=8, codec="mpeg4")  # youtube id only
    csv = tmp_path / "validate.csv"
    csv.write_text(
        "label,youtube_id,time_start,time_end,split,is_cc\n"
        "abseiling,abc123def45,10,20,val,0\n"
        '"air drumming",zyx987wvu65,0,10,val,0\n'
        "abseiling,gone0000000,5,15,val,0\n"
        "not a class,abc123def45,10,20,val,0\n"
    )
    s = read_kinetics(csv, root, K400)
    assert [(it.id, it.target) for it in s.items] == [
        ("abc123def45_000010_000020", (0,)),
        ("zyx987wvu65_000000_000010", (1,)),
        ("gone0000000_000005_000015", (0,)),
    ]
    assert s.items[0].path == str(root / "abseiling" / "abc123def45_000010_000020.mp4")
    assert s.items[1].path == str(root / "air_drumming" / "zyx987wvu65.mkv")
    assert s.missing == ["gone0000000_000005_000015"]
    assert len(s.skipped) == 1 and "not a class" in s.skipped[0][1] and s.skipped[0][0].endswith("validate.csv:5")


@pytest.mark.parametrize("sep", [" ", ",", "\t"])
def test_kinetics_path_label_list(tmp_path, sep):
    root = tmp_path / "videos"
    root.mkdir()
    write_video(root / "a.mp4", num_frames=8)
    write_video(root / "b c.mp4", num_frames=8)  # a space in the name: the label is the last field
    lst = tmp_path / "val.csv"
    lst.write_text(f"a.mp4{sep}3\nb c.mp4{sep}air drumming\nmissing.mp4{sep}0\nx.mp4{sep}999\n")
    if sep != ",":  # a space-separated list cannot carry a class name with spaces: use the index there
        lst.write_text(f"a.mp4{sep}3\nb c.mp4{sep}1\nmissing.mp4{sep}0\nx.mp4{sep}999\n")
    s = read_kinetics(lst, root, K400)
    assert [(it.id, it.target) for it in s.items] == [("a.mp4", (3,)), ("b c.mp4", (1,)), ("missing.mp4", (0,))]
    assert s.items[1].path == str(root / "b c.mp4") and s.missing == ["missing.mp4"]
    assert "999" in s.skipped[0][1]


def test_ssv2_official_json_and_label_map(tmp_path):
    root = tmp_path / "20bn"
    root.mkdir()
    write_video(root / "74225.webm", num_frames=8, codec="libvpx-vp9", fps=12)
    frames = root / "1001"
    frames.mkdir()
    (frames / "000001.jpg").write_bytes(b"jpeg")
    labels = tmp_path / "something-something-v2-labels.json"
    # ids of the official labels file (something-something-v2-labels.json: 0 Approaching..., 2 Bending...)
    labels.write_text(
        json.dumps({"Approaching something with your camera": "0", "Bending something so that it deforms": "2"})
    )
    ann = tmp_path / "something-something-v2-validation.json"
    bend, approach = "Bending [something] so that it deforms", "Approaching [something] with your camera"
    entries = [
        {"id": "74225", "label": "bending a pen so that it deforms", "template": bend, "placeholders": ["a pen"]},
        {"id": "1001", "label": "approaching a cup with your camera", "template": approach, "placeholders": ["a cup"]},
        {"id": "5", "template": approach},
        {"id": "6", "template": "Not a template"},
    ]
    ann.write_text(json.dumps(entries))
    s = read_ssv2(ann, root, label_names("ssv2"), labels)
    got = [(it.id, it.target, it.frames) for it in s.items]
    assert got == [("74225", (2,), False), ("1001", (0,), True), ("5", (0,), False)]
    assert s.items[0].path == str(root / "74225.webm") and s.items[1].path == str(frames)
    assert s.missing == ["5"] and len(s.skipped) == 1
    # without the labels file the template is looked up in the model's class names (same order: §E)
    assert [it.target for it in read_ssv2(ann, root, label_names("ssv2")).items] == [(2,), (0,), (0,)]


def test_charades_csv_over_videos_and_frame_folders(tmp_path):
    root = tmp_path / "Charades"
    (root / "46GP8").mkdir(parents=True)
    write_video(root / "YSKX3.mp4", num_frames=8)
    for i in range(1, 4):  # Charades_v1_rgb: <id>/<id>-000001.jpg ...
        (root / "46GP8" / f"46GP8-{i:06d}.jpg").write_bytes(b"jpeg")
    ann = tmp_path / "Charades_v1_test.csv"
    ann.write_text(
        "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n"
        '46GP8,HR43,Kitchen,6,7,Yes,"A person cooks.",food,"A person cooks.","c092 11.90 21.20;c147 0.00 12.60;c092 '
        '25.00 30.00",24.83\n'
        "YSKX3,X,Hall,5,5,Yes,s,o,d,,10.0\n"
        "ZZZZZ,X,Hall,5,5,Yes,s,o,d,c999 1 2,10.0\n"
    )
    s = read_charades(ann, root)
    assert s.multilabel and s.num_classes == 157
    assert [(it.id, it.target, it.frames) for it in s.items] == [("46GP8", (92, 147), True), ("YSKX3", (), False)]
    assert s.items[0].fps == 24.0  # SF:slowfast/datasets/DATASET.md: Charades_v1_rgb frames are stored at 24 fps
    assert len(s.skipped) == 1 and "c999" in s.skipped[0][1]


def test_ava_proposals_threshold_and_grouping(tmp_path):
    root = tmp_path / "videos_15min"
    root.mkdir()
    write_video(root / "1j20qq1JyX4.mp4", num_frames=8)
    props = tmp_path / "ava_detection_val_boxes_and_labels.csv"
    props.write_text(
        "1j20qq1JyX4,0903,0.1,0.2,0.5,0.9,,0.95\n"
        "1j20qq1JyX4,0902,0.1,0.2,0.5,0.9,,0.8\n"  # exactly the threshold: kept (PySlowFast drops score < thresh)
        "1j20qq1JyX4,0902,0.1,0.2,0.5,0.9,,0.85\n"  # the same box again: one entry
        "1j20qq1JyX4,0902,0.6,0.2,0.9,0.9,,0.79\n"  # below: dropped
        "absentvideo,0902,0.1,0.1,0.2,0.2,,0.99\n"
        "broken,row\n"
    )
    s = read_ava(props, root, 0.8)
    assert s.boxes == {
        "1j20qq1JyX4": {902: [[0.1, 0.2, 0.5, 0.9]], 903: [[0.1, 0.2, 0.5, 0.9]]},
        "absentvideo": {902: [[0.1, 0.1, 0.2, 0.2]]},
    }
    assert s.paths == {"1j20qq1JyX4": str(root / "1j20qq1JyX4.mp4"), "absentvideo": None}
    assert len(s.skipped) == 1


def test_frame_folder_reads_only_the_frames_asked_for(tmp_path):

    from PIL import Image

    folder = tmp_path / "46GP8"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(index_frame(i)).save(folder / f"46GP8-{i + 1:06d}.png")
    (folder / "notes.txt").write_text("not a frame")
    video = FrameFolderVideo(folder, fps=24)
    assert (video.info.num_frames, video.info.fps, video.info.width, video.info.height) == (12, 24.0, 64, 48)
    frames = video.frames_at_positions(torch.tensor([0.0, 3.7, 11.0, 20.0]))
    assert frames.shape == (4, 48, 64, 3) and frames.dtype == torch.uint8
    assert [read_index(f.numpy()) for f in frames] == [0, 3, 11, 11]  # floor, clamped to the last frame
