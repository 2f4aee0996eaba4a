"""Facts about the machine a measurement runs on: CPU model, usable cores, architecture, exporter version.

A backend's identity (:meth:`nas.backends.base.Backend.identity`) starts from :func:`host_identity`; the board
agent reports the same facts about the board, and the ``remote`` backend adds the host's :func:`torch_version`
(the ONNX exporter's).

On ARM Linux the kernel's ``/proc/cpuinfo`` usually has no ``model name`` line (mainline arm64 kernels on
Graviton, Ampere, Jetson, Raspberry Pi print none), only each core's ``CPU implementer``/``CPU part`` codes;
:func:`describe_cpu` decodes them into core names (``4x Cortex-A72``, big.LITTLE as ``4x Cortex-A76 + 4x
Cortex-A55``) and adds the board's model (device tree, or the ``Model`` line of Raspberry Pi kernels), so
tables of different boards have different ``cpu_model`` values and are told apart by
:func:`nas.backends.identity.identity_diff`. :func:`describe_cpu` is a pure function of the texts;
:func:`read_cpu_description` reads them from a (possibly fake, for tests) file-system root.
"""

from __future__ import annotations

import glob
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

__all__ = ["ARM_ARCHES", "ARM_IMPLEMENTERS", "ARM_PARTS", "CpuDescription", "cpu_model", "describe_cpu",
           "host_identity", "is_arm", "is_arm_host", "parse_cpuinfo", "read_cpu_description", "read_llc_bytes",
           "torch_version", "usable_cpus"]

# ``platform.machine()`` values of ARM machines: 64-bit Linux (aarch64), macOS (arm64), 32-bit userlands
# on a 64-bit board (armv8l) and 32-bit Raspberry Pi OS (armv7l).
ARM_ARCHES: tuple[str, ...] = ("aarch64", "arm64", "armv8l", "armv7l")

# ``CPU implementer`` codes (MIDR_EL1 bits 31:24), as the Linux kernel (arch/arm64/include/asm/cputype.h) and
# util-linux's lscpu (sys-utils/lscpu-arm.c) name them.
ARM_IMPLEMENTERS: dict[int, str] = {
    0x41: "Arm", 0x42: "Broadcom", 0x43: "Cavium", 0x46: "Fujitsu", 0x48: "HiSilicon", 0x4E: "NVIDIA",
    0x50: "APM", 0x51: "Qualcomm", 0x53: "Samsung", 0x61: "Apple", 0x70: "Phytium", 0xC0: "Ampere",
}

# (implementer, ``CPU part``) -> core name. Arm's part numbers (MIDR_EL1 bits 15:4) from the kernel's
# cputype.h (ARM_CPU_PART_*) and lscpu-arm.c, which take them from each core's Technical Reference Manual
# ("MIDR_EL1 bit descriptions"); the other vendors' from the same two files.
ARM_PARTS: dict[tuple[int, int], str] = {
    **{(0x41, part): name for part, name in {
        0xC07: "Cortex-A7", 0xC08: "Cortex-A8", 0xC09: "Cortex-A9", 0xC0F: "Cortex-A15",
        0xD01: "Cortex-A32", 0xD03: "Cortex-A53", 0xD04: "Cortex-A35", 0xD05: "Cortex-A55",
        0xD06: "Cortex-A65", 0xD07: "Cortex-A57", 0xD08: "Cortex-A72", 0xD09: "Cortex-A73",
        0xD0A: "Cortex-A75", 0xD0B: "Cortex-A76", 0xD0C: "Neoverse-N1", 0xD0D: "Cortex-A77",
        0xD0E: "Cortex-A76AE", 0xD40: "Neoverse-V1", 0xD41: "Cortex-A78", 0xD42: "Cortex-A78AE",
        0xD43: "Cortex-A65AE", 0xD44: "Cortex-X1", 0xD46: "Cortex-A510", 0xD47: "Cortex-A710",
        0xD48: "Cortex-X2", 0xD49: "Neoverse-N2", 0xD4A: "Neoverse-E1", 0xD4B: "Cortex-A78C",
        0xD4C: "Cortex-X1C", 0xD4D: "Cortex-A715", 0xD4E: "Cortex-X3", 0xD4F: "Neoverse-V2",
        0xD80: "Cortex-A520", 0xD81: "Cortex-A720", 0xD82: "Cortex-X4", 0xD83: "Neoverse-V3AE",
        0xD84: "Neoverse-V3", 0xD85: "Cortex-X925", 0xD87: "Cortex-A725", 0xD89: "Cortex-A720AE",
        0xD8E: "Neoverse-N3",
    }.items()},
    (0x42, 0x100): "Brahma-B53", (0x42, 0x516): "ThunderX2",
    (0x43, 0x0A1): "ThunderX-88XX", (0x43, 0x0AF): "ThunderX2-99xx",
    (0x46, 0x001): "A64FX",
    (0x48, 0xD01): "Kunpeng-920",
    (0x4E, 0x000): "Denver", (0x4E, 0x003): "Denver 2", (0x4E, 0x004): "Carmel",
    (0x50, 0x000): "X-Gene",
    (0x51, 0x800): "Kryo-V1", (0x51, 0x801): "Kryo-V2", (0x51, 0x802): "Kryo-3XX-Gold",
    (0x51, 0x803): "Kryo-3XX-Silver", (0x51, 0x804): "Kryo-4XX-Gold", (0x51, 0x805): "Kryo-4XX-Silver",
    (0x51, 0xC00): "Falkor", (0x51, 0xC01): "Saphira",
    (0x61, 0x022): "Icestorm-M1", (0x61, 0x023): "Firestorm-M1", (0x61, 0x024): "Icestorm-M1-Pro",
    (0x61, 0x025): "Firestorm-M1-Pro", (0x61, 0x028): "Icestorm-M1-Max", (0x61, 0x029): "Firestorm-M1-Max",
    (0x61, 0x032): "Blizzard-M2", (0x61, 0x033): "Avalanche-M2",
    (0xC0, 0xAC3): "Ampere-1", (0xC0, 0xAC4): "Ampere-1a",
}

