#!/usr/bin/env bash
# raspberry-pi-auth.sh: from a fresh Raspberry Pi OS board to a signed-in
# entra-agent service that survives reboots, in one command. Safe to run again.
#
# On the board, in a checkout:
#   sudo ./raspberry-pi-auth.sh --tenant-id contoso.onmicrosoft.com \
#       --client-id 11111111-2222-3333-4444-555555555555 \
#       --endpoint https://api.example.com/telemetry
#
# From a laptop, with nothing on the board yet (--source says what to install:
# a wheel copied to the board, a git URL, or a name and version):
#   ssh pi@board 'sudo bash -s -- --source git+https://example.com/entra-device-agent.git \
#       --tenant-id ... --client-id ...' < raspberry-pi-auth.sh
#
# Every option can come from the environment instead (sudo drops it unless
# given on its command line: sudo TENANT_ID=... CLIENT_ID=... ./raspberry-pi-auth.sh).
#
# Steps: install (deploy/install.sh) when entra-agent is missing or --source
# is given; create the sign-in profile unless it exists; write the given keys
# into /etc/entra-agent/agent.toml (leaving the rest alone); sign in with a
# device code shown here; enable and (re)start the service; show its status.
# The token never reaches this terminal: it goes to the root-only token file.
set -euo pipefail

readonly PROG="raspberry-pi-auth.sh"
readonly DIST="entra-device-agent"
readonly SERVICE="entra-agent"

