#!/usr/bin/env bash
# Install (or remove) entra-device-agent as a systemd service.
#
#   sudo deploy/install.sh [--extras display,gpio] [--source PATH|URL|SPEC]
#   sudo deploy/install.sh --uninstall [--purge]
#
# What it does, each step only when needed (running it again changes nothing):
#   1. apt: python3-venv, and the Debian builds of everything compiled that
#      the extras need, where this system's archive has them, so a Pi Zero
#      never compiles: Pillow, cbor2, smbus2, spidev, the DejaVu font of the
#      screens, i2c-tools; lgpio and rpi-lgpio (RPi.GPIO for SPI displays)
#      from Raspberry Pi OS's archive. What apt lacks (lgpio on plain Debian)
#      pip takes as a wheel from PyPI in step 3;
#   2. a virtual environment in /opt/entra-agent/venv. Raspberry Pi OS marks
#      its Python "externally managed" (PEP 668) and refuses `pip install`
#      into it; a venv is the supported way around that. It sees the system's
#      site-packages so that the apt-installed C modules above are used
#      instead of being compiled on the board;
#   3. pip installs the package (with its extras) into that venv;
#   4. /etc/entra-agent/agent.toml from deploy/agent.toml.example, only if absent;
#   5. /var/lib/entra-agent (0700) for tokens and the outbox;
#   6. the unit in /etc/systemd/system, `systemctl daemon-reload`, `enable`
#      (not start: raspberry-pi-auth.sh starts it after the sign-in);
#   7. /usr/local/bin/entra-auth-cli and /usr/local/bin/entra-agent;
#   8. the group entra-agent-tokens and /etc/entra-agent/token-service.secret
#      (0640 root:entra-agent-tokens): who may read it may get the signed-in
#      identity's tokens from the token service ([token_service] in agent.toml).
#      --token-users USER... adds those users to the group.
#
# --uninstall removes the program, the unit, the commands and the token
# service's secret, and keeps what is yours: /etc/entra-agent (unless
# agent.toml is still the untouched example), /var/lib/entra-agent (tokens,
# readings not yet uploaded) and the group entra-agent-tokens.
# --purge removes those as well, after saying what goes and asking the
# identity provider to revoke each saved refresh token (entra-auth-cli logout;
# RFC 7009 where the provider has a revocation endpoint).
#
# --root DIR installs into DIR as if it were / (tests, staging): every path is
# under DIR, apt is skipped (it would change this machine, not DIR) and the
# unit is enabled with `systemctl --root=DIR` (no running systemd needed).
# The venv's scripts then point into DIR, so DIR is not a bootable image.
# Users and groups are those of DIR/etc/passwd and DIR/etc/group (groupadd and
# usermod --prefix DIR); without a DIR/etc/group the group step is skipped.
set -euo pipefail

readonly PROG="install.sh"
readonly APP="entra-agent"
readonly DIST="entra-device-agent"
readonly UNIT="entra-agent.service"
readonly COMMANDS=(entra-auth-cli entra-agent)
readonly TOKEN_GROUP="entra-agent-tokens"

ROOT="${ENTRA_AGENT_PREFIX:-}"
SOURCE=""
EXTRAS="display,gpio"
APT=1
ACTION="install"
PURGE=0
ASSUME_YES=0
UPGRADE=0
PYTHON="${ENTRA_AGENT_PYTHON:-python3}"
TOKEN_USERS=()

