"""Background processes of the local stack: start detached, remember the pid, stop for sure.

Each service has a pid file in the state folder. A pid file is trusted only when the process
it names is alive *and* is the one that wrote it: its start time equals the one recorded in the
file (``claim``: components started by hand, ``threadline serve gateway``), or its command line
mentions the state folder (what ``start`` launched). A reused pid is never mistaken for ours.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Managed:
    name: str
    state_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "logs" / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            fields = self.pid_file.read_text().split()
            pid = int(fields[0])
            started = float(fields[1]) if len(fields) > 1 else None
        except (FileNotFoundError, ValueError, IndexError):
            return None
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            if started is not None:
                if abs(proc.create_time() - started) > 0.01:
                    return None
            elif str(self.state_dir) not in " ".join(proc.cmdline()):
                return None
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        return pid

    def claim(self) -> None:
        """Record the calling process as this service (a component started by hand), with its
        start time; the file goes when the process exits normally (a stale one is never trusted)."""
        import atexit

        me = os.getpid()
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(f"{me} {psutil.Process(me).create_time()}")

        def release() -> None:
            if self.pid() == me:
                self.pid_file.unlink(missing_ok=True)

        atexit.register(release)

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, argv: list[str], *, env: dict | None = None, cwd: Path | None = None) -> int:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def launch(
        self, argv: list[str], *, ready, timeout: float, env: dict | None = None, cwd: Path | None = None
    ) -> None:
        """Start, then wait for ``ready()``; a process that never gets ready is stopped again."""
        self.start(argv, env=env, cwd=cwd)
        try:
            wait_until(ready, timeout, what=self.name)
        except TimeoutError:
            self.stop(5)
            raise

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after ``timeout``; the whole process group. True if it ran."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        terminate_tree(pid, timeout)
        self.pid_file.unlink(missing_ok=True)
        return True


def terminate_tree(pid: int, timeout: float) -> None:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for services started beside the shared stack)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, interval: float = 0.5, what: str = "service") -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # readiness probes fail in many ways until the service is up
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s" + (f": {last}" if last else ""))


# -- Threadline's own components (gateway, api, worker, projector) ------------------------------
def managed(settings, name: str) -> Managed:
    """The pid file of component ``name`` in the state folder of ``settings``."""
    return Managed(f"app-{name}", settings.state_dir)


def claim(settings, name: str) -> None:
    """The calling process is component ``name`` of this state folder: the commands that run a
    component call this, so ``threadline stop``, ``down`` and ``status`` know it however it was
    started. A second one of the same kind gets ``app-<name>-<pid>.pid``."""
    m = managed(settings, name)
    holder = m.pid()
    if holder is not None and holder != os.getpid():
        m = Managed(f"app-{name}-{os.getpid()}", settings.state_dir)
    m.claim()


def instances(settings, name: str) -> list[Managed]:
    """Every live process of component ``name`` this state folder knows of (started or claimed)."""
    run = settings.state_dir / "run"
    found = [managed(settings, name)]
    if run.is_dir():
        found += [Managed(p.stem, settings.state_dir) for p in sorted(run.glob(f"app-{name}-*.pid"))]
    return [m for m in found if m.running()]
