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


@pytest.fixture(scope="session", autouse=True)
def _clean_fast_dds_segments():
    """Remove the Fast DDS segments that processes this run killed (SIGKILL tests) left behind."""
    shm = Path("/dev/shm")
    pattern = ("fast*", "sem.fast*")
    before = {p for g in pattern for p in shm.glob(g)} if shm.is_dir() else set()
    yield
    if not shm.is_dir():
        return
    in_use = _shm_in_use()
    for path in {p for g in pattern for p in shm.glob(g)} - before:
        if str(path) not in in_use:
            path.unlink(missing_ok=True)
