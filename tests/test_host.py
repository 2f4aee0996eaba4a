"""Board identity: ARM cores decoded from /proc/cpuinfo, the board model, cpufreq, and the mismatch check.

The cpuinfo texts below follow the layout the Linux kernel prints on each board (arm64 ``show_cpuinfo``: one
block per core with ``CPU implementer``/``CPU part`` and no ``model name``; Raspberry Pi kernels append
``Revision``/``Serial``/``Model``). Serial numbers are made up.
"""

from __future__ import annotations

from pathlib import Path

from nas.backends.host import cpu_model, describe_cpu, host_identity, parse_cpuinfo, read_cpu_description
from nas.backends.identity import identity_diff


def _arm_block(n: int, *, features: str, implementer: str, variant: str, part: str, revision: int) -> str:
    return (f"processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: {implementer}\n"
            f"CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {revision}\n\n")


# Raspberry Pi 4 Model B, Raspberry Pi OS 64-bit: 4x Cortex-A72 r0p3, board named on a trailing Model line.
PI4 = "".join(_arm_block(n, features="fp asimd evtstrm crc32 cpuid", implementer="0x41", variant="0x0",
                         part="0xd08", revision=3) for n in range(4)) + (
    "Hardware\t: BCM2835\nRevision\t: d03114\nSerial\t\t: 10000000abcdef01\n"
    "Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n")

# AWS Graviton2 (c6g/m6g): Neoverse-N1 r3p1, no model line, no device tree (ACPI).
GRAVITON2 = "".join(_arm_block(n, features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp "
                               "cpuid asimdrdm lrcpc dcpop asimddp ssbs", implementer="0x41", variant="0x3",
                               part="0xd0c", revision=1) for n in range(4))

# NVIDIA Jetson AGX Orin: 12x Cortex-A78AE r0p1; the board is named by the device tree.
ORIN = "".join(_arm_block(n, features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                          "asimdrdm lrcpc dcpop asimddp uscat ilrcpc flagm paca pacg", implementer="0x41",
                          variant="0x0", part="0xd42", revision=1) for n in range(12))
ORIN_DT_MODEL = "NVIDIA Jetson AGX Orin Developer Kit\x00"

# NVIDIA Jetson AGX Xavier: 8x Carmel (NVIDIA's own core, implementer 0x4e, part 0x004).
XAVIER = "".join(_arm_block(n, features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                            "asimdrdm dcpop", implementer="0x4e", variant="0x0", part="0x004", revision=0)
                 for n in range(8))

# Rockchip RK3588 (big.LITTLE): cpu0-3 Cortex-A55, cpu4-7 Cortex-A76.
RK3588 = "".join(_arm_block(n, features="fp asimd", implementer="0x41", variant="0x2", part="0xd05", revision=0)
                 for n in range(4)) + "".join(
    _arm_block(n, features="fp asimd", implementer="0x41", variant="0x4", part="0xd0b", revision=0)
    for n in range(4, 8))

X86 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 23\nmodel\t\t: 49\n"
       "model name\t: AMD EPYC 7B12\nstepping\t: 0\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\n"
       "model\t\t: 49\nmodel name\t: AMD EPYC 7B12\n\n")


def test_raspberry_pi_4_cores_and_model_line():
    d = describe_cpu(PI4)
    assert d.cores == (("Cortex-A72", 4),)
    assert d.board_model == "Raspberry Pi 4 Model B Rev 1.4"  # the Model line wins over Hardware (the SoC)
    assert d.cpu_model == "4x Cortex-A72 (Raspberry Pi 4 Model B Rev 1.4)"


def test_graviton2_neoverse_n1_without_model_line():
    d = describe_cpu(GRAVITON2)
    assert d.cores == (("Neoverse-N1", 4),) and d.board_model is None and d.name is None
    assert d.cpu_model == "4x Neoverse-N1"


def test_jetson_orin_and_xavier_named_by_device_tree():
    orin = describe_cpu(ORIN, device_tree_model=ORIN_DT_MODEL)
    assert orin.cpu_model == "12x Cortex-A78AE (NVIDIA Jetson AGX Orin Developer Kit)"
    xavier = describe_cpu(XAVIER, device_tree_model="Jetson-AGX\x00")
    assert xavier.cores == (("Carmel", 8),) and xavier.cpu_model == "8x Carmel (Jetson-AGX)"


def test_big_little_cores_in_kernel_order_with_frequency_and_governor():
    khz = {n: 1800000 for n in range(4)} | {n: 2400000 for n in range(4, 8)}
    d = describe_cpu(RK3588, device_tree_model="Radxa ROCK 5B\x00", max_freq_khz=khz,
                     governors={n: "performance\n" for n in range(8)})
    assert d.cpu_model == "4x Cortex-A55 + 4x Cortex-A76 (Radxa ROCK 5B)"
    assert d.max_mhz == 2400 and d.governors == ("performance",)


