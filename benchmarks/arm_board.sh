#!/usr/bin/env bash
# An emulated aarch64 board for the board agent (issue 15): a Debian bookworm arm64 root filesystem run
# through qemu-user-static + binfmt_misc, with the agent installed as the README tells a board owner.
#
#   sudo benchmarks/arm_board.sh setup   # tools, binfmt, arm64 rootfs (debootstrap), agent install (~10-20 min)
#   sudo benchmarks/arm_board.sh start   # `nas agent` inside the guest, on 127.0.0.1:$NAS_ARM_PORT
#   sudo benchmarks/arm_board.sh build   # host: build-latency-table --device arm -> validate-table -> predict
#   sudo benchmarks/arm_board.sh readme  # the README's board section, as a board owner types it (below)
#   sudo benchmarks/arm_board.sh stop    # stop the agent
#   sudo benchmarks/arm_board.sh clean   # stop, delete the board (rootfs and its work files)
#
# `build` runs the host side with the Python that has the project's dependencies (the active venv's
# `python3`, or $NAS_PYTHON) and this checkout's `nas` package first on the path; it starts the agent if it
# is not running, and writes benchmarks/results/arm_board.json (phase times, disk, the table's identity).
#
# What it proves: the agent protocol end to end and that the aarch64 install (PyPI's aarch64 wheels of
# numpy/onnxruntime/onnx, the package with --no-deps) works. Not ARM speed: every instruction is emulated
# (the tiny space's blocks take milliseconds here, microseconds on a real board).
#
# Why the guest needs two tweaks: qemu-user passes the host's x86 /proc/cpuinfo through, and onnxruntime's
# CPU detection segfaults at import on it, so an arm64-format cpuinfo (Neoverse-N1, as on AWS Graviton2) is
# bind-mounted over it; and QEMU_CPU=neoverse-n1 runs onnxruntime ~12x faster than qemu's default `max` CPU
# (issue 15: 0.5x preset 422 ms vs 5.6 s per run).
#
# Networking: the agent listens on 127.0.0.1 only; setup reaches only Debian's archive (debootstrap's
# default mirror, or $NAS_ARM_MIRROR) and PyPI (pip's default index).
#
# Environment: NAS_ARM_BOARD (board folder, default /var/tmp/nas-arm-board), NAS_ARM_PORT (default 18765),
# NAS_ARM_MIRROR (Debian mirror URL, default debootstrap's), NAS_PYTHON (host Python, default python3).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Outside the repository: the rootfs is ~1 GB of root-owned files (device nodes, setuid binaries) that must
# not be seen by git, pytest collection or copies of the working tree; /var/tmp survives a reboot (/tmp may
# be a tmpfs that does not) and is where Debian keeps large temporary trees.
BOARD=${NAS_ARM_BOARD:-/var/tmp/nas-arm-board}
ROOTFS=$BOARD/rootfs
WORK=$BOARD/work
PORT=${NAS_ARM_PORT:-18765}
SUITE=bookworm
QEMU_CPU_MODEL=neoverse-n1
GUEST_VENV=/root/nas-venv            # the README's ~/nas-venv for the guest's root user
GUEST_SRC=/root/nas                  # the README's `git clone ... nas`
LABEL=emulated-neoverse-n1
AGENT_MAX_SECONDS=600                # emulation: a request takes ~1 min (issue 15), the default cap is 120 s
RESULTS=$REPO/benchmarks/results/arm_board.json
HOST_PY=${NAS_PYTHON:-python3}

