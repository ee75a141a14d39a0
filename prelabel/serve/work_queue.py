"""The bounded queue between the webhook handler and the worker.

The handler only ever adds (:meth:`WorkQueue.offer`, never blocking); the worker takes. Two
tasks for one sample while the first is still waiting are one task (the second would only
re-read a finished sample), and still count as accepted. A full queue refuses: the handler
answers 503 so the sender retries later, and nothing accepted is ever dropped by the queue.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from prelabel.serve.webhooks import SampleTask


class WorkQueue:
    """FIFO of :class:`SampleTask`, at most ``capacity`` waiting, one per sample."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self._tasks: OrderedDict[tuple[str, str], SampleTask] = OrderedDict()
        self._ready = threading.Condition()
        #: Tasks added and not yet reported done with :meth:`task_done` (waiting or running).
        self._unfinished = 0

    def has_room(self, task: SampleTask) -> bool:
        """Whether :meth:`offer` would take ``task`` now."""
        with self._ready:
            return _key(task) in self._tasks or len(self._tasks) < self.capacity

    def offer(self, task: SampleTask) -> bool:
        """Add ``task`` (or merge it with the waiting one of its sample); False when full."""
        with self._ready:
            key = _key(task)
            if key in self._tasks:
                return True
            if len(self._tasks) >= self.capacity:
                return False
            self._tasks[key] = task
            self._unfinished += 1
            self._ready.notify_all()
            return True

    def take(self, timeout: float) -> SampleTask | None:
        """The oldest task, waiting up to ``timeout`` seconds for one."""
        with self._ready:
            if not self._tasks:
                self._ready.wait(timeout)
            if not self._tasks:
                return None
            return self._tasks.popitem(last=False)[1]

    def take_if(self, dataset: str) -> SampleTask | None:
        """The oldest task if it is for ``dataset``, else None; never waits."""
        with self._ready:
            if not self._tasks:
                return None
            key = next(iter(self._tasks))
            if key[0] != dataset:
                return None
            return self._tasks.pop(key)

    def task_done(self, count: int = 1) -> None:
        """Report ``count`` taken tasks finished (as :meth:`queue.Queue.task_done`)."""
        with self._ready:
            self._unfinished -= count

    @property
    def unfinished(self) -> int:
        """Tasks waiting or taken and not yet done; 0 means idle."""
        with self._ready:
            return self._unfinished

    def __len__(self) -> int:
        with self._ready:
            return len(self._tasks)


def _key(task: SampleTask) -> tuple[str, str]:
    return (task.dataset, task.sample_uuid)