# Lines naming the CPU where the kernel prints one (x86 ``model name``; some ARM kernels ``Hardware``; MIPS
# ``cpu model``): read in file order, first one wins, as before board identity existed.
_NAME_KEYS = ("model name", "hardware", "cpu model")
_DEVICE_TREE_MODELS = ("proc/device-tree/model", "sys/firmware/devicetree/base/model")
_CPUFREQ_MAX = "sys/devices/system/cpu/cpu{n}/cpufreq/cpuinfo_max_freq"  # kHz
_CPUFREQ_GOVERNOR = "sys/devices/system/cpu/cpu{n}/cpufreq/scaling_governor"


def is_arm(arch: str) -> bool:
    """True when ``arch`` (a ``platform.machine()`` value, any case) is an ARM architecture."""
    return arch.lower() in ARM_ARCHES


def is_arm_host() -> bool:
    """True when this machine is an ARM machine."""
    return is_arm(platform.machine())


@dataclass(frozen=True)
class CpuDescription:
    """What ``/proc/cpuinfo``, the device tree and cpufreq say about a machine's CPU.

    Attributes:
        cores: ``(core name, count)`` per core type in the order the kernel lists the cores (ARM only; empty
            where cpuinfo has no ``CPU part`` lines).
        name: the first ``model name``/``Hardware``/``cpu model`` line's value, if any.
        board_model: the board's model (device tree, else, where cores were decoded, cpuinfo's ``Model``
            line, else its ``Hardware`` line), if any.
        max_mhz: the highest ``cpuinfo_max_freq`` of any core, in MHz, where cpufreq is readable.
        governors: the cores' cpufreq governors, distinct, in core order.
        signature: ``"x86 family F model M stepping S"`` from cpuinfo's numeric lines (x86 only; None
            elsewhere): VMs often show only ``AMD EPYC`` as the model name, and two EPYC generations differ
            by a third in speed behind that same name.
    """

    cores: tuple[tuple[str, int], ...] = ()
    name: str | None = None
    board_model: str | None = None
    max_mhz: int | None = None
    governors: tuple[str, ...] = ()
    signature: str | None = None

    @property
    def cpu_model(self) -> str | None:
        """``"4x Cortex-A72 (Raspberry Pi 4 Model B Rev 1.4)"`` on ARM, the ``model name`` elsewhere, or None."""
        if not self.cores:
            return self.name
        cores = " + ".join(f"{n}x {core}" for core, n in self.cores)
        return f"{cores} ({self.board_model})" if self.board_model else cores