usage() {
    cat <<'EOF'
usage: raspberry-pi-auth.sh [options]

Sign-in profile (needed the first time only; an existing profile is kept):
  --tenant-id ID       Entra tenant (GUID or domain)            env TENANT_ID
  --client-id ID       Application (client) ID, public client   env CLIENT_ID
  --scope SCOPE        delegated permission; repeatable          env SCOPE (space-separated)
  --cloud NAME         public | usgov | china                    env CLOUD
  --issuer URL         a non-Entra OpenID provider instead of --tenant-id   env ISSUER
  --authority-host URL another login host (private cloud, the local sandbox) env AUTHORITY_HOST
  --profile NAME       profile name (default: raspberry-pi)      env PROFILE

Agent settings written to /etc/entra-agent/agent.toml (only those given):
  --endpoint URL       telemetry endpoint (https://...)          env ENDPOINT
  --mqtt-host HOST     MQTT broker for status                    env MQTT_HOST
  --display DRIVER     ssd1306, sh1106, st7735, console, none... env DISPLAY_DRIVER
  --button-pin PIN     BCM pin of the button, e.g. 17            env BUTTON_PIN

Installation:
  --source SPEC        what to install: a checkout folder, a wheel, a git+https:// URL
                       or entra-device-agent==VERSION (default: this checkout)  env SOURCE
  --extras LIST        display,gpio (default) or none            env EXTRAS
  --no-apt             do not install Debian packages
  --root DIR           work on a scratch root instead of / (tests)  env ENTRA_AGENT_PREFIX
                       (this machine's service is left alone: nothing is started or
                       restarted unless env SYSTEMCTL names a stand-in for systemctl)

  --no-start           sign in, but do not start the service
  --yes                do not ask anything (this script never does; kept for scripts)
  -h, --help           this help
EOF
}

die() {
    # One line: the cause and, in brackets, what to do. $1 is the exit code.
    local code="$1"
    shift
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit "$code"
}

say() {
    printf '%s: %s\n' "$PROG" "$*" >&2
}

need_value() {
    [[ $# -ge 2 && -n "$2" ]] || die 2 "$1 needs a value (see --help)"
}

main() {
    local tenant_id="${TENANT_ID:-}" client_id="${CLIENT_ID:-}" cloud="${CLOUD:-}"
    local issuer="${ISSUER:-}" authority_host="${AUTHORITY_HOST:-}"
    local profile="${PROFILE:-raspberry-pi}" endpoint="${ENDPOINT:-}"
    local mqtt_host="${MQTT_HOST:-}" display="${DISPLAY_DRIVER:-}"
    local button_pin="${BUTTON_PIN:-}" source="${SOURCE:-}" extras="${EXTRAS:-}"
    local root="${ENTRA_AGENT_PREFIX:-}" apt=1 start=1
    local scopes=()
    if [[ -n "${SCOPE:-}" ]]; then
        read -r -a scopes <<< "$SCOPE"
    fi
    local flag_scopes=()

    while [[ $# -gt 0 ]]; do
        case "$1" in
            --tenant-id) need_value "$@"; tenant_id="$2"; shift 2 ;;
            --client-id) need_value "$@"; client_id="$2"; shift 2 ;;
            --scope) need_value "$@"; flag_scopes+=("$2"); shift 2 ;;
            --cloud) need_value "$@"; cloud="$2"; shift 2 ;;
            --issuer) need_value "$@"; issuer="$2"; shift 2 ;;
            --authority-host) need_value "$@"; authority_host="$2"; shift 2 ;;
            --profile) need_value "$@"; profile="$2"; shift 2 ;;
            --endpoint) need_value "$@"; endpoint="$2"; shift 2 ;;
            --mqtt-host) need_value "$@"; mqtt_host="$2"; shift 2 ;;
            --display) need_value "$@"; display="$2"; shift 2 ;;
            --button-pin) need_value "$@"; button_pin="$2"; shift 2 ;;
            --source) need_value "$@"; source="$2"; shift 2 ;;
            --extras) need_value "$@"; extras="$2"; shift 2 ;;
            --root) need_value "$@"; root="$2"; shift 2 ;;
            --no-apt) apt=0; shift ;;
            --no-start) start=0; shift ;;
            --yes|-y) shift ;;
            -h|--help) usage; return 0 ;;
            --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
            *) die 2 "unknown option '$1' (see --help)" ;;
        esac
    done
    # Flags replace the environment's scopes rather than adding to them.
    [[ ${#flag_scopes[@]} -gt 0 ]] && scopes=("${flag_scopes[@]}")

    # -- fail early: before anything is changed ---------------------------
    [[ "$(uname -s)" == "Linux" ]] \
        || die 1 "this is $(uname -s), not Linux (run this script on the Raspberry Pi itself, e.g. over ssh)"
    [[ "$(id -u)" -eq 0 ]] \
        || die 1 "must run as root: it installs a service and keeps tokens in root-only files (run: sudo ./$PROG ...)"
    # Every value is checked here, before a minutes-long install on a Pi (the
    # same rules entra-auth-cli and entra-agent check-config apply later).
    [[ "$profile" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ ]] \
        || die 2 "--profile '$profile' is not a valid name (1-64 letters, digits, '.', '_', '-')"
    [[ -z "$button_pin" || "$button_pin" =~ ^[A-Za-z0-9]+$ ]] \
        || die 2 "--button-pin '$button_pin' is not a pin (a BCM number such as 17, or GPIO17)"
    [[ -z "$tenant_id" || -z "$issuer" ]] \
        || die 2 "--tenant-id and --issuer exclude each other (Entra: --tenant-id; another OpenID provider: --issuer)"
    [[ -z "$cloud" || -n "$issuer" ]] || [[ "$cloud" =~ ^(public|usgov|china)$ ]] \
        || die 2 "--cloud '$cloud' is not one of public, usgov, china"
    [[ -z "$tenant_id" ]] || valid_tenant "$tenant_id" \
        || die 2 "--tenant-id '$tenant_id' is not a GUID, a domain or one of common, organizations, consumers (find it in the Entra admin center under Overview > Tenant ID)"
    local guid='^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$'
    [[ -z "$client_id" || -n "$issuer" || -n "$authority_host" || "$client_id" =~ $guid ]] \
        || die 2 "--client-id '$client_id' is not a GUID (copy the 'Application (client) ID' from the app registration's Overview page)"
    [[ -z "$client_id" || "$client_id" =~ ^[^[:space:][:cntrl:]]{1,255}$ ]] \
        || die 2 "--client-id '$client_id' is not valid (give the client id your provider shows for the app)"
    local url_flag url_value
    for url_flag in --issuer --authority-host --endpoint; do
        case "$url_flag" in
            --issuer) url_value="$issuer" ;;
            --authority-host) url_value="$authority_host" ;;
            --endpoint) url_value="$endpoint" ;;
        esac
        [[ -z "$url_value" ]] || secure_url "$url_value" \
            || die 2 "$url_flag '$url_value' is not an https:// URL (plain http only for 127.0.0.1, ::1 and localhost)"
    done
    local scope
    for scope in "${scopes[@]}"; do
        [[ -n "$scope" && ! "$scope" =~ [[:space:][:cntrl:]\"\\] ]] \
            || die 2 "--scope '$scope' is not valid (a scope has no spaces or quotes, e.g. https://graph.microsoft.com/User.Read)"
    done
    [[ -z "$mqtt_host" || "$mqtt_host" =~ ^[A-Za-z0-9]([A-Za-z0-9._:-]{0,252}[A-Za-z0-9])?$ ]] \
        || die 2 "--mqtt-host '$mqtt_host' is not a host name or address (e.g. broker.local or 192.168.1.10)"
    [[ -z "$display" || "$display" =~ ^[A-Za-z0-9_]{1,32}$ ]] \
        || die 2 "--display '$display' is not a driver name (console, none, framebuffer, ssd1306, sh1106, st7735...)"
    [[ -z "$extras" || "$extras" =~ ^(none|(display|gpio)(,(display|gpio))*)$ ]] \
        || die 2 "--extras '$extras' is not display, gpio, display,gpio or none"

    if [[ -n "$root" ]]; then
        mkdir -p -- "$root"
        root="$(cd -- "$root" && pwd -P)"
        # The CLIs must see the scratch root's files, not this machine's.
        export ENTRA_AGENT_CONFIG_DIR="$root/etc/entra-agent"
        export ENTRA_AGENT_STATE_DIR="$root/var/lib/entra-agent"
        export ENTRA_AGENT_RUNTIME_DIR="$root/run/entra-agent"
        export ENTRA_AGENT_PREFIX="$root"
        unset ENTRA_AGENT_CONFIG
    fi
    local venv="$root/opt/entra-agent/venv"
    local cli="$venv/bin/entra-auth-cli" agent="$venv/bin/entra-agent"
    local config_dir="$root/etc/entra-agent"
    local config="$config_dir/agent.toml"

    require_profile_values() {
        [[ -n "$client_id" ]] \
            || die 2 "--client-id is required to create the profile '$profile' (pass --client-id or set CLIENT_ID: the Application (client) ID of your public-client app registration)"
        [[ -n "$tenant_id" || -n "$issuer" ]] \
            || die 2 "--tenant-id is required to create the profile '$profile' (pass --tenant-id or set TENANT_ID: your tenant's GUID or domain; or --issuer for another OpenID provider)"
    }

    # -- install ------------------------------------------------------------
    if [[ ! -x "$cli" || -n "$source" || -n "$extras" ]]; then
        if [[ ! -x "$cli" && ! -f "$config_dir/profiles.toml" ]]; then
            # No profile can exist yet: say what is missing before installing.
            require_profile_values
        fi
        install_agent "$root" "$source" "${extras:-display,gpio}" "$apt"
    fi
    [[ -x "$cli" ]] || die 1 "installation finished but $cli is missing (see the messages above)"

    # -- profile ------------------------------------------------------------
    local profiles_json
    profiles_json="$("$cli" list-profiles --output json)" \
        || die 3 "entra-auth-cli could not list the profiles (see its message above)"
    local replace=0
    if json_has_profile "$venv/bin/python" "$profile" <<< "$profiles_json" \
            && [[ -n "$client_id" && -n "$tenant_id$issuer" ]] \
            && json_profile_never_signed_in "$venv/bin/python" "$profile" <<< "$profiles_json"; then
        # Never signed in: nothing to lose, and the values given may mend a
        # typo that made the last run fail (a wrong tenant or host).
        say "profile '$profile' exists but has never signed in; replacing it with the values given"
        replace=1
    fi
    if [[ $replace -eq 0 ]] && json_has_profile "$venv/bin/python" "$profile" <<< "$profiles_json"; then
        say "profile '$profile' exists; keeping it (to change it: sudo entra-auth-cli create-profile --force --name $profile ...)"
    else
        require_profile_values
        local args=(create-profile --name "$profile" --client-id "$client_id" --default-flow device-code)
        [[ $replace -eq 1 ]] && args+=(--force)
        if [[ -n "$issuer" ]]; then
            args+=(--issuer "$issuer")
        else
            args+=(--tenant-id "$tenant_id")
            [[ -n "$cloud" ]] && args+=(--cloud "$cloud")
        fi
        [[ -n "$authority_host" ]] && args+=(--authority-host "$authority_host")
        local scope
        for scope in "${scopes[@]}"; do
            args+=(--scope "$scope")
        done
        say "creating the sign-in profile '$profile'"
        # Keep entra-auth-cli's exit code: 2 is a mistyped value, 3 a broken profiles.toml.
        "$cli" "${args[@]}" || die $? "could not create the profile '$profile' (see the message above)"
    fi

    # -- agent.toml ---------------------------------------------------------
    local settings=("profile=$profile")
    [[ -n "$endpoint" ]] && settings+=("telemetry.endpoint=$endpoint")
    [[ -n "$mqtt_host" ]] && settings+=("mqtt.host=$mqtt_host")
    [[ -n "$display" ]] && settings+=("display.driver=$display")
    [[ -n "$button_pin" ]] && settings+=("button.pin=$button_pin")
    set_config "$agent" "$config" "${settings[@]}"
    if [[ -x "$agent" ]]; then
        "$agent" check-config --config "$config" >&2 \
            || die 3 "$config is not valid (fix the key named above, then run this script again)"
    fi

    # -- sign in ------------------------------------------------------------
    if "$cli" list-profiles --output json 2>/dev/null \
            | json_profile_signed_in "$venv/bin/python" "$profile"; then
        # No code to type: "grab your phone" would send the person looking.
        say "profile '$profile' is signed in already; using its saved sign-in"
    else
        cat >&2 <<EOF

  Sign-in for profile '$profile'.
  Grab your phone or another computer: open the address below and enter
  the code. This waits until you have signed in (Ctrl+C cancels).

EOF
    fi
    local status=0
    # The token goes to /dev/null: entra-auth-cli has saved it in the
    # root-only token file, where the service reads it. A saved or refreshable
    # token comes back with no new code, so running this again asks nothing.
    # --display also puts the code (and a QR code) on the screen configured
    # in agent.toml, for a person standing at the board.
    "$cli" get-token --flow device-code --display --profile "$profile" --output json > /dev/null || status=$?
    case "$status" in
        0) say "signed in; the token is saved for the service" ;;
        4) die 4 "the sign-in did not complete: the code expired or was declined (run $PROG again for a new code)" ;;
        5) die 5 "the identity provider could not be reached (check the network and the clock: timedatectl; then run $PROG again)" ;;
        130) die 130 "sign-in cancelled (run $PROG again when ready)" ;;
        *) die "$status" "sign-in failed (see the message above; run $PROG again)" ;;
    esac

    # -- service ------------------------------------------------------------
    # A scratch root has no service of its own to run, and this machine's
    # must not be touched: only a stand-in named by SYSTEMCTL is called then.
    local systemctl=(systemctl)
    if [[ -n "${SYSTEMCTL:-}" ]]; then
        systemctl=("$SYSTEMCTL")
    elif [[ -n "$root" ]]; then
        say "scratch root $root: enabled there, not started (this machine's systemd is left alone)"
        return 0
    fi
    if [[ $start -eq 0 ]]; then
        "${systemctl[@]}" enable "$SERVICE" || die 1 "systemctl could not enable $SERVICE (see its message above)"
        say "enabled; not started (--no-start). Start it with: sudo systemctl start $SERVICE"
        return 0
    fi
    if "${systemctl[@]}" is-active --quiet "$SERVICE"; then
        say "restarting $SERVICE (new settings and token)"
        "${systemctl[@]}" restart "$SERVICE" \
            || die 1 "$SERVICE did not restart (see: journalctl -u $SERVICE -n 50 --no-pager)"
    else
        say "starting $SERVICE (and at every boot)"
        "${systemctl[@]}" enable --now "$SERVICE" \
            || die 1 "$SERVICE did not start (see: journalctl -u $SERVICE -n 50 --no-pager)"
    fi
    "${systemctl[@]}" status --no-pager "$SERVICE" || true
    say "done. Follow it with: journalctl -u $SERVICE -f"
}

