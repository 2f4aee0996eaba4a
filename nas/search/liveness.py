"""Worker liveness: who runs a trial, whether that worker is still alive, the heartbeat it writes, and the
failing of trials left RUNNING by dead workers (same host: the worker's pid is gone; any host: no heartbeat
for ``GRACE_S``), so a resumed study reaches its total."""

from __future__ import annotations

import os
import socket
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.search.storage import HEARTBEAT_S

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = ["worker_tag", "is_dead", "fail_stale", "Heartbeat"]

# Field 22 of /proc/<pid>/stat (index 19 after the ")" that ends the command name): the process start time in
# clock ticks since boot (proc(5)); it tells a reused pid from the original.
_STAT_STARTTIME = 19


def _proc_start(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has exited
        return None
    return fields[_STAT_STARTTIME]


def worker_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_proc_start(os.getpid()) or '?'}"


def is_dead(tag: str) -> bool:
    """True if ``tag`` names a process on this host that no longer exists."""
    host, _, rest = tag.partition(":")
    pid_s, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_s.isdigit():
        return False
    now = _proc_start(int(pid_s))
    if now is None:  # no such process, or a zombie (exited, not yet reaped)
        return Path("/proc").is_dir() or not _pid_alive(int(pid_s))
    return start not in ("?", now)  # the pid now belongs to another process


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_stale(study: "optuna.Study", storage: Any) -> int:
    """Fail RUNNING trials whose worker is gone; returns how many (called under the claim lock)."""
    import optuna
    from optuna.trial import TrialState

    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tag = t.user_attrs.get("worker")
        # Without a worker tag the trial's claimer died between ask() and tagging, both done under this lock.
        if tag is None or is_dead(str(tag)):
            try:
                storage.set_trial_user_attr(t._trial_id, "failure", f"worker {tag or '?'} died while running it")
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
                n += 1
            except Exception:  # finished meanwhile by its worker: nothing to do
                pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)  # heartbeat-less trials of workers on other hosts
    return n


class Heartbeat:
    """Records a running trial's heartbeat every ``HEARTBEAT_S`` from a daemon thread (a context manager)."""

    def __init__(self, storage: Any, trial_id: int) -> None:
        self.storage, self.trial_id = storage, trial_id
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for _ in range(10**7):  # bounded: ~3 years at HEARTBEAT_S
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # a transient storage error must not kill the trial
                pass
            if self.stop_event.wait(HEARTBEAT_S):
                return

    def __enter__(self) -> "Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_event.set()
        self.thread.join(timeout=5)