def parse_cpuinfo(text: str) -> list[dict[str, str]]:
    """``/proc/cpuinfo`` as blocks (separated by blank lines) of ``{lower-case key: value}``.

    Args:
        text: the file's text.

    Returns:
        One dict per non-empty block, keys stripped and lower-cased, values stripped.
    """
    blocks: list[dict[str, str]] = []
    for chunk in re.split(r"\n\s*\n", text):
        block = {}
        for line in chunk.splitlines():
            if ":" in line:
                key, value = line.split(":", 1)
                block.setdefault(key.strip().lower(), value.strip())
        if block:
            blocks.append(block)
    return blocks


def _hex(value: str | None) -> int | None:
    try:
        return int(value, 16) if value else None
    except ValueError:
        return None


def _core_name(block: Mapping[str, str]) -> str:
    """The core's name from its implementer and part codes; unknown codes are spelled out."""
    impl, part = _hex(block.get("cpu implementer")), _hex(block.get("cpu part"))
    if impl is not None and part is not None and (impl, part) in ARM_PARTS:
        return ARM_PARTS[(impl, part)]
    vendor = ARM_IMPLEMENTERS.get(impl, f"implementer {block.get('cpu implementer', '?')}") \
        if impl is not None else "unknown implementer"
    return f"{vendor} part {block.get('cpu part', '?')}"


def _decode_cores(blocks: list[dict[str, str]]) -> tuple[tuple[str, int], ...]:
    counts: dict[str, int] = {}  # insertion order = the kernel's core order
    for block in blocks:
        if "cpu part" in block:
            name = _core_name(block)
            counts[name] = counts.get(name, 0) + 1
    return tuple(counts.items())


def _first_name_line(text: str) -> str | None:
    for line in text.splitlines():
        if line.lower().startswith(_NAME_KEYS) and ":" in line:
            return line.split(":", 1)[1].strip()
    return None


def _clean(text: str | None) -> str | None:
    """A device-tree string without its trailing NUL and whitespace; None when empty."""
    value = (text or "").replace("\x00", " ").strip()
    return value or None


def describe_cpu(cpuinfo: str, *, device_tree_model: str | None = None,
                 max_freq_khz: Mapping[int, int] | None = None,
                 governors: Mapping[int, str] | None = None) -> CpuDescription:
    """Describe a CPU from the texts Linux gives (pure: no file is read).

    Args:
        cpuinfo: the text of ``/proc/cpuinfo``.
        device_tree_model: the text of ``/proc/device-tree/model`` (NUL-terminated as the kernel gives it),
            or None where there is no device tree.
        max_freq_khz: ``cpuinfo_max_freq`` (kHz) per core number, where readable.
        governors: ``scaling_governor`` per core number, where readable.

    Returns:
        The :class:`CpuDescription`; its ``cpu_model`` is what a latency table's identity records.
    """
    blocks = parse_cpuinfo(cpuinfo)
    cores = _decode_cores(blocks)
    merged: dict[str, str] = {}
    for block in blocks:
        for key, value in block.items():
            merged.setdefault(key, value)
    board = _clean(device_tree_model)
    if board is None and cores:  # x86's cpuinfo has a numeric ``model`` line: read these on ARM only
        # Raspberry Pi kernels print ``Model``; older ARM kernels only ``Hardware`` (the SoC).
        board = _clean(merged.get("model")) or _clean(merged.get("hardware"))
    freqs = [f for f in (max_freq_khz or {}).values() if f > 0]
    govs = tuple(dict.fromkeys(g.strip() for _, g in sorted((governors or {}).items()) if g.strip()))
    return CpuDescription(cores=cores, name=_first_name_line(cpuinfo), board_model=board,
                          max_mhz=round(max(freqs) / 1000) if freqs else None, governors=govs,
                          signature=None if cores else _x86_signature(merged))


