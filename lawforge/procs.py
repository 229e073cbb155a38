"""Processes that clean up after themselves: workers that end with their parent, and a lock that
keeps two lawforge processes out of one folder.

* :func:`exit_with_parent`, called in every worker process lawforge starts, ends the worker as
  soon as its parent is gone, however the parent ended (``kill -9`` included). A worker of a
  ``spawn`` pool holds the read end of a pipe whose write end only its parent holds, so
  ``multiprocessing.parent_process().join()`` returns the moment the parent dies; a daemon
  thread waits on it and ends the process. When the workers are gone, the multiprocessing
  resource tracker sees its last user leave and ends too.
* :class:`FolderLock` is an advisory ``flock`` on a file in the folder. The kernel releases it
  when its holder ends, however it ends, so a lock left by a killed run never blocks a resume;
  the holder's pid and start time are written into the file for the error message. (The
  ``filelock`` package truncates the lock file before it tries the lock, which would erase the
  holder's details that the refused process reads, so the few lines are written here.)
"""

from __future__ import annotations

import datetime as _dt
import os
import threading
from pathlib import Path

from lawforge.errors import ConfigError


def exit_with_parent(code: int = 3) -> None:
    """End this process (``os._exit``) as soon as its parent process ends. A no-op in a
    process that multiprocessing did not start."""
    import multiprocessing as mp

    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # returns when the parent's end of the pipe closes: the parent has ended
        os._exit(code)

    threading.Thread(target=watch, name="lawforge-exit-with-parent", daemon=True).start()


def start_worker(then: str, blob: bytes | None = None) -> None:
    """The initializer of every worker process lawforge starts: the parent watch first (this
    module is light, so it starts before the worker imports torch and the rest, which takes
    seconds on a busy machine), Ctrl-C left to the parent, then ``then`` (``"module:function"``)
    called with the unpickled ``blob`` (bytes, so that nothing heavy is imported to pass it)."""
    import importlib
    import pickle
    import signal

    exit_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    module, _, name = then.partition(":")
    fn = getattr(importlib.import_module(module), name)
    if blob is None:
        fn()
    else:
        fn(pickle.loads(blob))


class FolderLock:
    """An exclusive lock on ``folder`` (the file ``folder/name``), held by this process until
    :meth:`release` or the process's end. ``acquire`` fails at once, naming the holder, when
    another process holds it. Usable as a context manager."""

    def __init__(self, folder: str | Path, name: str = "lawforge.lock", what: str = "run folder"):
        self.path = Path(folder) / name
        self.what = what
        self.fd: int | None = None

    def acquire(self) -> "FolderLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no flock on this platform: run unlocked
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise ConfigError(f"{self.path.parent}: this {self.what} is in use by another lawforge process "
                                  f"({self._holder()}); wait for it to end or stop it first") from None
            # the holder before us may have removed the file between our open and our lock:
            # then we hold a lock on a file nobody else can see, so try again on the new one
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {_dt.datetime.now().isoformat(timespec='seconds')}\n".encode())
        self.fd = fd
        return self

    def _holder(self) -> str:
        try:
            text = self.path.read_text().strip()
        except OSError:
            text = ""
        return text or "holder unknown"

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink()
        except OSError:
            pass
        os.close(self.fd)  # closing the descriptor releases the lock
        self.fd = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def __enter__(self) -> "FolderLock":
        return self if self.held else self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


class RaySession:
    """Ray for one lawforge command: ``address`` is ``"auto"`` (a running cluster when one is
    found: ``RAY_ADDRESS`` or a ``ray start`` on this machine; else a new local Ray instance with
    ``num_cpus`` CPUs, default all) or a cluster address such as ``10.0.0.1:6379``. Ray started
    or connected here is shut down (or disconnected) by :meth:`close`; a Ray the caller already
    initialised is used as it is and left running."""

    def __init__(self, address: str = "auto", num_cpus: int | None = None):
        self.address = address or "auto"
        self.num_cpus = num_cpus or None
        self.owned = False
        self.ray = None

    def start(self) -> "RaySession":
        hostport = None if self.address == "auto" else _host_port(self.address)
        ray = require_ray()
        self.ray = ray
        if ray.is_initialized():
            return self
        import logging

        quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
        if hostport is not None:
            _answers(self.address, *hostport)
        try:
            ray.init(address=self.address, **quiet)
        except ConnectionError as exc:
            if self.address != "auto":
                raise ConfigError(f"--ray {self.address}: no Ray cluster answers there ({exc})") from None
            ray.init(num_cpus=self.num_cpus, include_dashboard=False, **quiet)
        self.owned = True
        return self

    def cpus(self) -> int:
        """The CPUs of the cluster (all nodes)."""
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def close(self) -> None:
        if self.owned and self.ray is not None:
            self.ray.shutdown()
            self.owned = False

    def __enter__(self) -> "RaySession":
        return self.start()

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


def require_ray():
    """The ``ray`` module, or a clear error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray, which is not installed: pip install 'lawforge[ray]'") from None
    return ray


def _host_port(address: str) -> tuple[str, int]:
    """``host:port`` or ``ray://host:port``, or a clear error."""
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray {address}: expected HOST:PORT (as 'ray start --head' prints) or 'auto'")
    return host, int(port)


def _answers(address: str, host: str, port: int, timeout: float = 5.0) -> None:
    """Fail fast, with the address in the message, when nothing listens at a Ray address:
    ``ray.init`` itself waits for minutes."""
    import socket

    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"--ray {address}: no Ray cluster answers there ({exc})") from None
