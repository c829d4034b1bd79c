"""How ``miatari serve`` uses one machine: web processes on one listening socket, and the embedded
matching worker as a process of its own at a lower CPU priority.

The matcher's work (TensorFlow, dlib) is CPU-bound.  Run in a thread of the web process it competes
with every request for the interpreter lock and for the cores, and a recognizer's next task waits
behind a face being embedded.  So ``miatari serve``:

* binds the listening socket once and starts ``MIATARI_WEB_PROCESSES`` web processes on it (0, the
  default, means one per core, at most four); each is an ordinary uvicorn server on the inherited
  socket, and the kernel spreads connections between them;
* with the embedded worker on (the default), starts one ``miatari worker`` process, which lowers
  its own priority (``MIATARI_WORKER_NICE``, 10): the matcher takes what the web processes leave;
* restarts a child that died (after a short pause, longer if it keeps dying), and stops them all on
  SIGTERM or SIGINT.  If ``miatari serve`` itself is killed, the kernel kills its children
  (``PR_SET_PDEATHSIG``): a restarted server never finds the port held by an orphan.

With one web process and no embedded worker, the web app runs in this process, as before.

A web process's threads mostly wait on the database, each request's statements one after another.
A thread whose answer has come back needs the interpreter lock again to go on; with CPython's
default switch interval (5 ms) it waits up to that long behind a thread that is computing (a page
being rendered, an upload being checked), at every statement.  Under load that wait, not the
database, made most of a request's time on PostgreSQL.  So web processes use a shorter interval
(``WEB_SWITCH_INTERVAL_SECONDS``); the matching worker keeps the default.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger("miatari.serve")

PR_SET_PDEATHSIG = 1
MAX_AUTO_WEB_PROCESSES = 4
RESTART_PAUSE_SECONDS = (1.0, 30.0)  # first pause after a crash, and the cap as crashes repeat
STOP_GRACE_SECONDS = 20.0
WEB_SWITCH_INTERVAL_SECONDS = 0.0005


def tune_web_process() -> None:
    """The interpreter settings of a web process (see the module's notes)."""
    sys.setswitchinterval(WEB_SWITCH_INTERVAL_SECONDS)


def web_process_count(configured: int) -> int:
    """``MIATARI_WEB_PROCESSES``: 0 means one per core, at most four."""
    if configured > 0:
        return configured
    return max(1, min(os.cpu_count() or 1, MAX_AUTO_WEB_PROCESSES))


def _die_with_parent(parent: int) -> Callable[[], None]:
    """What runs in the child between fork and exec: the kernel kills it when ``miatari serve`` ends.

    A parent that died before the signal was asked for would leave an orphan holding the port, so
    the child checks it still has its parent after asking, and ends at once if not."""

    def arm() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # not Linux: the parent's shutdown still stops its children
            return
        if os.getppid() != parent:
            os._exit(1)

    return arm


@dataclass
class Child:
    """One supervised process: started, restarted when it dies, stopped with the server."""

    name: str
    argv: list[str]
    pass_fds: tuple[int, ...] = ()
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = None
    crashes: int = 0
    started_at: float = 0.0
    restart_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self.popen = subprocess.Popen(self.argv, pass_fds=self.pass_fds, env=self.env,
                                      preexec_fn=_die_with_parent(os.getpid()))  # noqa: PLW1509 - the parent-death signal
        self.started_at = time.monotonic()
        self.restart_at = None
        log.info("started %s (pid %d)", self.name, self.popen.pid)

    def check(self, now: float) -> None:
        """Restart the child if it ended, after a pause that grows while it keeps dying young."""
        if self.popen is None or self.popen.poll() is None:
            return
        if self.restart_at is None:
            lived = now - self.started_at
            self.crashes = 0 if lived > 60 else self.crashes + 1
            pause = min(RESTART_PAUSE_SECONDS[0] * 2 ** self.crashes, RESTART_PAUSE_SECONDS[1])
            log.warning("%s (pid %d) ended with status %s after %.1f s; restarting in %.0f s", self.name,
                        self.popen.pid, self.popen.returncode, lived, pause)
            self.restart_at = now + pause
        if now >= self.restart_at:
            self.start()

    def signal(self, signum: int) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signum)

    def wait(self, deadline: float) -> None:
        if self.popen is None:
            return
        try:
            self.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) did not stop in time: killed", self.name, self.popen.pid)
            self.popen.kill()
            self.popen.wait()


def bind(host: str, port: int) -> socket.socket:
    """The listening socket every web process shares (inherited by file descriptor)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class Supervisor:
    """The parent of ``miatari serve``'s processes; ``run`` returns when told to stop."""

    def __init__(self, children: Sequence[Child]) -> None:
        self.children = list(children)
        self.stopping = threading.Event()

    def _stop(self, signum: int, _frame: object) -> None:
        log.info("stopping (signal %d)", signum)
        self.stopping.set()

    def run(self, poll_seconds: float = 0.5) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for child in self.children:
            child.start()
        while not self.stopping.wait(poll_seconds):
            now = time.monotonic()
            for child in self.children:
                child.check(now)
        self.shutdown()
        return 0

    def shutdown(self) -> None:
        for child in self.children:
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in self.children:
            child.wait(deadline)


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "miatari.cli", *args]
