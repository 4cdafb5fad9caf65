"""Shared test set-up: Hugging Face settings before anything imports huggingface_hub."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# huggingface_hub reads these once, at import: never reach the real Hub, never write outside a temporary dir
_HF_HOME = tempfile.mkdtemp(prefix="sfz-hf-home-")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_CACHE"] = str(Path(_HF_HOME) / "hub")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_XET"] = "1"
# a closed port: any request a test forgot to point elsewhere fails fast
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
os.environ["SLOWFAST_ZOO_CACHE"] = str(Path(_HF_HOME) / "slowfast_zoo")
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def one_thread():
    """One intra-op thread. Tiny tensors: thread start-up and spinning cost more than they save (and CI runners are
    shared). Tests that compare two implementations bit for bit use it too: ATen and oneDNN split a reduction
    (a convolution, a mean) into per-thread partial sums that depend on the thread count, so two different code
    paths can agree bit for bit on one machine and differ in the last bit on one with other cores. With one
    thread the summation order is the algorithm's own, the same on every machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny Slow R50 (width 8) saved as a local-dir: folder, to run the commands offline and fast."""
    import slowfast_zoo

    torch.manual_seed(0)
    model = slowfast_zoo.create("slow_r50_4x16", width=8, num_classes=5)
    return slowfast_zoo.publish.save_pretrained(
        model, tmp_path_factory.mktemp("tiny") / "model", label_names=list("abcde")
    )
