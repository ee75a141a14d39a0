"""FrameIO: a sequence's read-ahead and upload-behind, in line or overlapped."""

from __future__ import annotations

import threading

import pytest

from prelabel.run.frame_io import FrameIO


@pytest.mark.parametrize("overlapped", [False, True])
def test_frames_come_in_order_and_uploads_all_finish(overlapped: bool) -> None:
    loaded: list[int] = []
    uploaded: list[int] = []
    lock = threading.Lock()

    def load(index: int) -> int:
        with lock:
            loaded.append(index)
        return index * 10

    with FrameIO(overlapped=overlapped, in_flight=2, threads=2) as io:
        for value in io.frames(load, 5):
            # Overlapped, the next frame is already being read while this one is worked on.
            io.upload(lambda v=value: uploaded.append(v))
        io.drain()

    assert sorted(uploaded) == [0, 10, 20, 30, 40]
    assert loaded == [0, 1, 2, 3, 4]


def test_overlapped_reads_one_frame_ahead() -> None:
    started = threading.Event()

    def load(index: int) -> int:
        if index == 1:
            started.set()
        return index

    with FrameIO(overlapped=True, in_flight=1, threads=1) as io:
        frames = io.frames(load, 2)
        assert next(frames) == 0
        assert started.wait(5), "frame 1 was not read while frame 0 was worked on"
        assert list(frames) == [1]


@pytest.mark.parametrize("overlapped", [False, True])
def test_an_upload_error_and_a_load_error_reach_the_caller(overlapped: bool) -> None:
    def fail() -> None:
        raise OSError("upload refused")

    def load(index: int) -> int:
        if index == 2:
            raise ValueError("frame 2 is broken")
        return index

    with (
        pytest.raises(OSError, match="upload refused"),
        FrameIO(overlapped=overlapped, in_flight=1, threads=1) as io,
    ):
        io.upload(fail)
        io.drain()
    reader = FrameIO(overlapped=overlapped, in_flight=1, threads=1)
    with reader, pytest.raises(ValueError, match="frame 2 is broken"):
        list(reader.frames(load, 4))