install_agent() {
    # Run deploy/install.sh: the one next to this script in a checkout, or,
    # when this script came alone (ssh ... bash -s < raspberry-pi-auth.sh),
    # the one shipped inside the package that --source names.
    local root="$1" source="$2" extras="$3" apt="$4"
    local args=(--extras "$extras")
    [[ -n "$root" ]] && args+=(--root "$root")
    [[ $apt -eq 0 ]] && args+=(--no-apt)
    local here=""
    if [[ -n "${BASH_SOURCE[0]:-}" && -f "${BASH_SOURCE[0]}" ]]; then
        here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
    fi
    if [[ -n "$here" && -f "$here/deploy/install.sh" ]]; then
        [[ -n "$source" ]] && args+=(--source "$source")
        say "installing with $here/deploy/install.sh"
        RASPBERRY_PI_AUTH=1 bash "$here/deploy/install.sh" "${args[@]}" || die 1 "installation failed (see the message above)"
        return 0
    fi
    [[ -n "$source" ]] \
        || die 2 "$DIST is not installed and there is no checkout here to install it from (pass --source: a wheel copied to the board, a git+https:// URL, or $DIST==VERSION from an index the board can reach)"

    # Bootstrap: the venv and the package, whose share/ holds install.sh.
    local venv="$root/opt/entra-agent/venv"
    if [[ ! -x "$venv/bin/python" ]]; then
        # Debian's python3 lacks ensurepip (so venv fails) until python3-venv is in.
        if [[ $apt -eq 1 && -z "$root" ]] && ! python3 -c 'import ensurepip' 2>/dev/null \
            && command -v apt-get >/dev/null 2>&1; then
            if ! { apt-get update -q \
                   && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv; }; then
                die 1 "apt-get could not install python3-venv (check the network, then run $PROG again)"
            fi
        fi
        mkdir -p -- "$root/opt/entra-agent"
        # --system-site-packages: see deploy/install.sh (apt's C modules).
        python3 -m venv --system-site-packages -- "$venv" \
            || die 1 "could not create $venv (install python3-venv: sudo apt-get install python3-venv)"
    fi
    local requirement bracket=""
    [[ -n "$extras" && "$extras" != "none" ]] && bracket="[$extras]"
    if [[ -e "$source" ]]; then
        requirement="$(realpath -- "$source")$bracket"
    elif [[ "$source" == *"://"* || "$source" == git+* ]]; then
        requirement="$DIST$bracket @ $source"
    elif [[ "$source" =~ ^([A-Za-z0-9][A-Za-z0-9._-]*)(.*)$ ]]; then
        requirement="${BASH_REMATCH[1]}$bracket${BASH_REMATCH[2]}"
    else
        die 2 "cannot tell what --source '$source' is (give a .whl file, a git+https:// URL or $DIST==VERSION)"
    fi
    say "installing $requirement"
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input --quiet -- "$requirement" \
        || die 1 "pip could not install $requirement (see its message above)"
    local installer="$venv/share/$DIST/install.sh"
    [[ -f "$installer" ]] \
        || die 1 "the package from $source carries no install.sh (it predates this script: use a newer --source)"
    RASPBERRY_PI_AUTH=1 bash "$installer" --source "$source" "${args[@]}" || die 1 "installation failed (see the message above)"
}