def test_unknown_part_is_spelled_out_not_guessed():
    text = _arm_block(0, features="fp", implementer="0x41", variant="0x0", part="0xfff", revision=0)
    assert describe_cpu(text).cpu_model == "1x Arm part 0xfff"
    text = _arm_block(0, features="fp", implementer="0x99", variant="0x0", part="0x001", revision=0)
    assert describe_cpu(text).cpu_model == "1x implementer 0x99 part 0x001"


def test_x86_model_name_unchanged_and_numeric_model_line_ignored():
    d = describe_cpu(X86)
    assert d.cpu_model == "AMD EPYC 7B12" and d.cores == () and d.board_model is None
    assert parse_cpuinfo(X86)[0]["model"] == "49"


def test_read_cpu_description_from_a_file_system_root(tmp_path: Path):
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/cpuinfo").write_text(PI4)
    (tmp_path / "proc/device-tree/model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    for n in range(4):
        freq = tmp_path / f"sys/devices/system/cpu/cpu{n}/cpufreq"
        freq.mkdir(parents=True)
        (freq / "cpuinfo_max_freq").write_text("1800000\n")
        (freq / "scaling_governor").write_text("ondemand\n" if n else "performance\n")
    d = read_cpu_description(tmp_path)
    assert d.cpu_model == "4x Cortex-A72 (Raspberry Pi 4 Model B Rev 1.4)"
    assert d.max_mhz == 1800 and d.governors == ("performance", "ondemand")
    ident = host_identity(device="arm", threads=1, batch=1, cpu=d)
    assert ident["cpu_cores"] == {"Cortex-A72": 4} and ident["cpu_max_mhz"] == 1800
    assert ident["cpu_governor"] == "performance/ondemand" and ident["board_model"].startswith("Raspberry Pi 4")
    assert read_cpu_description(tmp_path / "nothing").cpu_model is None
    assert cpu_model(read_cpu_description(tmp_path / "nothing"))  # falls back to what platform says


def test_tables_from_boards_with_different_cores_mismatch():
    pi = host_identity(device="arm", threads=1, batch=1, cpu=describe_cpu(PI4))
    graviton = host_identity(device="arm", threads=1, batch=1, cpu=describe_cpu(GRAVITON2))
    diff = identity_diff(pi, graviton, sides=("table", "agent"))
    assert len(diff) == 1 and diff[0].startswith("cpu_model table '4x Cortex-A72")
    assert identity_diff(pi, host_identity(device="arm", threads=1, batch=1, cpu=describe_cpu(PI4))) == []
    orin = host_identity(device="arm", threads=1, batch=1, cpu=describe_cpu(ORIN, device_tree_model=ORIN_DT_MODEL))
    xavier = host_identity(device="arm", threads=1, batch=1, cpu=describe_cpu(XAVIER, device_tree_model="Jetson-AGX"))
    assert [d.split()[0] for d in identity_diff(orin, xavier)] == ["cpu_model"]


def test_x86_signature_tells_two_cpus_behind_the_same_vm_model_name_apart():
    # Two EPYC generations a VM shows as the same "AMD EPYC" (seen: a table built on one ran 32 % slower on
    # the other): family/model/stepping differ, and a table recording them is a mismatch on the other.
    zen2 = X86.replace("AMD EPYC 7B12", "AMD EPYC")
    zen5 = zen2.replace("cpu family\t: 23\nmodel\t\t: 49", "cpu family\t: 26\nmodel\t\t: 2")
    assert describe_cpu(zen2).signature == "x86 family 23 model 49 stepping 0"
    assert describe_cpu(zen5).signature == "x86 family 26 model 2 stepping 0"
    assert describe_cpu(PI4).signature is None  # ARM: the decoded cores already name the CPU
    a = host_identity(device="cpu", threads=1, batch=1, cpu=describe_cpu(zen2))
    b = host_identity(device="cpu", threads=1, batch=1, cpu=describe_cpu(zen5))
    assert a["cpu_model"] == b["cpu_model"] == "AMD EPYC"
    diff = identity_diff(a, b, sides=("table", "here"))
    assert len(diff) == 1 and diff[0].startswith("cpu_signature table 'x86 family 23")
    old = {k: v for k, v in a.items() if k != "cpu_signature"}  # a table from before the key existed
    assert identity_diff(old, b) == [] and identity_diff(b, old) == []
