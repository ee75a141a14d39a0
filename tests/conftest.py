"""Test configuration: fixture plugins, and one torch thread per process.

The tiny models are too small to gain from intra-op threads, and on the 2-core CI machine
subprocess tests run beside the test process; one thread each halves the suite's torch time.
Set before torch is imported, and inherited by every subprocess a test starts.
"""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

pytest_plugins = [
    "tests.fixtures.emulator",
    "tests.fixtures.models",
    "tests.fixtures.ray_cluster",
    "tests.fixtures.storage",
]


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under ``--dist loadgroup`` xdist tags each grouped test's node id with ``@group``; a
    pytest it does not support (9.2 with xdist 3.8: pytest-dev/pytest-xdist#1386) drops the tag
    silently and the Ray tests spread over every worker, each starting its own Ray instance.
    Fail those tests instead, naming the cause."""
    if (
        item.config.getoption("loadgroup", default=False)
        and item.get_closest_marker("xdist_group")
        and "@" not in item.nodeid
    ):
        pytest.fail(
            "--dist loadgroup ignored this test's xdist_group mark: this pytest and "
            "pytest-xdist do not combine (pytest-dev/pytest-xdist#1386; see pyproject.toml)",
            pytrace=False,
        )
