"""The CI, release and docs workflows say what the README promises: actions pinned by commit SHA, trusted
publishing without a password, and the declared floors of every dependency installed exactly in CI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: huggingface_hub brings tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _load(name: str) -> dict:
    return yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text(encoding="utf-8"))


def _steps(flow: dict) -> list[dict]:
    return [step for job in flow["jobs"].values() for step in job.get("steps", [])]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_by_commit_sha(path) -> None:
    text = path.read_text(encoding="utf-8")
    assert yaml.safe_load(text)["jobs"]  # the file parses
    uses = re.findall(r"uses:\s*(\S+)(.*)$", text, re.M)
    assert uses
    for action, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", action), action
        assert re.match(r"\s+# v\d+(\.\d+)*$", comment), f"{action}: name the release in a comment"


def test_release_publishes_by_trusted_publishing_only() -> None:
    flow = _load("release.yml")
    assert flow["permissions"] == {"contents": "read"}
    assert list(flow[True]["push"]["tags"]) == ["v*.*.*"]  # YAML 1.1 reads the key "on" as True
    jobs = flow["jobs"]
    pypi = jobs["pypi"]
    assert pypi["environment"]["name"] == "pypi" and pypi["permissions"] == {"id-token": "write"}
    [publish] = [s for s in pypi["steps"] if s.get("uses", "").startswith("pypa/gh-action-pypi-publish@")]
    assert "password" not in publish.get("with", {}) and "secrets." not in str(flow)
    assert [j for j, job in jobs.items() if "id-token" in job.get("permissions", {})] == ["pypi"]
    build = " ".join(s.get("run", "") for s in jobs["build"]["steps"])
    for command in ("python -m build", "twine check", "tools/smoke_installed.sh", "tools/release_notes.py"):
        assert command in build
    assert pypi["needs"] == "build" and jobs["github-release"]["needs"] == "pypi"
    assert "--notes-file release-notes.md" in jobs["github-release"]["steps"][-1]["run"]


def test_ci_runs_the_floors_matrix_and_the_full_suite() -> None:
    flow = _load("ci.yml")
    assert flow["concurrency"]["cancel-in-progress"] is True and "group" in flow["concurrency"]
    floors = flow["jobs"]["floors"]
    assert floors["strategy"]["matrix"] == {"python": ["3.10", "3.13"], "deps": ["minimum", "newest"]}
    runs = " ".join(s.get("run", "") for s in floors["steps"])
    assert "-c constraints-min.txt" in runs and 'pytest -q -m "not slow"' in runs
    full = " ".join(s.get("run", "") for s in flow["jobs"]["full"]["steps"])
    assert "-c constraints.txt" in full and "pytest -q" in full and "not slow" not in full
    for job in flow["jobs"].values():
        setup = [s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@")]
        assert setup and setup[0]["with"]["cache"] == "pip"


def test_docs_build_strict_and_deploy_from_main_only() -> None:
    flow = _load("docs.yml")
    build = " ".join(s.get("run", "") for s in flow["jobs"]["build"]["steps"])
    assert "mkdocs build --strict" in build and '".[docs]"' in build
    deploy = flow["jobs"]["deploy"]
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert "refs/heads/main" in deploy["if"] and deploy["environment"]["name"] == "github-pages"


def _declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["video"]]
    return {r.name.lower().replace("_", "-"): r for r in reqs}


def _pins(python: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints-min.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"python_version": python}):
                [spec] = req.specifier
                assert spec.operator == "==", line
                pins[req.name.lower().replace("_", "-")] = spec.version
    return pins


@pytest.mark.parametrize("python", ["3.10", "3.11", "3.12", "3.13"])
def test_constraints_min_pins_every_declared_floor(python) -> None:
    declared, pins = _declared(), _pins(python)
    assert set(pins) == set(declared)  # every runtime dependency, nothing else
    for name, req in declared.items():
        floors = [s.version for s in req.specifier if s.operator == ">="]
        assert floors, f"{name}: no declared floor"
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {req.specifier}"
        if python == "3.10":  # the oldest supported Python gets the floors themselves
            assert Version(pins[name]) == Version(floors[0]), (name, pins[name], floors[0])
