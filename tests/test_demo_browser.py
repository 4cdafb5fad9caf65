"""The demo page in a real browser: headless Chromium (the system's) driven by Playwright uploads the sample clip and
reads the labels the page shows; they are ``predict``'s on the same clip."""

from __future__ import annotations

import os
import re
import shutil
import socket

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytest.importorskip("gradio", reason='the demo needs the [demo] extra (pip install "slowfast-zoo[demo]")')
pytest.importorskip("playwright", reason="the browser test needs Playwright (pip install playwright)")
if CHROMIUM is None:
    pytest.skip("no system Chromium on PATH (Debian: apt-get install chromium)", allow_module_level=True)

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from playwright.sync_api import sync_playwright  # noqa: E402

import slowfast_zoo  # noqa: E402
from slowfast_zoo.tasks.demo import build_demo  # noqa: E402
from slowfast_zoo.tasks.predict import predict, sample_video  # noqa: E402


def free_port() -> int:
    """A port the OS assigns on 127.0.0.1 (Gradio takes a port number, not a bound socket)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def page_url(tmp_path):
    import torch

    torch.manual_seed(0)
    model = slowfast_zoo.create("slow_r50_4x16", width=8, num_classes=5)
    with torch.no_grad():  # distinct scores, so that the order and the percentages shown say something
        model.head.proj.weight.normal_(0, 2.0)
        model.head.proj.bias.copy_(torch.tensor([0.0, 1.0, 2.0, -1.0, 0.5]))
    folder = slowfast_zoo.publish.save_pretrained(
        model, tmp_path / "tiny", label_names=["archery", "bowling", "cooking", "dancing", "eating"]
    )
    name = f"local-dir:{folder}"
    app = build_demo([name])
    app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield app.local_url, name
    finally:
        app.close()


def test_upload_shows_the_labels_predict_gives(page_url, tmp_path):
    url, name = page_url
    expected = predict(sample_video(), name, views="fast", top_k=5)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.locator("#video-in input[type=file]").set_input_files(str(sample_video()))
            page.locator("#video-in video").first.wait_for(timeout=60_000)
            page.locator("#run").click()
            labels = page.locator("#labels")
            labels.get_by_text(expected.top[0].label).first.wait_for(timeout=240_000)
            page.locator("#video-out video").first.wait_for(timeout=60_000)
            text = labels.inner_text()
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            if os.environ.get("SLOWFAST_ZOO_SCREENSHOT"):  # keep a copy to look at
                shutil.copy(tmp_path / "demo.png", os.environ["SLOWFAST_ZOO_SCREENSHOT"])
        finally:
            browser.close()
    shown = re.findall(r"([a-z]+)\s*\n?\s*(\d+)%", text)
    assert [label for label, _ in shown] == expected.labels
    assert [int(pct) for _, pct in shown] == [round(p.score * 100) for p in expected.top]
    assert len({int(pct) for _, pct in shown}) > 2
