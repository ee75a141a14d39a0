"""The README as a newcomer uses it: the set-up command pasted anywhere, the walkthrough in order.

The set-up command is the one people paste, so it must not name a folder only our CI machines
have; ``.ci/run`` runs it verbatim and points uv at CI's wheels through uv's own environment.

The walkthrough blocks (marked ``<!-- walkthrough -->`` in the README) are run as one bash
script, in the order written, in a fresh folder: the demo, the emulator with a run and status,
then the local webhook flow with a sample added through the SDK. Only ``/tmp/`` paths are moved
into the test's folder; everything else is the README's text.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MARK = "<!-- walkthrough -->"
#: Ports the walkthrough's commands use, as written in the README.
PORTS = (8765, 8766, 8080)


def bash_blocks(text: str, *, marked: bool) -> list[str]:
    """The ```bash blocks of ``text`` (only those right after :data:`MARK` when ``marked``)."""
    pattern = re.compile(r"(<!-- walkthrough -->\n)?```bash\n(.*?)```", re.DOTALL)
    return [m.group(2) for m in pattern.finditer(text) if m.group(1) or not marked]


def setup_command() -> str:
    section = README.read_text(encoding="utf-8").split("## Set up (one command)", 1)[1]
    return bash_blocks(section, marked=False)[0].strip()


def test_the_setup_command_names_no_ci_folder_and_is_what_ci_runs() -> None:
    command = setup_command()
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")

    assert "/opt/" not in command and "--find-links" not in command
    assert "--compile-bytecode" in command  # see .ci/run: imports would compile every time
    assert command in ci.splitlines()  # CI runs the README's command itself
    # CI's wheel folder reaches uv only where it exists, through uv's environment variable.
    assert "if [ -d /opt/wheels ]; then export UV_FIND_LINKS=/opt/wheels; fi" in ci
    assert ci.index("UV_FIND_LINKS") < ci.index(command)


def test_the_readme_explains_cpu_and_cuda_torch() -> None:
    text = README.read_text(encoding="utf-8").split("## Run the main job on a demo")[0]

    assert "--torch-backend cpu" in text and "--torch-backend auto" in text


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_the_walkthrough_runs_in_the_order_written(tmp_path: Path) -> None:
    if not (REPO / ".venv" / "bin" / "prelabel").exists():
        pytest.skip("the README's commands need the set-up's .venv")
    taken = [port for port in PORTS if _port_taken(port)]
    if taken:
        pytest.skip(f"ports the README uses are taken: {taken}")
    blocks = bash_blocks(README.read_text(encoding="utf-8"), marked=True)
    assert len(blocks) >= 4, "the demo, run, serve and add-a-sample blocks are marked"
    script = "\n".join(blocks).replace("/tmp/", f"{tmp_path}/tmp-")
    for name in (".venv", "configs"):
        (tmp_path / name).symlink_to(REPO / name)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    env.pop("SEGMENTS_API_KEY", None)

    done = run_walkthrough(
        "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null' EXIT\n" + script, tmp_path, env
    )

    shown = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, shown
    assert (tmp_path / "prelabel-demo" / "report.json").is_file()
    assert (tmp_path / "prelabel-output" / "report.json").is_file()  # run's default --out
    assert "jane/demo (ground-truth)" in done.stdout  # status after the run
    added = re.search(r"new-photo.png: PRELABELED after ([\d.]+) s", done.stdout)
    assert added, shown
    print(f"sample added through the SDK pre-labeled {added.group(1)} s later")
    assert re.search(r'prelabel_samples_total\{result="labeled"\} [1-9]', done.stdout), shown
    assert "Traceback" not in done.stderr, shown


def run_walkthrough(
    script: str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in bash in a session of its own, its output in files, and kill whatever
    it left running when it ends.

    Output goes to files, not pipes: a server the script started in the background and that
    outlives it (the trap's SIGTERM once left the README's emulator running) would hold a pipe
    open and keep the test waiting. Its process group is killed at the end either way.
    """
    out, err = cwd / "walkthrough.out", cwd / "walkthrough.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            ["bash", "-c", script],
            cwd=cwd,
            env=env,
            stdout=stdout,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
        try:
            returncode = process.wait(timeout=900)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(
        process.args, returncode, out.read_text(errors="replace"), err.read_text(errors="replace")
    )
