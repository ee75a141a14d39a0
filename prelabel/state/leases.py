"""Who holds a lease: owner names, and whether a local owner is still alive.

A lease owner is ``host:pid:random``: readable in reports, unique per worker object (two workers
in one process never share leases), and checkable on this machine. The leases themselves are
rows of the state file (:class:`prelabel.state.store.StateStore`).
"""

from __future__ import annotations

import os
import secrets
import socket


def new_owner() -> str:
    """A fresh lease owner name for one worker."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def owner_is_dead(owner: str) -> bool:
    """True when a lease owner ran on this machine and its process is gone.

    Owners on other machines cannot be checked from here: their leases run out after
    ``worker.lease_s``.
    """
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        return False
    return False
