#!/usr/bin/env bash
# The installer for real, on this machine: install into /opt as README says,
# draw every screen with the installed venv, check what it drew, uninstall.
#
#   sudo tools/ci-install-check.sh --yes      (CI runs it from .ci/run with CI=true)
#
# It changes this machine (/opt/entra-agent, /etc/entra-agent, the unit,
# /usr/local/bin links, Debian packages), so it refuses to run unless CI=true
# or --yes is given, and refuses when an entra-agent is installed already
# (it would remove it at the end). tests/test_install.py covers the installer
# in a scratch root; this is the run into / that a board gets.
set -euo pipefail

readonly PROG="ci-install-check.sh"
REPO="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
readonly REPO
readonly VENV=/opt/entra-agent/venv

die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
say() { printf '%s: %s\n' "$PROG" "$*" >&2; }

[[ "${CI:-}" == "true" || "${1:-}" == "--yes" ]] \
    || die "changes this machine (installs into /opt and /etc): run it with --yes, or leave it to CI"
[[ "$(id -u)" -eq 0 ]] || die "must run as root (it installs into /)"
[[ ! -e /opt/entra-agent && ! -e /etc/systemd/system/entra-agent.service \
   && ! -e /etc/entra-agent && ! -e /var/lib/entra-agent ]] \
    || die "an entra-agent is installed here already; this check would remove it (uninstall it first)"

work="$(mktemp -d)"
cleanup() {
    bash "$REPO/deploy/install.sh" --uninstall --purge --yes >/dev/null 2>&1 || true
    rm -rf -- "$work"
}
trap cleanup EXIT

# README: sudo deploy/install.sh --extras display,gpio. --python: a board's
# python3 is Debian's; on this machine python3 on PATH may be another one
# (pyenv), which would not see Debian's python3-pil.
say "deploy/install.sh --extras display,gpio --python /usr/bin/python3"
bash "$REPO/deploy/install.sh" --extras display,gpio --python /usr/bin/python3

[[ -x /usr/local/bin/entra-agent ]] || die "install.sh did not link /usr/local/bin/entra-agent"
systemd-analyze verify /etc/systemd/system/entra-agent.service

say "entra-agent screens with the installed venv"
/usr/local/bin/entra-agent screens --out "$work/screens"
(cd / && "$VENV/bin/python" -m hardware.layout_report) > "$work/installed.json"

# What the installed venv drew with, and that it drew everything the
# checkout's gallery has, laid out as the test suite's Debian-Pillow run has it.
"$VENV/bin/python" - "$work" <<'EOF'
import json, sys
from pathlib import Path
import PIL
work = Path(sys.argv[1])
report = json.loads((work / "installed.json").read_text())
pngs = sorted(p.name for p in (work / "screens").glob("*.png"))
problems = []
if "/dist-packages/" not in PIL.__file__:
    problems.append(f"the installed venv's Pillow is {PIL.__file__}, not Debian's python3-pil")
if report["font"][0] != "truetype":
    problems.append(f"screens fall back to {report['font'][0]} (is fonts-dejavu-core installed?)")
pixel = {k.rsplit("-", 1)[0] for k in report["screens"]}
missing = sorted(k for k in pixel if f"{k}.png" not in pngs)
if missing:
    problems.append(f"no PNG for {', '.join(missing[:5])}")
print(f"{PIL.__version__} from {PIL.__file__}; font {report['font'][1]}; "
      f"{len(pngs)} PNG files, {len(report['screens'])} pixel layouts")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
EOF

reference="$REPO/.venv-debian-pil/bin/python"
if [[ -x "$reference" ]]; then
    (cd "$REPO" && "$reference" -m hardware.layout_report) > "$work/reference.json"
    python3 - "$work" <<'EOF'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
a = json.loads((work / "installed.json").read_text())["screens"]
b = json.loads((work / "reference.json").read_text())["screens"]
diff = [k for k in b if a.get(k) != b[k]]
print(f"installed layout vs the test suite's Debian-Pillow run: {len(b) - len(diff)}/{len(b)} identical")
sys.exit(1 if diff else 0)
EOF
fi
say "OK: installed into /opt, every screen drawn with the installed venv (removed again)"