say() { printf 'arm_board: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot, mount and binfmt_misc need it)"; }
now() { date +%s; }

ensure_tools() {
    if ! command -v debootstrap >/dev/null || ! command -v qemu-aarch64-static >/dev/null \
            || ! command -v update-binfmts >/dev/null; then
        say "installing qemu-user-static debootstrap binfmt-support"
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y qemu-user-static debootstrap binfmt-support
    fi
}

enable_binfmt() {
    [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    update-binfmts --enable qemu-aarch64 || true   # "already enabled" is not an error here
    grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null \
        || die "binfmt_misc has no enabled qemu-aarch64 entry; aarch64 binaries cannot run"
}

# An arm64 /proc/cpuinfo for the guest: one entry per host core, laid out as a Neoverse-N1 kernel prints it
# (AWS Graviton2: implementer 0x41 = Arm, part 0xd0c = Neoverse-N1, r3p1).
write_cpuinfo() {
    local n i
    n=$(nproc)
    : > "$BOARD/cpuinfo"
    for ((i = 0; i < n; i++)); do
        printf 'processor\t: %d\nBogoMIPS\t: 243.75\n' "$i"
        printf 'Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs\n'
        printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n'
    done >> "$BOARD/cpuinfo"
}

# Runs "$@" inside the guest, in a private mount namespace (so /proc, /dev, /sys and the cpuinfo bind vanish
# with the process and never pile up on the host). Internal: `arm_board.sh __guest CMD...`.
in_guest() { unshare --mount --propagation private -- "$0" __guest "$@"; }

guest_exec() {
    mount -t proc proc "$ROOTFS/proc"
    mount --bind "$BOARD/cpuinfo" "$ROOTFS/proc/cpuinfo"
    mount --rbind /dev "$ROOTFS/dev"
    mount --rbind /sys "$ROOTFS/sys"
    # QEMU_CPU must survive `env -i`: every exec inside the guest starts a new qemu that reads it.
    exec chroot "$ROOTFS" /usr/bin/env -i HOME=/root LANG=C.UTF-8 QEMU_CPU="$QEMU_CPU_MODEL" \
        PATH="$GUEST_VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"
}

make_rootfs() {
    [ -e "$ROOTFS/.nas-rootfs-done" ] && { say "rootfs exists: $ROOTFS"; return; }
    rm -rf "$ROOTFS"
    mkdir -p "$ROOTFS"
    say "debootstrap $SUITE arm64 (first stage, host tools) -> $ROOTFS"
    # shellcheck disable=SC2086  # NAS_ARM_MIRROR empty = debootstrap's default mirror
    debootstrap --arch=arm64 --variant=minbase --foreign --include=python3,python3-venv,ca-certificates \
        "$SUITE" "$ROOTFS" ${NAS_ARM_MIRROR:-}
    say "debootstrap second stage (emulated arm64 dpkg)"
    QEMU_CPU="$QEMU_CPU_MODEL" chroot "$ROOTFS" /debootstrap/debootstrap --second-stage
    touch "$ROOTFS/.nas-rootfs-done"
}

# The guest's network view: the host's resolver, and the CAs the host trusts beyond Debian's (a
# TLS-inspecting proxy's), so pip in the guest reaches PyPI the way pip on the host does.
configure_guest() {
    cp -L /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$ROOTFS/usr/local/share/ca-certificates/"
        in_guest update-ca-certificates >/dev/null
        printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$ROOTFS/etc/pip.conf"
    fi
}

# The working tree (tracked and untracked-but-not-ignored files), as `git clone` would give a board owner.
tree_tar() { (cd "$REPO" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -); }
tree_hash() { tree_tar | sha256sum | cut -d' ' -f1; }
copy_tree() {
    rm -rf "${ROOTFS:?}$GUEST_SRC"
    mkdir -p "$ROOTFS$GUEST_SRC"
    tree_tar | tar -C "$ROOTFS$GUEST_SRC" -xf -
}

# The README's "1. Install on the board", verbatim apart from the paths.
install_agent() {
    copy_tree
    [ -x "$ROOTFS$GUEST_VENV/bin/python" ] || in_guest python3 -m venv "$GUEST_VENV"
    in_guest pip install --no-deps "$GUEST_SRC"
    tree_hash > "$WORK/installed_tree"
    in_guest pip install numpy onnxruntime onnx
    in_guest python -c "import onnxruntime, onnx, numpy, platform; print('guest', platform.machine(), \
'onnxruntime', onnxruntime.__version__, 'onnx', onnx.__version__, 'numpy', numpy.__version__)"
}

cmd_setup() {
    need_root
    local t0 t1 t2 t3
    mkdir -p "$BOARD" "$WORK"
    t0=$(now); ensure_tools; enable_binfmt
    t1=$(now); make_rootfs; write_cpuinfo; configure_guest
    t2=$(now); install_agent
    t3=$(now)
    printf '{"tools_s": %d, "rootfs_s": %d, "install_s": %d}\n' $((t1 - t0)) $((t2 - t1)) $((t3 - t2)) \
        > "$WORK/setup_times.json"
    say "setup done in $((t3 - t0)) s (tools $((t1 - t0)) s, rootfs $((t2 - t1)) s, install $((t3 - t2)) s)"
}

agent_running() { [ -f "$WORK/agent.pid" ] && kill -0 "$(cat "$WORK/agent.pid")" 2>/dev/null; }

cmd_start() {
    need_root
    [ -e "$ROOTFS/.nas-rootfs-done" ] || die "no board at $BOARD; run: $0 setup"
    agent_running && { say "agent already running (pid $(cat "$WORK/agent.pid"))"; return; }
    enable_binfmt
    write_cpuinfo
    if [ "$(tree_hash)" != "$(cat "$WORK/installed_tree" 2>/dev/null)" ]; then
        say "working tree changed since the guest's install: reinstalling the package (as after a \`git pull\`)"
        copy_tree
        in_guest pip install --no-deps --force-reinstall "$GUEST_SRC" >"$WORK/reinstall.log" 2>&1 \
            || { cat "$WORK/reinstall.log" >&2; die "reinstalling the package in the guest failed"; }
        tree_hash > "$WORK/installed_tree"
    fi
    nohup "$0" __agent >"$WORK/agent.log" 2>&1 &
    echo $! > "$WORK/agent.pid"
    local i
    for ((i = 0; i < 300; i++)); do   # imports under emulation take tens of seconds
        grep -q "listening on" "$WORK/agent.log" 2>/dev/null && break
        agent_running || { cat "$WORK/agent.log" >&2; die "agent exited during start-up"; }
        sleep 1
    done
    grep -q "listening on" "$WORK/agent.log" || die "agent not listening after 300 s; see $WORK/agent.log"
    say "agent up on 127.0.0.1:$PORT (pid $(cat "$WORK/agent.pid")); token in $ROOTFS/root/.config/nas/agent_token"
}

cmd_stop() {
    if agent_running; then
        local pid; pid=$(cat "$WORK/agent.pid")
        kill "$pid"; for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        say "agent stopped"
    fi
    rm -f "$WORK/agent.pid"
}

cmd_clean() {
    need_root
    cmd_stop
    grep -q " $ROOTFS/" /proc/mounts && die "something is still mounted under $ROOTFS; unmount it first"
    rm -rf "$BOARD"
    say "removed $BOARD"
}

# The tiny space the build measures: 32 px, 5 blocks (stem, 2 down units, 1 basic unit, head), 2 networks.
# Each request to the emulated agent takes about a minute (issue 15: ~57 s, mostly the reference probe), so
# 5 blocks + 1 verify + 2 calibration networks + 3 validation networks keep the build near 10-15 minutes.
write_space() {
    cat > "$WORK/tiny_arm.toml" <<'TOML'
name = "arm_board_tiny"
resolution = [32]
stem_channels = [8]
head_channels = [32]
[[stages]]
depth = [1, 2]
width = [16]
split_ratio = [0.5]
se = [false]
kernel = [3]
[[stages]]
depth = [1]
width = [32]
split_ratio = [0.5]
se = [false]
kernel = [3]
TOML
    host_py -c "from nas.space import load_space; import sys; \
sys.stdout.write(load_space('$WORK/tiny_arm.toml').largest().to_json())" > "$WORK/config.json"
}

# The host's Python with this checkout's package first on the path.
host_py() { PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$HOST_PY" "$@"; }
host_nas() { host_py -m nas "$@"; }

# benchmarks/results/arm_board.json: phase times, disk, the table's identity and figures.
write_results() {
    local rootfs_bytes venv_bytes
    rootfs_bytes=$(du -sb "$ROOTFS" | cut -f1)
    venv_bytes=$(du -sb "$ROOTFS$GUEST_VENV" | cut -f1)
    mkdir -p "$(dirname "$RESULTS")"
    WORK="$WORK" RESULTS="$RESULTS" ROOTFS_BYTES="$rootfs_bytes" VENV_BYTES="$venv_bytes" \
    QEMU_VERSION="$(qemu-aarch64-static --version | head -1)" QEMU_CPU_MODEL="$QEMU_CPU_MODEL" \
    host_py - "$@" <<'PY'
import json, os, platform, sys, time
from pathlib import Path
from nas.backends.host import cpu_model
w = Path(os.environ["WORK"])
load = lambda name: json.loads((w / name).read_text()) if (w / name).exists() else None
table = json.loads((w / "table.json").read_text())
ident = table["identity"]
build_s, validate_s, predict_s, start_s = (int(x) for x in sys.argv[1:5])
out = {
    "what": "emulated aarch64 board (qemu-user + Debian bookworm arm64 rootfs): build -> validate -> predict "
            "over loopback; proves the protocol and the aarch64 install, not ARM speed",
    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "host": {"cpu_model": cpu_model(), "arch": platform.machine(), "cpus": os.cpu_count()},
    "qemu": os.environ["QEMU_VERSION"], "qemu_cpu": os.environ["QEMU_CPU_MODEL"],
    "seconds": {**(load("setup_times.json") or {}), "agent_start_s": start_s, "build_s": build_s,
                "validate_s": validate_s, "predict_s": predict_s},
    "disk_bytes": {"rootfs": int(os.environ["ROOTFS_BYTES"]), "guest_venv": int(os.environ["VENV_BYTES"])},
    "table": {"entries": len(table["entries"]), "build_seconds": table.get("build_seconds"),
              "identity": {k: ident.get(k) for k in ("device", "arch", "cpu_model", "cpu_cores", "cpu_count",
                                                     "runtime", "runtime_version", "board", "measured_via")}},
    "validate": load("validate.json"), "predict": load("predict.json"),
}
secs = out["seconds"]
secs["total_s"] = sum(v for v in secs.values() if isinstance(v, int))
Path(os.environ["RESULTS"]).write_text(json.dumps(out, indent=2) + "\n")
print(json.dumps({"seconds": secs, "disk_mb": {k: round(v / 2**20) for k, v in out["disk_bytes"].items()},
                  "identity": out["table"]["identity"]}, indent=2))
PY
}

# `readme`: the README's "Measure on an ARM board" steps run as a board owner would type them, on the board
# made by `setup`. The guest gets what a Raspberry Pi OS image has before step 1 (a user `pi` who may sudo);
# then every command line of the README's step-1 block runs as `pi` in a login shell, with `<repository URL>`
# the path of a git repository of this working tree inside the guest; step 2's command line starts the agent as
# `pi`; step 3's lines run on the host, except the ssh tunnel (the chroot shares the host's loopback, so
# 127.0.0.1:8765 is already the agent) and with `ssh pi@raspberrypi.local CMD` run as `pi` in the guest.
# Two additions, both said here: `--space` (the default space's 1,030 blocks would take days under emulation)
# and `--samples 3` for validate-table. Log and results: $WORK/readme/.
README=$REPO/README.md
SELF=$(readlink -f "${BASH_SOURCE[0]}")
README_PORT=8765
GUEST_REPO=/srv/nas.git

# The command lines of the first ```bash block after the heading "$1" (comments and blank lines dropped).
readme_block() {
    awk -v head="$1" '$0 == head {found = 1; next}
        found && /^```bash/ {inblock = 1; next}
        inblock && /^```/ {exit}
        inblock {sub(/[ \t]+#.*$/, ""); if ($0 !~ /^[ \t]*(#|$)/) print}' "$README"
}

as_pi() { in_guest /usr/sbin/runuser -l pi -c "$1"; }

# sudo in the guest needs setuid to work through qemu: binfmt_misc's C flag (credentials from the binary, not
# the interpreter). Debian registers qemu-aarch64 with P F only, so re-register the same entry with C added.
enable_binfmt_suid() {
    local f=/proc/sys/fs/binfmt_misc/qemu-aarch64 interp magic mask flags
    flags=$(sed -n 's/^flags: //p' "$f")
    case "$flags" in *C*) return ;; esac
    interp=$(sed -n 's/^interpreter //p' "$f")
    magic=$(sed -n 's/^magic //p' "$f" | sed 's/\(..\)/\\x\1/g')
    mask=$(sed -n 's/^mask //p' "$f" | sed 's/\(..\)/\\x\1/g')
    echo -1 > "$f"
    printf ':qemu-aarch64:M::%s:%s:%s:%sC\n' "$magic" "$mask" "$interp" "$flags" > /proc/sys/fs/binfmt_misc/register
    say "binfmt qemu-aarch64 re-registered with flags ${flags}C (setuid sudo in the guest)"
}

cmd_readme() {
    need_root
    [ -e "$ROOTFS/.nas-rootfs-done" ] || die "no board at $BOARD; run: $0 setup"
    host_py -c "import nas.cli, onnx, torch" 2>/dev/null \
        || die "the host side needs the project's dependencies: activate its venv or set NAS_PYTHON"
    enable_binfmt; enable_binfmt_suid; write_cpuinfo
    local R=$WORK/readme t0 t1 t2 t3 t4 line
    rm -rf "$R"; mkdir -p "$R/host"
    t0=$(now)
    say "board image: user pi with sudo (what a Raspberry Pi OS image has)"
    in_guest sh -c 'command -v sudo >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q sudo' \
        >"$R/image.log" 2>&1 || { cat "$R/image.log" >&2; die "installing sudo in the guest failed"; }
    in_guest sh -c 'id pi >/dev/null 2>&1 || useradd -m -s /bin/bash pi; echo "pi ALL=(ALL) NOPASSWD:ALL" \
        > /etc/sudoers.d/pi; rm -rf /home/pi/nas-venv /home/pi/nas /home/pi/.config/nas'
    rm -rf "${ROOTFS:?}$GUEST_REPO"; mkdir -p "$ROOTFS$GUEST_REPO"
    tree_tar | tar -C "$ROOTFS$GUEST_REPO" -xf -
    (cd "$ROOTFS$GUEST_REPO" && git init -q && git add -A && git -c user.name=board -c user.email=board@localhost \
        commit -qm "working tree" && chmod -R a+rX .)
    in_guest chown -R pi:pi "$GUEST_REPO"  # git refuses a repository of another owner ("dubious ownership")
    say "step 1, as pi: the README's install lines"
    while IFS= read -r line; do
        say "  pi\$ $line"
        echo "pi\$ $line" >> "$R/step1.log"
        # one login shell per line; the venv that an earlier line activated is active again, as in the
        # owner's terminal
        as_pi "cd ~ && if [ -f ~/nas-venv/bin/activate ]; then . ~/nas-venv/bin/activate; fi && $line" \
            >>"$R/step1.log" 2>&1 || { tail -20 "$R/step1.log" >&2; die "README step 1 failed at: $line"; }
    done < <(readme_block '### 1. Install on the board' | sed "s|<repository URL>|file://$GUEST_REPO|g")
    t1=$(now)
    line=$(readme_block '### 2. Start the agent')
    say "step 2, as pi: $line"
    nohup "$0" __pi_agent "$line" >"$R/agent.log" 2>&1 &
    echo $! > "$WORK/agent.pid"
    trap cmd_stop EXIT  # the agent goes with the script, whichever way it ends
    for _ in $(seq 300); do grep -q "listening on" "$R/agent.log" 2>/dev/null && break; sleep 1; done
    grep -q "listening on" "$R/agent.log" || { cat "$R/agent.log" >&2; die "agent not listening after 300 s"; }
    t2=$(now)
    say "step 3, on the host"
    write_space
    while IFS= read -r line; do
        case "$line" in
            ssh\ -N*) say "  skipped (the chroot shares the host's loopback): $line"; continue ;;
        esac
        line=$(printf '%s' "$line" | sed "s|ssh pi@raspberrypi.local |$SELF __pi_cmd |")
        case "$line" in
            nas\ build-latency-table*) line="$line --space $WORK/tiny_arm.toml" ;;
            nas\ validate-table*) line="$line --samples 3" ;;
        esac
        say "  host\$ $line"
        echo "host\$ $line" >> "$R/step3.log"
        (cd "$R/host" && PATH="$(dirname "$(command -v "$HOST_PY")"):$PATH" \
            PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" bash -ec "nas() { \"$HOST_PY\" -m nas \"\$@\"; }; \
            if [ -f $R/host/env ]; then source $R/host/env; fi; $line; declare -px NAS_AGENT_TOKEN > $R/host/env 2>/dev/null || true") \
            >>"$R/step3.log" 2>&1 || { tail -20 "$R/step3.log" >&2; die "README step 3 failed at: $line"; }
        case "$line" in nas\ build-latency-table*) t3=$(now) ;; esac
    done < <(readme_block '### 3. Build the table from the host')
    t4=$(now)
    cmd_stop
    printf '{"step1_install_s": %d, "step2_agent_start_s": %d, "step3_build_s": %d, "step3_validate_s": %d}\n' \
        $((t1 - t0)) $((t2 - t1)) $((t3 - t2)) $((t4 - t3)) > "$R/times.json"
    R="$R" OUT="$REPO/benchmarks/results/arm_board_readme.json" host_py - <<'PY'
import json, os, time
from pathlib import Path
r = Path(os.environ["R"])
table = json.loads((r / "host" / "latency_tables" / "pi4.json").read_text())
val = (table.get("validation") or {})
out = {"what": "the README's board section (steps 1-3) typed on the emulated board: benchmarks/arm_board.sh readme",
       "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": json.loads((r / "times.json").read_text()),
       "table": {"entries": len(table["entries"]), "build_seconds": table.get("build_seconds"),
                 "identity": {k: table["identity"].get(k) for k in ("device", "arch", "cpu_model", "cpu_count",
                                                                    "runtime_version", "board", "measured_via")}},
       "validation": {k: val.get(k) for k in ("mape_pct", "within_5_pct", "within_10_pct", "samples") if k in val},
       "step1_lines": [ln[4:] for ln in (r / "step1.log").read_text().splitlines() if ln.startswith("pi$ ")],
       "step3_lines": [ln[6:] for ln in (r / "step3.log").read_text().splitlines() if ln.startswith("host$ ")]}
Path(os.environ["OUT"]).write_text(json.dumps(out, indent=2) + "\n")
PY
    say "README steps done: $(cat "$R/times.json"); logs in $R"
}

cmd_build() {
    need_root
    host_py -c "import nas.cli, onnx, torch" 2>/dev/null \
        || die "the host side needs the project's dependencies: activate its venv or set NAS_PYTHON"
    local t0 t1 t2 t3 t4 remote=127.0.0.1:$PORT
    t0=$(now); cmd_start; t1=$(now)
    write_space
    NAS_AGENT_TOKEN=$(cat "$ROOTFS/root/.config/nas/agent_token")
    export NAS_AGENT_TOKEN
    say "build-latency-table --device arm --remote $remote (a minute or so per request under emulation)"
    host_nas build-latency-table --device arm --remote "$remote" --space "$WORK/tiny_arm.toml" \
        --calibration-nets 2 --out "$WORK/table.json" --overwrite --json > "$WORK/build.json"
    t2=$(now)
    say "validate-table --remote $remote"
    host_nas validate-table "$WORK/table.json" --remote "$remote" --samples 3 --json > "$WORK/validate.json"
    t3=$(now)
    host_nas predict "$WORK/config.json" --table "$WORK/table.json" --json > "$WORK/predict.json"
    t4=$(now)
    write_results $((t2 - t1)) $((t3 - t2)) $((t4 - t3)) $((t1 - t0))
    say "results in $RESULTS"
}

case "${1:-}" in
    setup) cmd_setup ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    build) cmd_build ;;
    readme) cmd_readme ;;
    clean) cmd_clean ;;
    __guest) shift; guest_exec "$@" ;;
    __agent) exec unshare --mount --propagation private -- "$0" __guest \
                 nas agent --port "$PORT" --label "$LABEL" --max-seconds "$AGENT_MAX_SECONDS" ;;
    __pi_agent) exec unshare --mount --propagation private -- "$0" __guest /usr/sbin/runuser -l pi -c \
                    ". ~/nas-venv/bin/activate && $2" ;;
    __pi_cmd) shift; as_pi "$*" ;;
    *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
