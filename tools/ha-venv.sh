#!/usr/bin/env bash
# Install a pinned Home Assistant core in its own virtual environment, OUTSIDE the
# repository, for the end-to-end test tests/test_homeassistant_e2e.py.
#
#   tools/ha-venv.sh            install (or reuse) and print the venv's path
#   HA_VERSION=2025.4.4 ENTRA_AGENT_HA_CACHE=/var/cache/entra-agent-ha (defaults)
#   HA_PYTHON=/path/to/python3.13 (default: python3.13 on PATH, then pyenv's)
#
# Home Assistant 2025.x needs Python 3.13. The resolver is kept fast by HA's own
# pins (homeassistant/package_constraints.txt, taken from the pinned wheel), and
# the requirements of the integrations the test loads are installed here too, so
# the test runs HA with --skip-pip (no network at test time). A finished venv is
# marked with .complete and reused by later runs; a broken one is rebuilt.
set -euo pipefail

HA_VERSION="${HA_VERSION:-2025.4.4}"
CACHE="${ENTRA_AGENT_HA_CACHE:-/var/cache/entra-agent-ha}"
VENV="$CACHE/ha-$HA_VERSION"
# Integrations the e2e test configures, besides those HA always loads
# (bootstrap's core and default sets); their dependencies are followed.
INTEGRATIONS="mqtt api config http"
# Bump when what is installed changes, so an older cached venv is rebuilt.
RECIPE="$HA_VERSION recipe 2"

if [ "$(cat "$VENV/.complete" 2>/dev/null)" = "$RECIPE" ] \
   && "$VENV/bin/python" -c 'import homeassistant' >/dev/null 2>&1; then
  echo "$VENV"
  exit 0
fi

py="${HA_PYTHON:-}"
if [ -z "$py" ]; then
  for cand in "$(command -v python3.13 || true)" /root/.pyenv/versions/3.13*/bin/python3.13 "$HOME"/.pyenv/versions/3.13*/bin/python3.13; do
    # (a pyenv shim exists on PATH even when it cannot run: try each one)
    if [ -n "$cand" ] && [ -x "$cand" ] \
       && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1; then
      py="$cand"; break
    fi
  done
fi
if [ -z "$py" ]; then
  echo "ha-venv.sh: error: Python 3.13 not found (Home Assistant $HA_VERSION needs it); set HA_PYTHON=/path/to/python3.13" >&2
  exit 2
fi

mkdir -p "$CACHE"
rm -rf "$VENV"
"$py" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip

# HA's pins, from the pinned wheel itself.
wheels="$CACHE/wheels"
mkdir -p "$wheels"
"$VENV/bin/pip" download -q --no-deps -d "$wheels" "homeassistant==$HA_VERSION"
wheel="$(ls "$wheels"/homeassistant-"$HA_VERSION"-*.whl | head -n1)"
"$VENV/bin/python" - "$wheel" "$VENV/package_constraints.txt" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    data = z.read("homeassistant/package_constraints.txt")
open(sys.argv[2], "wb").write(data)
PY
"$VENV/bin/pip" install -q -c "$VENV/package_constraints.txt" "$wheel"

# Requirements of the integrations the test loads (HA would pip-install them at start).
reqs="$("$VENV/bin/python" - $INTEGRATIONS <<'PY'
import json, pathlib, sys
import homeassistant.components as comps
from homeassistant import bootstrap
root = pathlib.Path(comps.__path__[0])
always = (bootstrap.CORE_INTEGRATIONS | bootstrap.LOGGING_AND_HTTP_DEPS_INTEGRATIONS
          | bootstrap.FRONTEND_INTEGRATIONS | bootstrap.DEFAULT_INTEGRATIONS)
todo, seen, reqs = sorted(set(sys.argv[1:]) | always), set(), set()
while todo:
    name = todo.pop()
    if name in seen:
        continue
    seen.add(name)
    manifest = root / name / "manifest.json"
    if not manifest.is_file():
        continue
    data = json.loads(manifest.read_text())
    reqs.update(data.get("requirements", []))
    todo.extend(data.get("dependencies", []))
print(" ".join(sorted(reqs)))
PY
)"
if [ -n "$reqs" ]; then
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q -c "$VENV/package_constraints.txt" $reqs
fi
"$VENV/bin/python" -c 'import homeassistant' && echo "$RECIPE" >"$VENV/.complete"
echo "$VENV"
