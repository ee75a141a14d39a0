"""prelabel installed from its wheel, not run from a checkout: the demo works on package data.

Everyone who ``pip install``s prelabel, and the container image, gets the wheel: code that
finds a file through the source tree works in the checkout and every other test, and fails
only there. So this test builds the sdist and, from it, the wheel (as ``uv build`` and pip do),
installs the wheel into a fresh virtual environment that cannot see the checkout, and runs
``prelabel demo`` in it as a new user would.

Torch comes from the index, or from the wheels in ``$PRELABEL_TEST_FIND_LINKS`` when it is set
(``.ci/run`` points it at the machine's local wheels). uv's cache makes the install a matter of
links once the checkout's own environment is installed; about a minute in all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prelabel.config import SHIPPED_CONFIGS
from prelabel.demo import DEMO_IMAGES, DEMO_LABELED

REPO = Path(__file__).resolve().parents[1]
NOT_SOURCE = (
    ".git",
    ".venv",
    "*.egg-info",
    "build",
    "dist",
    "out",
    "*-demo",
    "__pycache__",
    ".*_cache",
)

pytestmark = pytest.mark.slow


def uv() -> str:
    """The uv next to this interpreter (the README's install puts it there), else on PATH."""
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.is_file() else shutil.which("uv")
    if found is None:
        pytest.skip("uv is not installed: it builds the wheel and the fresh environment")
    return found


def find_links_args() -> list[str]:
    """``--find-links DIR`` for the wheels that ``$PRELABEL_TEST_FIND_LINKS`` names, if any."""
    folder = os.environ.get("PRELABEL_TEST_FIND_LINKS")
    return ["--find-links", folder] if folder else []


def test_the_demo_runs_from_an_installed_wheel(tmp_path: Path) -> None:
    source, dist = tmp_path / "source", tmp_path / "dist"
    venv, out = tmp_path / "venv", tmp_path / "demo"
    # A copy without the checkout's egg-info, whose file list setuptools would reuse: files
    # that only an earlier build listed must not reach the wheel.
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    run([uv(), "build", "--quiet", "--out-dir", str(dist), str(source)], tmp_path)
    [wheel] = dist.glob("prelabel-*.whl")
    run([uv(), "venv", "--quiet", "--python", sys.executable, str(venv)], tmp_path)
    python = venv / "bin" / "python"
    torch_pin = f"torch=={torch.__version__.split('+')[0]}"  # the build this checkout has
    install = [uv(), "pip", "install", "--quiet", "--python", str(python), *find_links_args()]
    run([*install, torch_pin, str(wheel)], tmp_path)

    where = run([str(python), "-c", "import prelabel; print(prelabel.__file__)"], tmp_path)
    package = Path(where.stdout.strip()).parent
    assert package.is_relative_to(venv), f"prelabel imported from {package}, not the wheel"
    for name in SHIPPED_CONFIGS:  # the files people read in configs/, byte for byte
        assert (package / "configs" / name).read_bytes() == (REPO / "configs" / name).read_bytes()

    demo = run([str(venv / "bin" / "prelabel"), "demo", "--out", str(out), "-q"], tmp_path)

    report = json.loads((out / "report.json").read_text())
    results = [s["result"] for s in report["samples"]]  # every sample, a person's skipped
    assert results == ["labeled"] * DEMO_IMAGES + ["skipped"] * DEMO_LABELED
    assert sorted((out / "overlays").glob("*.png")), demo.stdout
    assert "pre-labeled" in demo.stdout


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in ``cwd`` (outside the checkout, so nothing imports it by accident)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{command[:3]} failed:\n{result.stdout}\n{result.stderr}"
    return result