valid_tenant() {
    # The rules of agent.auth.endpoints.validate_tenant: a GUID, a domain,
    # or common / organizations / consumers.
    local t="$1" guid='^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$'
    local domain='^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,63}$'
    [[ "${t,,}" =~ ^(common|organizations|consumers)$ || "$t" =~ $guid ]] && return 0
    [[ ${#t} -ge 4 && ${#t} -le 253 && "$t" =~ $domain ]]
}

secure_url() {
    # https://host..., or plain http on loopback only (agent.auth.endpoints.require_secure).
    local url="$1"
    [[ "$url" =~ ^https://[^/?#[:space:]]+([/?#][^[:space:]]*)?$ ]] && return 0
    [[ "$url" =~ ^http://(127\.[0-9]+\.[0-9]+\.[0-9]+|localhost|\[::1\])(:[0-9]+)?([/?#][^[:space:]]*)?$ ]]
}

json_has_profile() {
    # Reads `list-profiles --output json` on stdin; true when $2 is in it.
    "$1" -c '
import json, sys
names = {p.get("name") for p in json.load(sys.stdin)}
sys.exit(0 if sys.argv[1] in names else 1)
' "$2"
}

json_profile_signed_in() {
    # Reads `list-profiles --output json` on stdin; true when profile $2 has a saved sign-in.
    "$1" -c '
import json, sys
signed = {p.get("name"): p.get("signed_in") for p in json.load(sys.stdin)}
sys.exit(0 if signed.get(sys.argv[1]) is True else 1)
' "$2"
}

json_profile_never_signed_in() {
    # Reads `list-profiles --output json` on stdin; true when profile $2 has
    # no saved sign-in at all (false too when its token file cannot be read).
    "$1" -c '
import json, sys
signed = {p.get("name"): p.get("signed_in") for p in json.load(sys.stdin)}
sys.exit(0 if signed.get(sys.argv[1]) is False else 1)
' "$2"
}

set_config() {
    # Set "table.key=value" pairs in agent.toml with `entra-agent config set`
    # (agent/configedit.py): every other line stays (comments included), the
    # result is checked with the agent's config loader, written atomically,
    # and only when it changes. Its exit code is kept: 2 a value the config
    # refuses, 3 the file invalid, 6 it cannot be written.
    local agent="$1" config="$2"
    shift 2
    [[ -f "$config" ]] || die 3 "$config is missing (run deploy/install.sh, which writes it from the example)"
    [[ -x "$agent" ]] || die 1 "$agent is missing (run this script again with --source to reinstall)"
    "$agent" config set --config "$config" "$@" \
        || die $? "could not update $config (see the message above; edit it by hand)"
}

# All of it runs from inside main, after bash has read the whole file: when
# the script arrives on stdin (ssh ... bash -s), no command can eat the rest.
main "$@" < /dev/null
exit $?
