"""What a release ships: the wheel and sdist built from a copy of the source tree, their file lists checked, and the
changelog section the release workflow publishes."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import slowfast_zoo

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "slowfast_zoo"
VERSION = slowfast_zoo.__version__
PACKAGE_DATA = {
    "slowfast_zoo/py.typed",
    "slowfast_zoo/weights_manifest.json",
    "slowfast_zoo/assets/sample.mp4",
    "slowfast_zoo/assets/README.md",
    *(f"slowfast_zoo/labels/{p.name}" for p in (PACKAGE / "labels").glob("*.json")),
}


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """The wheel and sdist that setuptools builds from a copy of the tree (the checkout stays untouched)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "CHANGELOG.md", "weights_manifest.json"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(PACKAGE, src / "slowfast_zoo", symlinks=True, ignore=ignore)
    (src / "tests").mkdir()
    (src / "tests" / "test_stray.py").write_text("")  # setuptools puts tests/test*.py in an sdist by default
    (src / "slowfast_zoo" / "__pycache__").mkdir()
    (src / "slowfast_zoo" / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"stale")
    out = src / "dist"
    script = "from setuptools import build_meta as b; b.build_wheel('dist'); b.build_sdist('dist')"
    done = subprocess.run([sys.executable, "-c", script], cwd=src, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    [wheel] = out.glob("*.whl")
    [sdist] = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def _modules() -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py")}


def test_wheel_ships_the_package_and_its_data_only(dists) -> None:
    wheel = dists["wheel"]
    assert wheel.name == f"slowfast_zoo-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        manifest = z.read("slowfast_zoo/weights_manifest.json")
        metadata = z.read(f"slowfast_zoo-{VERSION}.dist-info/METADATA").decode()
        entry_points = z.read(f"slowfast_zoo-{VERSION}.dist-info/entry_points.txt").decode()
    dist_info = {n for n in names if n.startswith(f"slowfast_zoo-{VERSION}.dist-info/")}
    assert names - dist_info == _modules() | PACKAGE_DATA  # nothing else: no tests, caches, .pyc or build files
    assert f"slowfast_zoo-{VERSION}.dist-info/licenses/LICENSE" in dist_info
    assert manifest == (ROOT / "weights_manifest.json").read_bytes()  # the file itself, not the symlink
    assert f"\nVersion: {VERSION}\n" in metadata and "\nLicense-Expression: Apache-2.0\n" in metadata
    assert "slowfast-zoo = slowfast_zoo.cli:main" in entry_points


def test_sdist_ships_what_builds_the_wheel_and_no_tests(dists) -> None:
    with tarfile.open(dists["sdist"]) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    top = f"slowfast_zoo-{VERSION}"
    assert dists["sdist"].name == f"{top}.tar.gz"
    assert {"pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md"} <= names
    assert _modules() | PACKAGE_DATA <= names
    assert not {n for n in names if n.startswith("tests") or "__pycache__" in n or n.endswith(".pyc")}


def _release_notes():
    spec = importlib.util.spec_from_file_location("release_notes", ROOT / "tools" / "release_notes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_release_notes_are_the_versions_changelog_section() -> None:
    notes = _release_notes()
    text = (
        "# Changelog\n\n## [Unreleased]\n\n- next\n\n"
        "## [1.2.0] - 2027-01-31\n\n### Fixed\n\n- a\n\n"
        "## [1.1.0] - 2026-12-01\n\n- b\n"
    )
    assert notes.section(text, "1.2.0") == "### Fixed\n\n- a\n"
    assert notes.section(text, "1.1.0") == "- b\n"
    for missing in ("1.3.0", "1.2", "Unreleased"):
        with pytest.raises(LookupError, match="no"):
            notes.section(text, missing)


def test_changelog_keeps_the_format_the_release_reads() -> None:
    """Keep a Changelog headings; the package version is released there or being prepared under Unreleased."""
    import re

    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    releases = re.findall(r"^## \[(.+?)\](.*)$", text, re.M)
    assert releases and releases[0][0] == "Unreleased"
    for version, rest in releases[1:]:
        assert re.fullmatch(r"\d+\.\d+\.\d+", version) and re.fullmatch(r" - \d{4}-\d{2}-\d{2}", rest), version
    kinds = set(re.findall(r"^### (.+)$", text, re.M))
    assert kinds <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}, kinds
    released = [v for v, _ in releases[1:]]
    assert VERSION in released or (not released or _newer(VERSION, released[0])), (VERSION, released)


def _newer(a: str, b: str) -> bool:
    return tuple(map(int, a.split("."))) > tuple(map(int, b.split(".")))
