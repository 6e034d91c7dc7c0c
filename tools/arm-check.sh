#!/usr/bin/env bash
# Install and run the agent on Debian bookworm for ARM, as a board would.
#
#   sudo tools/arm-check.sh [--arch arm64] [--arch armhf] [--demo-seconds 60]
#                           [--cache DIR] [--mirror URL]
#
# For each architecture (default: arm64, then armhf, the 64- and 32-bit bases
# of Raspberry Pi OS) it
#   1. builds a Debian bookworm root with debootstrap (minbase plus what a
#      Raspberry Pi OS Lite image has that matters here: systemd, sudo,
#      ca-certificates), once, cached in DIR (default /var/cache/entra-arm-check);
#   2. copies it to a fresh working root and, inside it through
#      qemu-user-static, follows README.md: `sudo apt-get update && sudo
#      apt-get full-upgrade -y`, copies the checkout over (as `scp -r` would:
#      the working tree less what git ignores) and runs
#      `sudo deploy/install.sh --extras display,gpio` in it;
#   3. checks the result: `entra-agent check-config` (with a profile, so it
#      reports the GPIO backend), an SPI display opened as far as a board
#      without /dev/spidev lets it (every module imports), `entra-agent
#      screens` (every PNG, and the layout compared with this machine's, on
#      Debian's Pillow too), `entra-agent demo` for --demo-seconds, and two
#      test files (tests/test_display.py, tests/test_button.py);
#   4. prints what pip compiled (with times), the time and peak memory of each
#      step, and PASS/FAIL; exits 1 if anything failed.
#
# Peak memory is the largest resident set of any process of the step as
# the host sees it: under qemu-user that includes the emulator and its
# translated code, so it overstates a real board (compare steps, not boards).
# Needs root (debootstrap, chroot, mounts) and binfmt_misc (it registers
# qemu's handlers if they are missing). Not part of CI: it takes many minutes.
set -euo pipefail

readonly PROG="arm-check.sh"
REPO="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
readonly REPO
CACHE="${ARM_CHECK_CACHE:-/var/cache/entra-arm-check}"
MIRROR="http://deb.debian.org/debian"
DEMO_SECONDS=60
ARCHES=()
# What a Raspberry Pi OS Lite image has beyond Debian's minbase, as far as
# the installer and README's commands are concerned.
readonly BASE_PACKAGES="systemd sudo ca-certificates"
readonly TEST_FILES="tests/test_display.py tests/test_button.py"

