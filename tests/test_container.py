"""The container image: the Containerfile builds, and prelabel runs in the image as a non-root
user, demo included.

Built and run with buildah, without a daemon or a registry: the base image is a Debian made here
by mmdebstrap (bookworm, python3 and its venv module: what the Containerfile asks of a base),
committed to buildah's local storage, passed as ``BASE``. The build installs the CPU torch.
Inside the image, ``prelabel --help``, ``prelabel models tiny`` and ``prelabel demo`` must exit 0,
the demo's report lands in a folder mounted from here, and its files belong to the image's user,
not root. The image's own settings (entrypoint, user, health check) are read back from it.

Needs root, buildah and mmdebstrap (``.ci/run`` installs them with apt where it can); skipped
otherwise. Two variables carry a machine's particulars (``.ci/run`` sets them), so that nothing
machine-specific enters the Containerfile:

- ``PRELABEL_TEST_FIND_LINKS``: a folder with the torch wheel, mounted into the build; without
  it torch comes from the PyTorch CPU index.
- ``PRELABEL_TEST_BUILD_VOLUMES``: more ``--volume`` specs for the build, separated by spaces
  (a CA bundle and a pip configuration the package index needs).

Several minutes: the base takes one or two, the build (pip downloads prelabel's dependencies)
most of the rest; everything it creates in buildah's storage is removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from prelabel.demo import DEMO_IMAGES, DEMO_LABELED

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def missing_tools() -> str | None:
    """Why the image cannot be built here, or None."""
    if sys.platform != "linux":
        return "buildah builds images on Linux only"
    absent = [tool for tool in ("buildah", "mmdebstrap") if shutil.which(tool) is None]
    if absent:
        return f"{' and '.join(absent)} not installed (Debian: apt-get install buildah mmdebstrap)"
    if os.geteuid() != 0:
        return "buildah --isolation chroot and mmdebstrap need root here"
    return None


@pytest.fixture
def buildah_names() -> Iterator[dict[str, str]]:
    """Names for the base, the image and the container, removed afterwards whatever happens."""
    tag = uuid.uuid4().hex[:8]
    names = {
        "base": f"localhost/prelabel-test-base:{tag}",
        "image": f"localhost/prelabel-test:{tag}",
        "container": f"prelabel-test-{tag}",
    }
    yield names
    for command in (["rm", names["container"]], ["rmi", names["image"], names["base"]]):
        subprocess.run(["buildah", *command], capture_output=True, check=False)


@pytest.mark.skipif(missing_tools() is not None, reason=str(missing_tools()))
def test_the_image_builds_and_runs_prelabel_as_a_non_root_user(
    tmp_path: Path, buildah_names: dict[str, str]
) -> None:
    timings: dict[str, float] = {}
    with timed(timings, "base"):
        make_base(buildah_names["base"])
    with timed(timings, "build"):
        build_image(buildah_names["base"], buildah_names["image"])
    config = json.loads(buildah("inspect", "--type", "image", buildah_names["image"]).stdout)
    image = config["Docker"]["config"]
    assert image["Entrypoint"] == ["prelabel"]
    assert "/healthz" in " ".join(image["Healthcheck"]["Test"])
    out = tmp_path / "out"
    out.mkdir()
    container = buildah_names["container"]
    buildah("from", "--pull=false", "--name", container, buildah_names["image"])

    with timed(timings, "run"):
        uid = inside(container, out, "id", "-u").stdout.strip()
        os.chown(out, int(uid), int(uid))  # the mounted folder, writable by the image's user
        usage = inside(container, out, "prelabel", "--help").stdout
        inside(container, out, "prelabel", "models", "tiny", "/out/tiny-models")
        demo = inside(container, out, "prelabel", "demo", "--out", "/out/demo", "-q").stdout

    assert uid != "0" and image["User"].split(":")[0] == uid
    assert "Usage: prelabel" in usage
    assert (out / "tiny-models" / "grounding_dino" / "config.json").is_file()
    report = json.loads((out / "demo" / "report.json").read_text())
    results = [s["result"] for s in report["samples"]]  # every sample, a person's skipped
    assert results == ["labeled"] * DEMO_IMAGES + ["skipped"] * DEMO_LABELED, demo
    assert (out / "demo" / "report.json").stat().st_uid == int(uid)
    assert sorted((out / "demo" / "overlays").glob("*.png"))
    print("container test, seconds:", {k: round(v) for k, v in timings.items()})


def make_base(name: str) -> None:
    """A Debian bookworm with python3 and venv, from mmdebstrap straight into a buildah image."""
    container = buildah("from", "scratch").stdout.strip()
    try:
        root = buildah("mount", container).stdout.strip()
        packages = "--include=python3,python3-venv,ca-certificates"
        run(["mmdebstrap", "--quiet", "--variant=minbase", packages, "bookworm", root])
        buildah("umount", container)
        buildah("commit", "--quiet", container, name)
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)


def build_image(base: str, name: str) -> None:
    """``buildah bud`` of the Containerfile, with the CPU torch (see the module docstring)."""
    version = torch.__version__
    volumes = os.environ.get("PRELABEL_TEST_BUILD_VOLUMES", "").split()
    wheels = os.environ.get("PRELABEL_TEST_FIND_LINKS")
    if wheels:
        volumes.append(f"{wheels}:/wheels:ro")
        torch_args = f"torch=={version} --find-links /wheels"
    else:
        public = version.split("+")[0]
        torch_args = f"torch=={public} --index-url https://download.pytorch.org/whl/cpu"
    command = ["bud", "--isolation", "chroot", "--network", "host", "--pull=false"]
    command += ["--format", "docker"]  # the OCI format has no HEALTHCHECK
    command += [f"--volume={volume}" for volume in volumes]
    command += ["--build-arg", f"BASE={base}", "--build-arg", f"TORCH={torch_args}"]
    buildah(*command, "--file", str(REPO / "Containerfile"), "--tag", name, str(REPO))


def inside(container: str, out: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in the container as its image's user, ``out`` mounted at /out."""
    mount = f"--volume={out}:/out"
    return buildah("run", "--isolation", "chroot", mount, container, "--", *command)


def buildah(*args: str) -> subprocess.CompletedProcess[str]:
    return run(["buildah", *args])


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200, check=False)
    tail = (result.stdout[-3000:] + "\n" + result.stderr[-3000:]).strip()
    assert result.returncode == 0, f"{' '.join(command[:3])} failed ({result.returncode}):\n{tail}"
    return result


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Records the seconds the ``with`` block took as ``timings[name]``."""
    start = time.monotonic()
    yield
    timings[name] = time.monotonic() - start
