"""Facts about the machine a measurement runs on: CPU model, usable cores, architecture, exporter version.

A backend's identity (:meth:`nas.backends.base.Backend.identity`) starts from :func:`host_identity`; the board
agent reports the same facts about the board, and the ``remote`` backend adds the host's :func:`torch_version`
(the ONNX exporter's).
"""

from __future__ import annotations

import os
import platform
from typing import Any

__all__ = ["ARM_ARCHES", "cpu_model", "host_identity", "is_arm", "is_arm_host", "torch_version", "usable_cpus"]

# ``platform.machine()`` values of ARM machines: 64-bit Linux (aarch64), macOS (arm64), 32-bit userlands
# on a 64-bit board (armv8l) and 32-bit Raspberry Pi OS (armv7l).
ARM_ARCHES: tuple[str, ...] = ("aarch64", "arm64", "armv8l", "armv7l")


def is_arm(arch: str) -> bool:
    """True when ``arch`` (a ``platform.machine()`` value, any case) is an ARM architecture."""
    return arch.lower() in ARM_ARCHES


def is_arm_host() -> bool:
    """True when this machine is an ARM machine."""
    return is_arm(platform.machine())


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``Hardware`` on some ARM boards), else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                low = line.lower()
                if low.startswith(("model name", "hardware", "cpu model")) and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def torch_version() -> str:
    """The installed torch version, read from package metadata (torch is not imported), or ``"not installed"``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return "not installed"


def usable_cpus() -> int:
    """Cores this process may run on (its affinity mask where the OS has one, else the core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def host_identity(*, device: str, threads: int, batch: int) -> dict[str, Any]:
    """The host half of a backend identity (CPU model, OS, arch, cores, Python and torch versions).

    Args:
        device: the device kind recorded (``cpu``, ``gpu``, ``arm``).
        threads: intra-op threads of the backend.
        batch: the backend's batch size.

    Returns:
        A dict with ``device cpu_model cpu_count os arch python torch_version threads batch``.
    """
    return {
        "device": device,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "python": platform.python_version(),
        "torch_version": torch_version(),
        "threads": threads,
        "batch": batch,
    }