die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
say() { printf '%s: %s\n' "$PROG" "$*" >&2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --arch) [[ $# -ge 2 ]] || die "--arch needs arm64 or armhf"; ARCHES+=("$2"); shift 2 ;;
        --cache) [[ $# -ge 2 ]] || die "--cache needs a folder"; CACHE="$2"; shift 2 ;;
        --mirror) [[ $# -ge 2 ]] || die "--mirror needs a URL"; MIRROR="$2"; shift 2 ;;
        --demo-seconds) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || die "--demo-seconds needs a number"
                        DEMO_SECONDS="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
[[ ${#ARCHES[@]} -gt 0 ]] || ARCHES=(arm64 armhf)
[[ "$(id -u)" -eq 0 ]] || die "must run as root (debootstrap, chroot and mounts need it: sudo $0)"

qemu_name() {
    case "$1" in
        arm64) echo aarch64 ;;
        armhf|armel) echo arm ;;
        *) die "unsupported --arch '$1' (arm64 or armhf)" ;;
    esac
}

host_tools() {
    local missing=() tool
    for tool in debootstrap:debootstrap qemu-aarch64-static:qemu-user-static \
                update-binfmts:binfmt-support; do
        command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
    done
    # This machine's own Debian Pillow, to compare the layout with (step 3).
    /usr/bin/python3 -c 'import PIL, venv' 2>/dev/null || missing+=(python3-pil python3-venv)
    [[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || missing+=(fonts-dejavu-core)
    if [[ ${#missing[@]} -gt 0 ]]; then
        say "installing on this machine: ${missing[*]}"
        if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"; }; then
            die "apt-get could not install ${missing[*]}"
        fi
    fi
    if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
            || die "cannot mount binfmt_misc (a container needs it from its host: modprobe binfmt_misc)"
    fi
    local arch
    for arch in "${ARCHES[@]}"; do
        local q; q="$(qemu_name "$arch")"
        if [[ ! -e "/proc/sys/fs/binfmt_misc/qemu-$q" ]]; then
            update-binfmts --enable "qemu-$q" || die "cannot register qemu-$q with binfmt_misc"
        fi
    done
}

# -- measuring ------------------------------------------------------------

# run_measured LOG CMD...: runs CMD with its output (stdout and stderr) in LOG,
# each line stamped with seconds since the start; prints "RC SECONDS MAXRSS_KB".
run_measured() {
    local log="$1"; shift
    python3 - "$log" "$@" <<'EOF'
import resource, subprocess, sys, time
log = open(sys.argv[1], "w", encoding="utf-8")
start = time.monotonic()
proc = subprocess.Popen(sys.argv[2:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL)
for raw in proc.stdout:
    log.write(f"{time.monotonic() - start:8.1f} {raw.decode('utf-8', 'replace')}")
    log.flush()
rc = proc.wait()
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(rc, f"{time.monotonic() - start:.1f}", rss)
EOF
}

RESULTS=()      # "arch|step|PASS/FAIL|seconds|peak MB|note"
FAILED=0

# step ARCH ROOT NAME NOTE_FN COMMAND: run COMMAND (bash) in ROOT, record it.
step() {
    local arch="$1" root="$2" name="$3" command="$4" log out rc seconds rss verdict
    log="$CACHE/logs/$arch-$name.log"
    say "[$arch] $name: $command"
    out="$(run_measured "$log" chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive bash -c "cd /root && $command")"
    read -r rc seconds rss <<<"$out"
    verdict=PASS
    [[ "$rc" -eq 0 ]] || { verdict=FAIL; FAILED=1; tail -n 15 "$log" >&2; }
    RESULTS+=("$arch|$name|$verdict|$seconds|$((rss / 1024))|exit $rc")
    LAST_LOG="$log"
    return 0
}

note() {
    # Add a check of our own to the last step: note ARCH NAME OK DETAIL
    local arch="$1" name="$2" ok="$3" detail="$4"
    if [[ "$ok" -eq 1 ]]; then
        RESULTS+=("$arch|$name|PASS|||$detail")
    else
        RESULTS+=("$arch|$name|FAIL|||$detail"); FAILED=1
    fi
}

# -- roots ----------------------------------------------------------------

base_root() {
    local arch="$1" base="$CACHE/base-$1"
    if [[ ! -d "$base" ]]; then
        say "[$arch] debootstrap bookworm (once; cached in $base)"
        rm -rf -- "$base.tmp"
        debootstrap --arch="$arch" --variant=minbase bookworm "$base.tmp" "$MIRROR" \
            > "$CACHE/logs/$arch-debootstrap.log" 2>&1 \
            || { tail -n 20 "$CACHE/logs/$arch-debootstrap.log" >&2; die "debootstrap $arch failed"; }
        mv -- "$base.tmp" "$base"
    fi
    if [[ "$(cat "$base/.arm-check-base" 2>/dev/null)" != "$BASE_PACKAGES" ]]; then
        say "[$arch] adding to the base: $BASE_PACKAGES"
        with_mounts "$base" chroot "$base" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
            DEBIAN_FRONTEND=noninteractive bash -c \
            "apt-get update -q && apt-get install -y -q --no-install-recommends $BASE_PACKAGES && apt-get clean" \
            > "$CACHE/logs/$arch-base.log" 2>&1 \
            || { tail -n 20 "$CACHE/logs/$arch-base.log" >&2; die "could not add $BASE_PACKAGES to the $arch base"; }
        printf '%s' "$BASE_PACKAGES" > "$base/.arm-check-base"
    fi
}

MOUNTED=()
mount_all() {
    local root="$1"
    mount -t proc proc "$root/proc" && MOUNTED+=("$root/proc")
    mount -t sysfs sys "$root/sys" && MOUNTED+=("$root/sys")
    mount --bind /dev "$root/dev" && MOUNTED+=("$root/dev")
    mount -t devpts devpts "$root/dev/pts" -o newinstance,ptmxmode=0666 && MOUNTED+=("$root/dev/pts")
    mount -t tmpfs tmpfs "$root/run" && MOUNTED+=("$root/run")
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    # pip in the root trusts what pip here trusts (a network that inspects
    # TLS has its own CA in this machine's bundle, not in a fresh root's).
    cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/host-ca-certificates.crt"
    printf '[global]\ncert = /etc/ssl/host-ca-certificates.crt\n' > "$root/etc/pip.conf"
    # No service starts inside a chroot (apt's maintainer scripts ask this).
    printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"
}

unmount_all() {
    local i
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        umount -l -- "${MOUNTED[$i]}" 2>/dev/null || true
    done
    MOUNTED=()
}
trap unmount_all EXIT

with_mounts() {
    local root="$1"; shift
    mount_all "$root"
    local rc=0
    "$@" || rc=$?
    unmount_all
    return "$rc"
}

host_layout() {
    # This machine's layout report on Debian's Pillow (its own venv, cached).
    local venv="$CACHE/host-pil-venv"
    if [[ ! -x "$venv/bin/python" ]]; then
        /usr/bin/python3 -m venv --system-site-packages "$venv" >&2
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check "${REPO}[display]" \
        > "$CACHE/logs/host-pip.log" 2>&1 \
        || die "could not install the checkout into $venv"
    (cd / && "$venv/bin/python" -m hardware.layout_report)
}

# -- one architecture -----------------------------------------------------

check_arch() {
    local arch="$1" root="$CACHE/run-$1" started
    started=$SECONDS
    base_root "$arch"
    say "[$arch] fresh working root $root"
    rm -rf -- "$root"
    cp -a -- "$CACHE/base-$arch" "$root"
    mount_all "$root"

    step "$arch" "$root" apt-upgrade "sudo apt-get update && sudo apt-get full-upgrade -y"

    # The checkout, as `scp -r entra-device-agent pi@...:` copies it (less
    # the files git ignores: venvs, caches).
    mkdir -p "$root/root/entra-device-agent"
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done \
        | tar --null -T - -cf -) | tar -C "$root/root/entra-device-agent" -xf -

    step "$arch" "$root" install "cd entra-device-agent && sudo deploy/install.sh --extras display,gpio"
    local install_log="$LAST_LOG"
    if ! grep -q 'install.sh: done' "$install_log"; then
        note "$arch" "installed" 0 "install.sh failed: the steps after it are skipped ($install_log)"
        unmount_all
        COMPILED+=("$arch: (install failed)")
        return 0
    fi

    # What came from where: Debian's dist-packages or pip's site-packages.
    step "$arch" "$root" modules "/opt/entra-agent/venv/bin/python - <<'PY'
import importlib.metadata as md, importlib.util, platform
print('machine', platform.machine())
# Located, not imported: RPi.GPIO (rpi-lgpio) refuses to import off a Pi.
for name, dist in (('PIL', 'pillow'), ('cbor2', 'cbor2'), ('smbus2', 'smbus2'), ('spidev', 'spidev'),
                   ('lgpio', 'lgpio'), ('RPi', 'rpi-lgpio'), ('gpiozero', 'gpiozero'), ('luma', 'luma.core')):
    spec = importlib.util.find_spec(name)
    where = spec.origin or list(spec.submodule_search_locations)[0]
    print(f'{name:9} {md.version(dist):12} {\"Debian\" if \"/dist-packages/\" in where else \"pip\":7} {where}')
PY"

    step "$arch" "$root" check-config "entra-auth-cli create-profile --name default --tenant-id contoso.onmicrosoft.com --client-id 11111111-2222-3333-4444-555555555555 >/dev/null && entra-agent check-config"
    local gpio_line
    gpio_line="$(grep -m1 -o 'gpio .*' "$LAST_LOG" || true)"
    note "$arch" "gpio-backend" "$([[ "$gpio_line" == *lgpio* ]] && echo 1 || echo 0)" "${gpio_line:-no gpio line}"

    # An SPI display: every module it needs imports; only /dev/spidev or the
    # GPIO chip (absent in a chroot) may be what stops it.
    step "$arch" "$root" spi-display "cd /tmp && /opt/entra-agent/venv/bin/python - <<'PY'
from hardware.display import open_device
from hardware.errors import HardwareError
try:
    open_device({'driver': 'st7735', 'interface': 'spi', 'width': 160, 'height': 128})
    print('opened')
except HardwareError as exc:
    print(exc)
    raise SystemExit(0 if 'module' not in str(exc) else 1)
PY"
    note "$arch" "spi-hint" "$(grep -q 'is missing' "$LAST_LOG" && echo 0 || echo 1)" \
        "$(sed -n 's/^ *[0-9.]* //p' "$LAST_LOG" | head -n1)"

    step "$arch" "$root" screens "entra-agent screens --out /tmp/screens && ls /tmp/screens | wc -l"
    local pngs
    pngs="$(find "$root/tmp/screens" -name '*.png' 2>/dev/null | wc -l)"
    note "$arch" "screens-png" "$([[ "$pngs" -gt 0 ]] && echo 1 || echo 0)" "$pngs PNG files"

    step "$arch" "$root" layout "cd /tmp && /opt/entra-agent/venv/bin/python -m hardware.layout_report > /tmp/layout.json"
    local same=1 detail
    host_layout > "$CACHE/logs/host-layout.json"
    detail="$(python3 - "$CACHE/logs/host-layout.json" "$root/tmp/layout.json" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
diff = [k for k in a["screens"] if a["screens"][k] != b["screens"].get(k)]
print(f"x86 Pillow {a['pillow']} ({a['font'][0]}) vs board Pillow {b['pillow']} ({b['font'][0]}): "
      f"{len(a['screens']) - len(diff)}/{len(a['screens'])} layouts identical"
      + (f"; differ: {', '.join(diff[:5])}" if diff else ""))
sys.exit(1 if diff or a["font"] != b["font"] else 0)
EOF
)" || same=0
    note "$arch" "layout-vs-x86" "$same" "$detail"

    step "$arch" "$root" demo "entra-agent demo --approve-after 5 --duration $DEMO_SECONDS --interval 2"
    local received
    received="$(grep -o '[0-9]* received in [0-9]* uploads' "$LAST_LOG" | tail -n1 || true)"
    note "$arch" "demo-readings" "$([[ -n "$received" && "${received%% *}" -gt 0 ]] && echo 1 || echo 0)" \
        "${received:-no readings received}"

    step "$arch" "$root" tests "/opt/entra-agent/venv/bin/pip install -q --disable-pip-version-check pytest && cd entra-device-agent && /opt/entra-agent/venv/bin/python -m pytest -q -p no:cacheprovider $TEST_FILES"
    note "$arch" "tests" "$(grep -q ' passed' "$LAST_LOG" && ! grep -q ' failed' "$LAST_LOG" && echo 1 || echo 0)" \
        "$(grep -E '[0-9]+ (passed|failed)' "$LAST_LOG" | tail -n1 | sed 's/^ *[0-9.]* //')"

    unmount_all

    # What pip built from source during the install, with how long each took.
    local builds
    builds="$(python3 - "$install_log" <<'EOF'
import re, sys
started, took, pure = {}, {}, set()
for line in open(sys.argv[1], encoding="utf-8"):
    t, _, text = line.strip().partition(" ")
    m = re.search(r"Building wheel for (\S+) \(.*\): (started|finished with status '(\w+)')", text)
    if m and m.group(2) == "started":
        started[m.group(1)] = float(t)
    elif m:
        took[m.group(1)] = f"{float(t) - started.get(m.group(1), float(t)):.0f} s, {m.group(3)}"
    m = re.search(r"Created wheel for (\S+): filename=(\S+)", text)
    if m and m.group(2).endswith("-none-any.whl"):
        pure.add(m.group(1).rstrip(":"))
native = [f"{n} ({took[n]})" for n in took if n not in pure]
print((", ".join(native) if native else "nothing compiled")
      + "; pure-Python wheels built: " + (", ".join(f"{n} ({took[n]})" for n in took if n in pure) or "none"))
EOF
)"
    COMPILED+=("$arch: $builds")
    TOTAL+=("$arch: $((SECONDS - started)) s in all")
}

COMPILED=()
TOTAL=()
mkdir -p "$CACHE/logs"
host_tools
for arch in "${ARCHES[@]}"; do
    qemu_name "$arch" >/dev/null
    check_arch "$arch"
done

printf '\n%-6s %-14s %-5s %8s %8s  %s\n' arch step result seconds "peak MB" detail
for row in "${RESULTS[@]}"; do
    IFS='|' read -r arch name verdict seconds mb detail <<<"$row"
    printf '%-6s %-14s %-5s %8s %8s  %s\n' "$arch" "$name" "$verdict" "$seconds" "$mb" "$detail"
done
printf '\ncompiled by pip during the install:\n'
printf '  %s\n' "${COMPILED[@]}"
printf '%s\n' "${TOTAL[@]}" | sed 's/^/  /'
printf '\nlogs: %s/logs/\n' "$CACHE"
if [[ $FAILED -eq 0 ]]; then
    echo "arm-check: PASS"
else
    echo "arm-check: FAIL"
    exit 1
fi