die() {
    # One line: the cause and, in brackets, what to do.
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

say() {
    printf '%s: %s\n' "$PROG" "$*" >&2
}

usage() {
    cat <<'EOF'
usage: install.sh [--source PATH|URL|SPEC] [--extras display,gpio|none]
                  [--root DIR] [--no-apt] [--upgrade] [--python PYTHON]
                  [--token-users USER...]
       install.sh --uninstall [--purge] [--yes] [--root DIR]

  --source     what pip installs: a checkout folder, a wheel file, a git URL
               (git+https://...) or a name and version (entra-device-agent==1.2.0).
               Default: the checkout this script is in.
  --extras     optional parts: display (luma screens), gpio (the button);
               "none" for neither. Default: display,gpio
  --root DIR   install into DIR instead of / (tests, staging); no apt
  --no-apt     do not install Debian packages
  --upgrade    reinstall the package even if the same source was installed
  --python     the Python that creates the venv (default: python3)
  --token-users USER...
               let these users get the signed-in identity's tokens from the
               token service (adds them to the group entra-agent-tokens, which
               may read its secret; they log in again for it to take effect)
  --uninstall  remove the program, unit and commands; keep config and tokens
  --purge      with --uninstall: also remove /etc/entra-agent and
               /var/lib/entra-agent (tokens and readings not yet uploaded),
               after asking the provider to revoke the saved sign-ins (RFC 7009)
  --yes        do not ask before --purge
EOF
}

need_value() {
    [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --source) need_value "$@"; SOURCE="$2"; shift 2 ;;
        --source=*) SOURCE="${1#*=}"; shift ;;
        --extras) need_value "$@"; EXTRAS="$2"; shift 2 ;;
        --extras=*) EXTRAS="${1#*=}"; shift ;;
        --root|--prefix) need_value "$@"; ROOT="$2"; shift 2 ;;
        --root=*|--prefix=*) ROOT="${1#*=}"; shift ;;
        --python) need_value "$@"; PYTHON="$2"; shift 2 ;;
        --python=*) PYTHON="${1#*=}"; shift ;;
        --no-apt) APT=0; shift ;;
        --upgrade) UPGRADE=1; shift ;;
        --uninstall) ACTION="uninstall"; shift ;;
        --purge) PURGE=1; shift ;;
        --yes|-y) ASSUME_YES=1; shift ;;
        --token-users)
            shift
            while [[ $# -gt 0 && "$1" != -* ]]; do TOKEN_USERS+=("$1"); shift; done
            [[ ${#TOKEN_USERS[@]} -gt 0 ]] || die "--token-users needs one or more user names (see --help)"
            ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

if [[ $PURGE -eq 1 && $ACTION != "uninstall" ]]; then
    die "--purge only goes with --uninstall (run: install.sh --uninstall --purge)"
fi

if [[ -n "$ROOT" ]]; then
    mkdir -p -- "$ROOT"
    ROOT="$(cd -- "$ROOT" && pwd -P)"
    [[ "$ROOT" != "/" ]] || ROOT=""
    APT=0
fi

# Places, on the target system and (prefixed with ROOT) on this one.
readonly OPT_DIR="/opt/$APP"
readonly VENV="$OPT_DIR/venv"
readonly CONFIG_DIR="/etc/$APP"
readonly STATE_DIR="/var/lib/$APP"
readonly RUNTIME_DIR="/run/$APP"
readonly UNIT_DIR="/etc/systemd/system"
readonly BIN_DIR="/usr/local/bin"
# What was installed from where (compared on the next run to skip pip), and
# the example config as installed (to tell an untouched agent.toml on uninstall).
readonly STAMP="$OPT_DIR/installed-from"
readonly DEFAULT_CONFIG="$OPT_DIR/agent.toml.default"
readonly TOKEN_SECRET="$CONFIG_DIR/token-service.secret"

r() {
    # A target path as seen from here.
    printf '%s%s' "$ROOT" "$1"
}

SCRIPT_DIR=""
if [[ -n "${BASH_SOURCE[0]:-}" && -f "${BASH_SOURCE[0]}" ]]; then
    SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
fi

require_root() {
    if [[ -z "$ROOT" && "$(id -u)" -ne 0 ]]; then
        die "must run as root to install into / (run it with sudo, or pass --root DIR for a scratch root)"
    fi
}

systemd_running() {
    [[ -z "$ROOT" && -d /run/systemd/system ]]
}

run_systemctl() {
    # systemctl on the target: offline with --root, live when systemd runs,
    # otherwise (a chroot, a container) offline on / as well.
    if ! command -v systemctl >/dev/null 2>&1; then
        say "no systemctl here: skipping 'systemctl $*'"
        return 0
    fi
    if [[ -n "$ROOT" ]]; then
        systemctl --root="$ROOT" "$@"
    elif systemd_running; then
        systemctl "$@"
    else
        systemctl --root=/ "$@"
    fi
}

# -- install --------------------------------------------------------------

apt_wanted() {
    # The Debian packages for the chosen extras, before asking apt which exist.
    # display: Pillow (python3-pil: bookworm's 9.4 draws the same screens as
    # PyPI's newest), luma.core's compiled dependencies (cbor2, whose 6.x has
    # no armv7l wheel and needs Rust; spidev, which PyPI has as source only;
    # smbus2), the screens' font, i2cdetect; RPi.GPIO for SPI displays as
    # python3-rpi-lgpio (Raspberry Pi OS; works on every Pi incl. the 5),
    # unless the older python3-rpi.gpio is there already (they conflict, and
    # apt would remove it). gpio: lgpio, gpiozero's pin library (Raspberry Pi
    # OS only; elsewhere pip takes the lgpio wheel).
    printf '%s\n' python3-venv
    if [[ ",$EXTRAS," == *",display,"* ]]; then
        printf '%s\n' python3-pil python3-cbor2 python3-smbus2 python3-spidev fonts-dejavu-core i2c-tools
        if ! dpkg-query -W -f='${Status}' python3-rpi.gpio 2>/dev/null | grep -q 'install ok installed'; then
            printf '%s\n' python3-rpi-lgpio
        fi
    fi
    if [[ ",$EXTRAS," == *",gpio,"* ]]; then
        printf '%s\n' python3-lgpio
    fi
}

apt_packages() {
    # apt_wanted, less what this system's apt does not know (python3-lgpio and
    # python3-rpi-lgpio are in Raspberry Pi OS's archive, not in Debian's):
    # said once, so that a person sees where pip steps in.
    local pkg absent=()
    while IFS= read -r pkg; do
        if apt-cache show -- "$pkg" >/dev/null 2>&1; then
            printf '%s\n' "$pkg"
        else
            absent+=("$pkg")
        fi
    done < <(apt_wanted)
    if [[ ${#absent[@]} -gt 0 ]]; then
        say "not in this system's Debian archive: ${absent[*]} (pip installs what the extras need from PyPI instead)"
    fi
}

install_apt() {
    [[ $APT -eq 1 ]] || return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        say "no apt-get here: install python3-venv yourself if the venv step fails"
        return 0
    fi
    # python3-venv is in every Debian release: when apt does not know it, its
    # package lists are empty (a freshly written image), so fetch them once.
    if ! apt-cache show python3-venv >/dev/null 2>&1; then
        say "fetching the package lists (apt-get update)"
        apt-get update -q || die "apt-get update failed (check the network: ping deb.debian.org)"
    fi
    local missing=() pkg
    while IFS= read -r pkg; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done < <(apt_packages)
    if [[ ${#missing[@]} -gt 0 ]]; then
        say "installing Debian packages: ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
            || die "apt-get could not install ${missing[*]} (run 'sudo apt-get update' and try again)"
    fi
}

default_source() {
    # The checkout this script lives in (deploy/install.sh -> ..).
    if [[ -n "$SCRIPT_DIR" && -f "$SCRIPT_DIR/../pyproject.toml" ]]; then
        (cd -- "$SCRIPT_DIR/.." && pwd -P)
    fi
}

pip_requirement() {
    # The pip argument for SOURCE with EXTRAS: a folder or wheel is
    # "PATH[extras]", a URL is "dist[extras] @ URL", a name and version is
    # "dist[extras]==1.2".
    local source="$1" extras="$2" bracket=""
    [[ -n "$extras" ]] && bracket="[$extras]"
    if [[ -e "$source" ]]; then
        printf '%s%s' "$(realpath -- "$source")" "$bracket"
    elif [[ "$source" == *"://"* || "$source" == git+* ]]; then
        printf '%s%s @ %s' "$DIST" "$bracket" "$source"
    elif [[ "$source" =~ ^([A-Za-z0-9][A-Za-z0-9._-]*)(.*)$ ]]; then
        printf '%s%s%s' "${BASH_REMATCH[1]}" "$bracket" "${BASH_REMATCH[2]}"
    else
        die "cannot tell what --source '$source' is (give a folder, a .whl file, a git+https:// URL or $DIST==VERSION)"
    fi
}

source_fingerprint() {
    # Changes when the source does: the content of a folder or file, else
    # the spec itself (a pinned version or commit; use --upgrade for a branch).
    local source="$1"
    if [[ -d "$source" ]]; then
        (cd -- "$source" && find . \
            \( -name .git -o -name __pycache__ -o -name '*.egg-info' -o -name build \
               -o -name dist -o -name .pytest_cache -o -name tests \) -prune \
            -o -type f ! -name '*.pyc' -print0 \
            | LC_ALL=C sort -z | xargs -0 -r sha256sum | sha256sum | cut -d' ' -f1)
    elif [[ -f "$source" ]]; then
        sha256sum -- "$source" | cut -d' ' -f1
    else
        printf '%s' "$source"
    fi
}

normalized_extras() {
    # "gpio, display" -> "display,gpio"; "none" -> "".
    local list="${EXTRAS// /}"
    [[ "$list" == "none" ]] && list=""
    local item out=()
    local IFS=','
    for item in $list; do
        case "$item" in
            display|gpio) out+=("$item") ;;
            "") ;;
            *) die "unknown extra '$item' (choose from display, gpio, or none)" ;;
        esac
    done
    [[ ${#out[@]} -gt 0 ]] || return 0
    printf '%s\n' "${out[@]}" | LC_ALL=C sort -u | paste -sd, -
}

install_venv() {
    local venv
    venv="$(r "$VENV")"
    if [[ ! -x "$venv/bin/python" ]]; then
        command -v "$PYTHON" >/dev/null 2>&1 || die "no $PYTHON found (install python3 3.11 or newer, or pass --python)"
        say "creating the virtual environment $VENV"
        mkdir -p -- "$(r "$OPT_DIR")"
        chmod 0755 -- "$(r "$OPT_DIR")"
        "$PYTHON" -m venv --system-site-packages -- "$venv" \
            || die "could not create a venv with $PYTHON (install python3-venv: sudo apt-get install python3-venv)"
    fi
}

install_package() {
    local extras requirement stamp_text stamp
    extras="$(normalized_extras)"
    requirement="$(pip_requirement "$SOURCE" "$extras")"
    stamp="$(r "$STAMP")"
    stamp_text="$(printf 'source=%s\nfingerprint=%s\nextras=%s\n' \
        "$SOURCE" "$(source_fingerprint "$SOURCE")" "$extras")"
    if [[ $UPGRADE -eq 0 && -f "$stamp" && "$(cat -- "$stamp")" == "$stamp_text" ]] \
        && "$(r "$VENV")/bin/python" -c 'import agent' 2>/dev/null; then
        say "$DIST from $SOURCE is installed already"
        return 0
    fi
    say "installing $requirement"
    # Not --quiet: pip's own message is the explanation when a step fails (a
    # package that would have to be compiled, no network). --prefer-binary:
    # an older release with a wheel beats compiling a newer one on the board.
    local pip=("$(r "$VENV")/bin/python" -m pip install --disable-pip-version-check --no-input
               --progress-bar off --prefer-binary)
    [[ $UPGRADE -eq 1 ]] && pip+=(--upgrade)
    "${pip[@]}" -- "$requirement" || die "pip could not install $requirement (see its message above)"
    if [[ -f "$SOURCE" ]]; then
        # pip keeps an installed version when given a wheel of the same
        # version; this wheel differs from the last one (the stamp says so).
        "${pip[@]}" --force-reinstall --no-deps -- "$requirement" \
            || die "pip could not install $requirement (see its message above)"
    fi
    printf '%s\n' "$stamp_text" > "$stamp"
    chmod 0644 -- "$stamp"
}

deploy_file() {
    # deploy/<name> of the installed version (shipped in the venv's share/),
    # else the one next to this script.
    local name="$1" shared
    shared="$(r "$VENV")/share/$DIST/$name"
    if [[ -f "$shared" ]]; then
        printf '%s' "$shared"
    elif [[ -n "$SCRIPT_DIR" && -f "$SCRIPT_DIR/$name" ]]; then
        printf '%s' "$SCRIPT_DIR/$name"
    else
        die "cannot find $name in the installed package or next to $PROG (install from a checkout or a wheel built from one)"
    fi
}

install_file() {
    # Copy with a mode, only when the content differs: no write when nothing changed.
    local src="$1" dest="$2" mode="$3"
    if [[ -f "$dest" ]] && cmp -s -- "$src" "$dest"; then
        [[ "$(stat -c %a -- "$dest")" == "${mode#0}" ]] || chmod "$mode" -- "$dest"
        return 1
    fi
    install -D -m "$mode" -- "$src" "$dest"
}

starter_config() {
    # agent.toml to start from: the example (which documents every key) with
    # what describes someone else's setup commented out, so that it is valid
    # on any board: device_id (default: the hostname), the example endpoint,
    # the ds18b20 and command sensors, and the mqtt, display, button and led
    # tables. raspberry-pi-auth.sh sets those you give it; the rest stay
    # documented, one '#' away.
    "$(r "$VENV")/bin/python" - "$1" <<'PY'
import re, sys, tomllib

HEADER = re.compile(r"^\[\[?\s*([A-Za-z0-9_.\-]+)\s*\]\]?")
OFF_TABLES = {"mqtt", "display", "display.extra", "button", "led"}
OFF_SENSORS = {"ds18b20", "command"}
OFF_KEYS = {"": {"device_id"}, "telemetry": {"endpoint"}}

lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
blocks, current = [], {"table": "", "lines": []}
for line in lines:
    m = HEADER.match(line)
    if m:
        blocks.append(current)
        current = {"table": m.group(1), "lines": []}
    current["lines"].append(line)
blocks.append(current)

out = []
for block in blocks:
    table, body = block["table"], block["lines"]
    off = table in OFF_TABLES
    if table == "sensors":
        text = "\n".join(line for line in body if not line.startswith("[["))
        off = tomllib.loads(text).get("type") in OFF_SENSORS
    keys = OFF_KEYS.get(table, set())
    for line in body:
        code = line.strip() and not line.lstrip().startswith("#")
        key = line.split("=", 1)[0].strip() if "=" in line else None
        if code and (off or key in keys):
            line = "# " + line
        out.append(line)
text = "\n".join(out) + "\n"
tomllib.loads(text)
sys.stdout.write(text)
PY
}

install_config() {
    local example config default
    example="$(deploy_file agent.toml.example)"
    config="$(r "$CONFIG_DIR/agent.toml")"
    default="$(r "$DEFAULT_CONFIG")"
    starter_config "$example" > "$default.new" \
        || die "could not derive agent.toml from $example (see the message above)"
    if cmp -s -- "$default.new" "$default"; then
        rm -f -- "$default.new"
    else
        chmod 0644 -- "$default.new"
        mv -f -- "$default.new" "$default"
    fi
    if [[ ! -d "$(r "$CONFIG_DIR")" ]]; then
        mkdir -p -- "$(r "$CONFIG_DIR")"
        chmod 0755 -- "$(r "$CONFIG_DIR")"
    fi
    if [[ ! -e "$config" ]]; then
        say "writing $CONFIG_DIR/agent.toml (every key documented; edit it, then: entra-agent check-config)"
        install -m 0644 -- "$default" "$config"
    fi
}

install_state_dir() {
    local dir
    dir="$(r "$STATE_DIR")"
    mkdir -p -- "$(dirname -- "$dir")"
    [[ -d "$dir" ]] || mkdir -m 0700 -- "$dir"
    # Tokens live here: never readable by others, whatever made the folder.
    [[ "$(stat -c %a -- "$dir")" == "700" ]] || chmod 0700 -- "$dir"
}

install_unit() {
    local unit_changed=0
    if install_file "$(deploy_file "$UNIT")" "$(r "$UNIT_DIR/$UNIT")" 0644; then
        unit_changed=1
        say "installed $UNIT_DIR/$UNIT"
    fi
    if [[ $unit_changed -eq 1 ]] && systemd_running; then
        systemctl daemon-reload
    fi
    # -L, not -e: the link points at /etc/..., which is outside a --root.
    if [[ ! -L "$(r "$UNIT_DIR/multi-user.target.wants/$UNIT")" ]]; then
        run_systemctl enable "$UNIT" \
            || die "systemctl could not enable $UNIT (see its message above)"
    fi
}

install_commands() {
    local name link target
    mkdir -p -- "$(r "$BIN_DIR")"
    for name in "${COMMANDS[@]}"; do
        link="$(r "$BIN_DIR/$name")"
        # Relative, so the link is right inside --root as well as on /.
        target="../../..$VENV/bin/$name"
        if [[ -L "$link" && "$(readlink -- "$link")" == "$target" ]]; then
            continue
        fi
        if [[ -e "$link" && ! -L "$link" ]]; then
            die "$BIN_DIR/$name exists and is not our link (remove it or pip-uninstall what put it there, then run again)"
        fi
        ln -sfn -- "$target" "$link"
    done
}

# -- the token service's group and secret -----------------------------------

account_args=()     # groupadd/usermod work on DIR/etc/{passwd,group} with --root

target_user_exists() {
    if [[ -n "$ROOT" ]]; then
        [[ -f "$(r /etc/passwd)" ]] && awk -F: -v u="$1" '$1 == u { found = 1 } END { exit !found }' "$(r /etc/passwd)"
    else
        id -u -- "$1" >/dev/null 2>&1
    fi
}

token_group_gid() {
    # The group's number on the target (numbers work in chgrp under --root too).
    local db
    db="$(r /etc/group)"
    [[ -f "$db" ]] || return 1
    awk -F: -v g="$TOKEN_GROUP" '$1 == g { print $3; found = 1 } END { exit !found }' "$db"
}

in_token_group() {
    awk -F: -v g="$TOKEN_GROUP" -v u="$1" \
        '$1 == g { n = split($4, m, ","); for (i = 1; i <= n; i++) if (m[i] == u) found = 1 } END { exit !found }' \
        "$(r /etc/group)"
}

check_token_users() {
    # Before anything changes: every user named must exist.
    local user
    for user in "${TOKEN_USERS[@]}"; do
        [[ "$user" =~ ^[a-z_][a-z0-9_.-]*[$]?$ ]] || die "'$user' is not a user name (see --help)"
        target_user_exists "$user" || die "no user '$user' on this system (create it first: sudo adduser $user)"
    done
}

install_token_access() {
    [[ -n "$ROOT" ]] && account_args=(--prefix "$ROOT")
    if [[ ! -f "$(r /etc/group)" ]]; then
        say "no /etc/group in $ROOT: skipping the group $TOKEN_GROUP (only root may get tokens)"
    elif ! token_group_gid >/dev/null; then
        command -v groupadd >/dev/null 2>&1 || die "no groupadd here (install it: sudo apt-get install passwd)"
        groupadd "${account_args[@]}" --system "$TOKEN_GROUP" \
            || die "groupadd could not create the group $TOKEN_GROUP (see its message above)"
        say "created the group $TOKEN_GROUP: its members may get tokens from the token service"
    fi
    local user
    for user in "${TOKEN_USERS[@]}"; do
        in_token_group "$user" && continue
        usermod "${account_args[@]}" -aG "$TOKEN_GROUP" "$user" \
            || die "usermod could not add $user to $TOKEN_GROUP (see its message above)"
        say "added $user to $TOKEN_GROUP (it takes effect when $user logs in again)"
    done
    install_token_secret
}

install_token_secret() {
    # 32 random bytes as hex, made once; kept across upgrades so that other
    # services' EnvironmentFile= copies stay valid.
    local secret gid="" tmp
    secret="$(r "$TOKEN_SECRET")"
    gid="$(token_group_gid)" || gid=""
    if [[ -e "$secret" || -L "$secret" ]]; then
        [[ -f "$secret" && ! -L "$secret" ]] || die "$TOKEN_SECRET is not a regular file (remove it and run again)"
        if [[ -n "$gid" && "$(stat -c '%u:%g %a' -- "$secret")" != "0:$gid 640" ]]; then
            chown "0:$gid" -- "$secret" && chmod 0640 -- "$secret"
            say "$TOKEN_SECRET is now readable by the group $TOKEN_GROUP"
        fi
        return 0
    fi
    tmp="$secret.new.$$"
    (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$tmp" && printf '\n' >> "$tmp") \
        || die "could not write $TOKEN_SECRET"
    if [[ -n "$gid" ]]; then
        chown "0:$gid" -- "$tmp"
        chmod 0640 -- "$tmp"
    else
        chmod 0600 -- "$tmp"
    fi
    mv -f -- "$tmp" "$secret"
    say "created $TOKEN_SECRET (for the token service; see [token_service] in agent.toml)"
}

do_install() {
    require_root
    check_token_users
    [[ -n "$SOURCE" ]] || SOURCE="$(default_source)"
    [[ -n "$SOURCE" ]] || die "no --source given and $PROG is not in a checkout (pass --source: a wheel, a git+https:// URL or $DIST==VERSION)"
    normalized_extras >/dev/null
    install_apt
    install_venv
    install_package
    install_config
    install_state_dir
    install_unit
    install_commands
    install_token_access
    if [[ -n "${RASPBERRY_PI_AUTH:-}" ]]; then
        say "done"              # raspberry-pi-auth.sh carries on with the sign-in
        return 0
    fi
    # No profile exists yet (agent.toml names "default"): get-token alone would fail.
    say "done. Next: sign in and start the service with raspberry-pi-auth.sh --tenant-id ... --client-id ... (or: sudo entra-auth-cli create-profile --name default --tenant-id ... --client-id ...; sudo entra-auth-cli get-token; sudo systemctl start $APP)"
}

# -- uninstall ------------------------------------------------------------

remove_path() {
    if [[ -e "$1" || -L "$1" ]]; then
        rm -rf -- "$1"
    fi
}

purge_list() {
    # What --purge removes, one line each (empty: nothing).
    [[ -e "$(r "$CONFIG_DIR")" ]] && printf '%s\n' "$CONFIG_DIR (agent.toml, sign-in profiles)"
    [[ -e "$(r "$STATE_DIR")" ]] && printf '%s\n' "$STATE_DIR (saved tokens: you will have to sign in again; readings not yet uploaded are lost)"
    return 0
}

confirm_purge() {
    # Asked once, before anything is removed: "no" leaves everything as it was.
    local gone
    gone="$(purge_list)"
    [[ -n "$gone" ]] || return 0
    say "--purge removes:"
    local line
    while IFS= read -r line; do
        printf '  %s\n' "$line" >&2
    done <<<"$gone"
    if [[ $ASSUME_YES -eq 0 && -t 0 ]]; then
        local answer=""
        read -r -p "Remove them? [y/N] " answer
        [[ "$answer" == [yY]* ]] || die "nothing removed (run install.sh --uninstall without --purge to keep your config and sign-in)"
    fi
}

revoke_sign_ins() {
    # RFC 7009: before the token files go, ask the provider to revoke each
    # saved refresh token (a copy of this SD card must not keep working).
    # entra-auth-cli logout bounds each request, so a provider that does not
    # answer never holds up the purge for long.
    local cli tokens file name
    cli="$(r "$VENV/bin/entra-auth-cli")"
    tokens="$(r "$STATE_DIR/tokens")"
    compgen -G "$tokens/*.json" >/dev/null || return 0
    if [[ ! -x "$cli" ]]; then
        say "cannot revoke the saved sign-ins (the program was removed before): revoke them at the provider (Entra ID: Revoke-MgUserSignInSession, or \"Revoke sessions\" on the user in the Entra admin center)"
        return 0
    fi
    for file in "$tokens"/*.json; do
        name="$(basename -- "$file" .json)"
        ENTRA_AGENT_CONFIG_DIR="$(r "$CONFIG_DIR")" ENTRA_AGENT_STATE_DIR="$(r "$STATE_DIR")" \
            ENTRA_AGENT_RUNTIME_DIR="$(r "$RUNTIME_DIR")" \
            "$cli" logout --profile "$name" </dev/null || say "could not sign out of profile $name (continuing)"
    done
}

do_uninstall() {
    require_root
    if [[ $PURGE -eq 1 ]]; then
        confirm_purge
    fi
    if [[ -e "$(r "$UNIT_DIR/$UNIT")" ]]; then
        if systemd_running; then
            systemctl disable --now "$UNIT" || say "could not stop $UNIT (continuing)"
        else
            run_systemctl disable "$UNIT" || say "could not disable $UNIT (continuing)"
        fi
    fi
    remove_path "$(r "$UNIT_DIR/multi-user.target.wants/$UNIT")"
    remove_path "$(r "$UNIT_DIR/$UNIT")"
    systemd_running && systemctl daemon-reload

    local name link
    for name in "${COMMANDS[@]}"; do
        link="$(r "$BIN_DIR/$name")"
        if [[ -L "$link" && "$(readlink -- "$link")" == *"$VENV/bin/$name" ]]; then
            rm -f -- "$link"
        fi
    done

    # An agent.toml that is still the example as installed is ours, not yours.
    local config default
    config="$(r "$CONFIG_DIR/agent.toml")"
    default="$(r "$DEFAULT_CONFIG")"
    if [[ $PURGE -eq 0 && -f "$config" && -f "$default" ]] && cmp -s -- "$config" "$default"; then
        rm -f -- "$config"
    fi
    if [[ $PURGE -eq 1 ]]; then
        revoke_sign_ins     # needs the program: before it goes
    fi
    remove_path "$(r "$OPT_DIR")"
    # The secret is ours (made here); the group's members are yours.
    remove_path "$(r "$TOKEN_SECRET")"
    if token_group_gid >/dev/null 2>&1; then
        say "kept the group $TOKEN_GROUP (remove it with: sudo groupdel $TOKEN_GROUP)"
    fi

    if [[ $PURGE -eq 1 ]]; then
        remove_path "$(r "$CONFIG_DIR")"
        remove_path "$(r "$STATE_DIR")"
        remove_path "$(r "$RUNTIME_DIR")"
    else
        # Folders left empty were ours; anything in them is yours and stays.
        rmdir -- "$(r "$CONFIG_DIR")" 2>/dev/null || true
        rmdir -- "$(r "$STATE_DIR")" 2>/dev/null || true
        local kept=()
        [[ -e "$(r "$CONFIG_DIR")" ]] && kept+=("$CONFIG_DIR")
        [[ -e "$(r "$STATE_DIR")" ]] && kept+=("$STATE_DIR")
        if [[ ${#kept[@]} -gt 0 ]]; then
            say "kept ${kept[*]} (your config, sign-in and unsent readings; --uninstall --purge removes them)"
        fi
    fi
    say "uninstalled"
}

case "$ACTION" in
    install) do_install ;;
    uninstall) do_uninstall ;;
esac
