"""Test configuration: fixture plugins, and one torch thread per process.

The tiny models are too small to gain from intra-op threads, and on the 2-core CI machine
subprocess tests run beside the test process; one thread each halves the suite's torch time.
Set before torch is imported, and inherited by every subprocess a test starts.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

pytest_plugins = [
    "tests.fixtures.emulator",
    "tests.fixtures.models",
    "tests.fixtures.ray_cluster",
    "tests.fixtures.storage",
]
