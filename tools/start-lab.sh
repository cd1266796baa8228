#!/usr/bin/env bash
# Start JupyterLab for the course on 127.0.0.1 (PORT, default 8888), opened at
# the learner copy of the index. Called by `make lab` (and the VM's service).
# JAP_LAB_IP (default 127.0.0.1): the VM service listens on 0.0.0.0 behind a NAT
# port forward that the Vagrantfile binds to the host's 127.0.0.1, and a guest
# firewall admits the lab's port only through that forward (vagrant/README.md).
#
# The token lives in one file (mode 0600, root) and is shown only on the
# terminal of whoever started the lab (JAP_SHOW_TOKEN=1: on stdout anyway):
# never on a stdout that is not a terminal (the service's stdout is the
# journal), never on a command line (every user may read /proc/PID/cmdline,
# proc(5)). JupyterLab reads it from the file (JUPYTER_TOKEN_FILE) and logs
# its URLs with the token elided.
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
token_file=$state/jupyter-token
# One token per machine, kept so the URL stays valid across restarts.
if [ ! -s "$token_file" ]; then
  ( umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_hex(24), end="")' > "$token_file" )
fi
chmod 0600 "$token_file"
token=$(cat "$token_file")
# Jupyter takes the file's content as it is: no trailing newline (older files had one).
if [ "$(wc -c < "$token_file")" -ne "${#token}" ]; then ( umask 077; printf '%s' "$token" > "$token_file" ); fi
# Say it before printing a URL that would lead to whatever else holds the port.
if ! .venv/bin/python -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
s.bind((sys.argv[1], int(sys.argv[2])))' "${JAP_LAB_IP:-127.0.0.1}" "$port" 2>/dev/null; then
  echo "error: port $port is taken (another JupyterLab? \`ss -ltnp 'sport = :$port'\` names it)." >&2
  echo "       Stop that one, or start the lab on another port: make lab PORT=$((port + 1))" >&2
  exit 1
fi
# The plain /lab URL restores the default workspace: make it open the index, not the Launcher.
.venv/bin/python tools/lab_workspace.py
url="http://127.0.0.1:${port}/lab/tree/learner/index.ipynb"
echo
echo "Just a Process: JupyterLab at"
if [ -t 1 ] || [ "${JAP_SHOW_TOKEN:-}" = 1 ]; then
  echo "    $url?token=${token}"
else
  echo "    $url"
  echo "    its token: sudo cat $token_file"
fi
echo "(solutions for instructors: notebooks/*.ipynb; stop with Ctrl-C)"
echo
unset token
export JUPYTER_TOKEN_FILE=$token_file
# Kernels over IPC (unix(7) sockets in Jupyter's runtime folder), not TCP ports: no race
# for ports when several notebooks reopen at once (ZMQError: Address already in use),
# and no kernel port on the network.
exec .venv/bin/jupyter lab --allow-root --no-browser \
  --ServerApp.ip="${JAP_LAB_IP:-127.0.0.1}" --ServerApp.port="$port" --ServerApp.port_retries=0 \
  --ServerApp.root_dir="$PWD/notebooks" \
  --KernelManager.transport=ipc \
  --LabApp.default_url=/lab/tree/learner/index.ipynb
