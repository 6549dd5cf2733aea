"""Test configuration: keep DDS on loopback and give each run its own domain.

These variables must be set before rclpy is imported anywhere, so they are set at import
time of this conftest (pytest imports it before any test module).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # ROS_LOCALHOST_ONLY is ignored by Kilted
os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 200 + 1))
os.environ.setdefault("MUJOCO_GL", "egl")

REPO = Path(__file__).resolve().parent.parent


def _have_rclpy() -> bool:
    try:
        import rclpy  # noqa: F401
    except ImportError:
        return False
    return True


HAVE_RCLPY = _have_rclpy()


def pytest_collection_modifyitems(config, items):
    if HAVE_RCLPY and not os.environ.get("SIMREAL_NO_NETNS"):
        return
    reason = ("rclpy is not installed" if not HAVE_RCLPY
              else "not in a loopback-only network namespace (run ./run test as root)")
    for item in items:
        if "ros" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


class Processes:
    """Start node processes with the test's environment; stop them all at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.procs: list[subprocess.Popen] = []
        self.tmp = tmp_path

    def start(self, *args: str, name: str = "proc") -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")
        # Pass the parent's environment through: the ROS wheels' bootstrapper needs it.
        proc = subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(),
                                cwd=REPO)
        proc.log_path = self.tmp / f"{name}.log"  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    @staticmethod
    def output(proc: subprocess.Popen) -> str:
        return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            self.stop(p)


@pytest.fixture
def processes(tmp_path):
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()


@pytest.fixture
def ros_node():
    """An rclpy node in its own context, plus a SingleThreadedExecutor (MultiThreaded loses messages)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node(f"test_probe_{os.getpid()}", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)

    def spin_until(cond, timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.01)
            if cond():
                return True
        return False

    node.spin_until = spin_until  # type: ignore[attr-defined]
    node.executor_ = executor  # type: ignore[attr-defined]
    yield node
    executor.remove_node(node)
    node.destroy_node()
    rclpy.try_shutdown(context=ctx)


def _shm_in_use() -> set[str]:
    """Shared-memory files some live process has mapped (from /proc/*/maps)."""
    used: set[str] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            used.update(line.split()[-1] for line in maps.read_text().splitlines() if "/dev/shm/" in line)
        except OSError:
            continue
    return used


def _locked_inodes() -> set[int]:
    """Inodes some live process holds a file lock on (from /proc/locks)."""
    out: set[int] = set()
    try:
        for line in Path("/proc/locks").read_text().splitlines():
            dev_inode = next((f for f in line.split() if f.count(":") == 2), None)
            if dev_inode:
                out.add(int(dev_inode.rsplit(":", 1)[1]))
    except (OSError, ValueError):
        pass
    return out


def stale_fast_dds_files(candidates) -> set[Path]:
    """The Fast DDS files among ``candidates`` that no live process uses: a segment or port no
    process maps, or a lock file (``<name>_el``) or port mutex (``sem.<port>_mutex``) of one,
    unless someone holds a lock on it.

    A lock file is never mapped, only locked by the segment's owner, and Fast DDS takes a segment
    whose lock file is gone for a dead one: its owner's messages stop reaching the other
    processes within seconds (measured: a subscriber got nothing 6 s after its publisher's lock
    file was removed). Test sessions run concurrently on one machine (each in its own network
    namespace, all sharing /dev/shm), so deleting every unmapped new file at the end of one
    session stalled the graphs of the others."""
    in_use, locked = _shm_in_use(), _locked_inodes()
    out = set()
    for path in candidates:
        name = str(path)
        base = name[:-3] if name.endswith("_el") else name
        if path.name.startswith("sem.") and path.name.endswith("_mutex"):  # a port's named mutex
            base = str(path.with_name(path.name[len("sem."):-len("_mutex")]))
        if name in in_use or base in in_use:
            continue
        try:
            if path.stat().st_ino in locked:
                continue
        except OSError:
            continue
        out.add(path)
    return out


@pytest.fixture(scope="session", autouse=True)
def _clean_fast_dds_segments():
    """Remove the Fast DDS segments that processes this run killed (SIGKILL tests) left behind
    (only those no live process uses: other sessions run beside this one)."""
    shm = Path("/dev/shm")
    pattern = ("fast*", "sem.fast*")
    before = {p for g in pattern for p in shm.glob(g)} if shm.is_dir() else set()
    yield
    if not shm.is_dir():
        return
    for path in stale_fast_dds_files({p for g in pattern for p in shm.glob(g)} - before):
        path.unlink(missing_ok=True)