def _x86_signature(merged: Mapping[str, str]) -> str | None:
    """``"x86 family 26 model 2 stepping 1"`` where cpuinfo has all three numeric lines (x86), else None."""
    parts = [merged.get(k, "").strip() for k in ("cpu family", "model", "stepping")]
    if not all(p.isdigit() for p in parts):
        return None
    return "x86 family {} model {} stepping {}".format(*parts)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def read_cpu_description(root: str | Path = "/") -> CpuDescription:
    """Read this machine's (or a copy's under ``root``) cpuinfo, device-tree model and cpufreq files.

    Args:
        root: the file-system root to read under (tests pass a folder laid out like ``/``).

    Returns:
        :func:`describe_cpu` of what was readable (an empty description where nothing was).
    """
    base = Path(root)
    cpuinfo = _read(base / "proc/cpuinfo") or ""
    model = next((t for t in (_read(base / p) for p in _DEVICE_TREE_MODELS) if t), None)
    max_freq: dict[int, int] = {}
    governors: dict[int, str] = {}
    for cpu_dir in glob.glob(str(base / "sys/devices/system/cpu/cpu[0-9]*")):
        n = int(re.sub(r"\D", "", Path(cpu_dir).name) or 0)
        khz = _read(base / _CPUFREQ_MAX.format(n=n))
        if khz and khz.strip().isdigit():
            max_freq[n] = int(khz.strip())
        gov = _read(base / _CPUFREQ_GOVERNOR.format(n=n))
        if gov:
            governors[n] = gov
    return describe_cpu(cpuinfo, device_tree_model=model, max_freq_khz=max_freq, governors=governors)


_CACHE_DIR = "sys/devices/system/cpu/cpu0/cache"
_SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}  # sysfs cache sizes: "48K", "2048K", "32M"


def read_llc_bytes(root: str | Path = "/") -> int | None:
    """The last-level cache of cpu0 in bytes (the highest ``level`` of its sysfs cache entries, the largest
    there), or None where sysfs does not say (macOS, containers without /sys, some boards). A VM reports
    what its hypervisor passes through (this project's VM: the host's whole 480 MB L3)."""
    best: tuple[int, int] | None = None
    for d in glob.glob(str(Path(root) / _CACHE_DIR / "index[0-9]*")):
        level, size = _read(Path(d) / "level"), _read(Path(d) / "size")
        m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)\s*", size or "")
        if not (level and level.strip().isdigit() and m):
            continue
        cand = (int(level.strip()), int(m.group(1)) * _SIZE_UNITS[m.group(2)])
        best = cand if best is None or cand > best else best
    return best[1] if best and best[1] > 0 else None


def cpu_model(description: CpuDescription | None = None) -> str:
    """The CPU as a latency table records it.

    Decoded ARM cores and the board model where cpuinfo has ``CPU part`` lines (see :func:`describe_cpu`),
    else the ``model name`` (``Hardware``, ``cpu model``) line, else what ``platform`` says.

    Args:
        description: a description to use instead of this machine's (:func:`read_cpu_description`).
    """
    desc = description if description is not None else read_cpu_description()
    return desc.cpu_model or platform.processor() or platform.machine() or "unknown"


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


def host_identity(*, device: str, threads: int, batch: int,
                  cpu: CpuDescription | None = None) -> dict[str, Any]:
    """The host half of a backend identity (CPU model, OS, arch, cores, Python and torch versions).

    Args:
        device: the device kind recorded (``cpu``, ``gpu``, ``arm``).
        threads: intra-op threads of the backend.
        batch: the backend's batch size.
        cpu: the CPU description to record (default: this machine's, :func:`read_cpu_description`).

    Returns:
        A dict with ``device cpu_model cpu_count os arch python torch_version threads batch``, plus, where
        known, ``cpu_cores`` (core name -> count, ARM), ``board_model``, ``cpu_max_mhz`` and
        ``cpu_governor`` (provenance: compared only through ``cpu_model``, which includes cores and board),
        ``cpu_signature`` (x86 family/model/stepping; compared where both sides record it) and
        ``llc_bytes`` (:func:`read_llc_bytes`; sizes a new table's reference probe, never compared).
    """
    desc = cpu if cpu is not None else read_cpu_description()
    ident: dict[str, Any] = {
        "device": device,
        "cpu_model": cpu_model(desc),
        "cpu_count": os.cpu_count() or 0,
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "python": platform.python_version(),
        "torch_version": torch_version(),
        "threads": threads,
        "batch": batch,
    }
    extras = {"cpu_cores": dict(desc.cores) or None, "board_model": desc.board_model,
              "cpu_max_mhz": desc.max_mhz, "cpu_governor": "/".join(desc.governors) or None,
              "cpu_signature": desc.signature,
              "llc_bytes": read_llc_bytes() if cpu is None else None}
    ident.update({k: v for k, v in extras.items() if v is not None})
    return ident
