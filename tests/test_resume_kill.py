"""``kill -9`` of a real ``python -m prelabel run`` at chosen points, then reruns: once-only writes.

The emulator runs in the test process; the CLI runs as a subprocess against it with the tiny
models. Each kill point is made exact with a hanging fault rule: the process is provably sitting
in that request (the emulator logs a hung request before it starts waiting) when it is killed.
Label writes and asset uploads are counted by the emulator, not by the process under test.

Chain over five samples s0..s4, each run resuming the previous one's state:

1. killed while listing samples;
2. killed while predicting s0 (asset creation hangs, so it cannot get further);
3. killed between s0's bitmap upload and its label write (the label PUT hangs);
4. killed after s0 (asset reused), s1 and s2 were written, downloading s3's image;
5. runs to the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from segments import SegmentsClient

from prelabel.emulator import Emulator, FaultRule
from prelabel.state import UPLOADED, StateStore
from tests.connector_helpers import (
    assert_valid_prelabel,
    outcomes_by_uuid,
    read_report,
    requests_matching,
    url_path,
    write_config,
)
from tests.fixtures.emulator import DEMO_CATEGORIES, seed_dataset_via_sdk
from tests.fixtures.processes import RunCommand

KEY = "sk-kill-9-Zt8VbQ3mW1-SECRET"
GT = "ground-truth"
HANG = 120.0  # longer than any run; the emulator releases hung requests when it stops


class Runner:
    """Starts ``prelabel run`` subprocesses that share one state dir, one log file each."""

    def __init__(self, tmp_path: Path, emulator: Emulator, dataset: str, models: Path) -> None:
        self.tmp_path = tmp_path
        self.emulator = emulator
        self.command = RunCommand(
            api_url=emulator.url,
            dataset=dataset,
            models=models,
            state_dir=tmp_path / "state",
            config=write_config(tmp_path / "config.yaml"),
            key=KEY,
            verbose=True,
        )
        self.runs = 0

    def start(self) -> subprocess.Popen[bytes]:
        self.runs += 1
        out = self.tmp_path / f"run{self.runs}"
        out.mkdir()
        with (out / "stdout.txt").open("wb") as stdout, (out / "stderr.txt").open("wb") as stderr:
            return self.command.start(out, stdout=stdout, stderr=stderr)

    def kill_when(
        self, process: subprocess.Popen[bytes], condition: Callable[[], bool], what: str
    ) -> None:
        deadline = time.monotonic() + 90
        while not condition():
            if process.poll() is not None:
                stderr = (self.tmp_path / f"run{self.runs}" / "stderr.txt").read_text()
                raise AssertionError(f"run {self.runs} exited before {what}:\n{stderr[-3000:]}")
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"run {self.runs}: timed out waiting for {what}")
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL

    def hung(self, method: str, path: str) -> Callable[[], bool]:
        return lambda: bool(requests_matching(self.emulator, method, path, fault="hang"))


def _stage(tmp_path: Path, dataset: str, uuid: str) -> tuple[str | None, str | None]:
    store = StateStore.in_dir(tmp_path / "state")
    try:
        record = store.get(dataset, GT, uuid)
    finally:
        store.close()
    return (record.stage, record.asset_url) if record else (None, None)


@pytest.mark.slow
def test_kill_9_at_any_point_then_rerun_writes_each_label_exactly_once(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    with Emulator(KEY) as emulator:
        client = SegmentsClient(KEY, api_url=emulator.url)
        seeded = seed_dataset_via_sdk(client, n_images=5)
        s = seeded.sample_uuids
        images = [client.get_sample(u).attributes.image.url for u in s]
        seeded_uploads = emulator.asset_upload_count()

        def label_uploads() -> int:
            return emulator.asset_upload_count() - seeded_uploads

        runner = Runner(tmp_path, emulator, seeded.full_name, tiny_models_dir)

        # 1. Killed while listing.
        emulator.set_faults([FaultRule(path="/datasets/*/samples/", hang_rate=1.0, hang_s=HANG)])
        runner.kill_when(runner.start(), runner.hung("GET", "/datasets/"), "the listing")
        assert emulator.label_write_counts() == {} and label_uploads() == 0

        # 2. Killed while predicting s0: after its image arrived and the models were loaded
        #    (the one moment the process says so is its "tiny random-weight models in use"
        #    warning). Creating the bitmap asset hangs, so the kill certainly precedes uploads.
        emulator.set_faults([FaultRule(path="/assets/", method="POST", hang_rate=1.0, hang_s=HANG)])
        emulator.clear_requests()
        image0 = url_path(images[0])
        stderr2 = tmp_path / "run2" / "stderr.txt"

        def predicting() -> bool:
            return bool(requests_matching(emulator, "GET", image0)) and (
                "tiny random-weight models in use" in stderr2.read_text(errors="replace")
            )

        runner.kill_when(runner.start(), predicting, "s0's prediction")
        assert emulator.label_write_counts() == {} and label_uploads() == 0
        assert _stage(tmp_path, seeded.full_name, s[0]) == (None, None)

        # 3. Killed between s0's bitmap upload and its label write.
        emulator.set_faults([FaultRule(path="/labels/*", method="PUT", hang_rate=1.0, hang_s=HANG)])
        emulator.clear_requests()
        runner.kill_when(runner.start(), runner.hung("PUT", "/labels/"), "s0's label write")
        stage, asset0 = _stage(tmp_path, seeded.full_name, s[0])
        assert stage == UPLOADED and asset0
        assert label_uploads() == 1 and emulator.label_write_counts() == {}

        # 4. Killed after some labels were written, with s3's image download hanging.
        image3 = url_path(images[3])
        emulator.set_faults([FaultRule(path=image3, method="GET", hang_rate=1.0, hang_s=HANG)])
        emulator.clear_requests()
        # The overlapped engine downloads ahead, so s3's download may hang before s0-s2 are
        # written: wait for both.
        runner.kill_when(
            runner.start(),
            lambda: runner.hung("GET", image3)() and len(emulator.label_write_counts()) == 3,
            "s3's hung download and three label writes",
        )
        assert emulator.label_write_counts() == {(u, GT): 1 for u in s[:3]}
        assert label_uploads() == 3  # s0's asset was reused, not uploaded again
        assert emulator.get_label(s[0])["attributes"]["segmentation_bitmap"]["url"] == asset0

        # 5. A clean rerun finishes the job.
        emulator.clear_faults()
        process = runner.start()
        assert process.wait(timeout=120) == 0, (tmp_path / "run5" / "stderr.txt").read_text()

        assert emulator.label_write_counts() == {(u, GT): 1 for u in s}
        assert label_uploads() == len(s)
        outcomes = outcomes_by_uuid(read_report(tmp_path / "run5" / "report.json"))
        assert {u: o["result"] for u, o in outcomes.items()} == {s[3]: "labeled", s[4]: "labeled"}
        for uuid in s:
            assert_valid_prelabel(
                client,
                uuid,
                image_size=seeded.image_size,
                category_ids=[c["id"] for c in DEMO_CATEGORIES],
            )
        client.close()

    # Five runs at -vv, killed or not: the key is in none of their output or files.
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len([p for p in files if p.name == "stderr.txt"]) == 5
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path
