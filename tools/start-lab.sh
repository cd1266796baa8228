#!/usr/bin/env bash
# Start JupyterLab for the course on 127.0.0.1 (PORT, default 8888), opened at
# the learner copy of the index. Called by `make lab` (and the VM's service).
# JAP_LAB_IP (default 127.0.0.1): the VM service listens on 0.0.0.0 behind a NAT
# port forward that the Vagrantfile binds to the host's 127.0.0.1 (vagrant/README.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
port=${1:-8888}
if [ "$(id -u)" -ne 0 ]; then
  echo "error: the lab needs root: its demos create namespaces, cgroups and mounts." >&2
  echo "       Run it in a disposable VM (see vagrant/) as root: sudo -i; make lab" >&2
  exit 1
fi
.venv/bin/python -m justaprocess doctor || {
  echo "error: the doctor found a problem (above); fix it, then run make lab again" >&2; exit 1; }
state=${JAP_STATE_DIR:-/var/lib/justaprocess}
mkdir -p "$state"
# One token per machine, kept so the URL stays valid across restarts.
if [ ! -s "$state/jupyter-token" ]; then
  ( umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_hex(24))' > "$state/jupyter-token" )
fi
token=$(cat "$state/jupyter-token")
url="http://127.0.0.1:${port}/lab/tree/learner/index.ipynb?token=${token}"
echo
echo "Just a Process: JupyterLab at"
echo "    $url"
echo "(solutions for instructors: notebooks/*.ipynb; stop with Ctrl-C)"
echo
exec .venv/bin/jupyter lab --allow-root --no-browser \
  --ServerApp.ip="${JAP_LAB_IP:-127.0.0.1}" --ServerApp.port="$port" --ServerApp.port_retries=0 \
  --ServerApp.root_dir="$PWD/notebooks" \
  --IdentityProvider.token="$token" \
  --LabApp.default_url=/lab/tree/learner/index.ipynb
