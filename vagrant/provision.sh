#!/usr/bin/env bash
# Provision a workshop VM for "Just a Process": the one script that Vagrant,
# cloud-init and CI (make test-v2 / test-vm) all run, as root, on a fresh
# Debian 12 or Ubuntu 22.04/24.04. Idempotent: a second run installs nothing.
#
#   1. the system packages of tools/system-packages.txt  (tools/install-system-packages.sh)
#   2. the course's Python environment and learner copies (make venv learner, as `make lab`)
#   3. a systemd service that starts JupyterLab at boot  (tools/start-lab.sh)
#   4. the doctor, then the URL with its token
#
# Environment (all optional):
#   JAP_REPO     the course checkout in the VM (default: this script's ../, else /opt/justaprocess;
#                Vagrant uploads the script to /tmp, so the Vagrantfile passes it)
#   JAP_LAB_IP   address JupyterLab listens on in the VM (default 127.0.0.1: reach it through
#                `ssh -L`; the Vagrantfile sets 0.0.0.0 because a NAT port forward arrives on
#                the VM's NAT address, and binds the host side to 127.0.0.1 only)
#   JAP_LAB_PORT port in the VM (default 8888)
#   JAP_SHOW_TOKEN=1  print the URL with its token even when stdout is not a terminal: the
#                Vagrantfile sets it, as Vagrant shows this output only on the terminal of
#                whoever ran `vagrant up`. Otherwise the token is printed only to a terminal,
#                never into a log (cloud-init's); it is in /var/lib/justaprocess/jupyter-token (0600).
set -euo pipefail

log() { printf '[provision] %s\n' "$*"; }
# Each step's time, printed at the end (a slow seat shows where it spends it).
times=() step_t=$SECONDS
step_done() { times+=("$1 $((SECONDS - step_t))s"); step_t=$SECONDS; }
die() { printf '[provision] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (Vagrant and cloud-init do): sudo bash $0"

if [ -n "${JAP_REPO:-}" ]; then
  repo=$JAP_REPO
elif [ -f "$(dirname "${BASH_SOURCE[0]}")/../Makefile" ]; then
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
else
  repo=/opt/justaprocess
fi
if [ ! -f "$repo/Makefile" ] || [ ! -f "$repo/tools/system-packages.txt" ]; then
  die "no course checkout at $repo: set JAP_REPO to the folder that has the Makefile"
fi
lab_ip=${JAP_LAB_IP:-127.0.0.1}
lab_port=${JAP_LAB_PORT:-8888}
export DEBIAN_FRONTEND=noninteractive
cd "$repo"
log "course checkout: $repo"

# --- 1. system packages: the one list, installed by the Makefile's own script --
# shellcheck source=/dev/null
. /etc/os-release
log "system: ${PRETTY_NAME:-unknown}"
# A machine being provisioned: dpkg need not fsync each file (install-system-packages.sh).
JAP_DPKG_UNSAFE_IO=1 bash tools/install-system-packages.sh

# The helpers need Python >= 3.11 (helpers/pyproject.toml). Debian 12 and
# Ubuntu 24.04 have it as python3; Ubuntu 22.04's python3 is 3.10, and its
# archive has python3.11 beside it: build the venv with that one.
python=/usr/bin/python3
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  log "python3 is older than 3.11: installing python3.11 beside it"
  apt-get install -y -qq --no-install-recommends python3.11 python3.11-venv
  python=/usr/bin/python3.11
fi
step_done "system packages"

# --- 2. the Python environment and the learner copies: what `make lab` does ---
# `make venv learner` = the `lab` target without starting JupyterLab. The venv
# is rebuilt only when helpers/pyproject.toml or helpers/constraints.txt (the
# versions every seat installs, `pip install -c`) changes (the Makefile's stamp).
# The stamp is compared by time: a checkout synced again (Vagrant's rsync, a
# fresh clone) looks newer than a venv built from the same list. When the list's
# content is unchanged, say so to make, so that a pre-built box stays offline.
sum=$(cat helpers/pyproject.toml helpers/constraints.txt | sha256sum | cut -d' ' -f1)
if [ -f .venv/.installed ] && [ "$(cat .venv/.jap-pyproject.sha256 2>/dev/null)" = "$sum" ]; then
  touch .venv/.installed
fi
make --no-print-directory PYTHON="$python" venv learner
echo "$sum" > .venv/.jap-pyproject.sha256
step_done "python env + learner copies"

# --- 3. JupyterLab as a service --------------------------------------------
# tools/start-lab.sh runs the doctor, keeps one token per machine in
# /var/lib/justaprocess/jupyter-token and starts JupyterLab with the lab's flags.
unit=/etc/systemd/system/justaprocess-lab.service
cat > "$unit.tmp" <<EOF
# Written by $repo/vagrant/provision.sh: edit that, then provision again.
[Unit]
Description=Just a Process: JupyterLab for the course
Documentation=file://$repo/vagrant/README.md
After=network.target

[Service]
Type=simple
WorkingDirectory=$repo
Environment=JAP_LAB_IP=$lab_ip
# cgroup v2 lets only leaves hold processes: the server moves into <unit>/server
# first, so the notebooks' lab cgroups can sit beside it inside the unit
# (helpers/justaprocess/cgroups/tree.py, enter_leaf; a no-op on v1 and the hybrid).
# The guest firewall: the lab's port only through the port forward and loopback
# (vagrant/lab-firewall.nft says why; nft(8)). Loaded again at every start.
ExecStartPre=/usr/sbin/nft -D port=$lab_port -f $repo/vagrant/lab-firewall.nft
ExecStart=/bin/bash -c '$repo/.venv/bin/python -m justaprocess cgroup --enter-leaf server && exec /bin/bash $repo/tools/start-lab.sh $lab_port'
Restart=on-failure
RestartSec=5
# The notebooks make their own cgroups below this service's: delegate the
# subtree so systemd leaves it alone (systemd.resource-control(5), Delegate=).
Delegate=yes
# Everything the lab runs (JupyterLab, kernels, every demo's cgroup) sits in this
# unit: a runaway demo stops here and the VM stays usable - sshd, a shell, the
# service's restart (systemd.resource-control(5): TasksMax=, MemoryMax=).
TasksMax=2048
MemoryMax=75%

[Install]
WantedBy=multi-user.target
EOF
changed=yes
if cmp -s "$unit.tmp" "$unit"; then changed=no; rm -f "$unit.tmp"; else mv "$unit.tmp" "$unit"; fi

# systemd is running only on a booted machine (sd_booted(3)); in a chroot (the
# image build of `make test-v2` and `make box`) the unit is enabled for the next boot.
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable --quiet justaprocess-lab.service
  if [ "$changed" = yes ] || ! systemctl is-active --quiet justaprocess-lab.service; then
    systemctl restart justaprocess-lab.service
  fi
  booted=yes
else
  systemctl enable --quiet justaprocess-lab.service 2>/dev/null ||
    ln -sf "$unit" /etc/systemd/system/multi-user.target.wants/justaprocess-lab.service
  booted=no
fi

# --- 4. doctor and URL ------------------------------------------------------
if [ "$booted" = yes ]; then
  .venv/bin/python -m justaprocess doctor || die "the doctor found a problem (above)"
  # Wait for JupyterLab to answer (a first start compiles its assets: allow a few minutes).
  # The token goes from its file to the request header: never on a command line.
  token_file=/var/lib/justaprocess/jupyter-token
  answered=no
  for _ in $(seq 1 180); do
    if [ -s "$token_file" ]; then
      if .venv/bin/python - "$lab_port" "$token_file" <<'PY'
import sys, urllib.request
port, token_file = sys.argv[1], sys.argv[2]
with open(token_file) as f:
    token = f.read().strip()
req = urllib.request.Request(f"http://127.0.0.1:{port}/api/status",
                             headers={"Authorization": f"token {token}"})
urllib.request.urlopen(req, timeout=5)
PY
      then answered=yes; break; fi
    fi
    systemctl is-failed --quiet justaprocess-lab.service &&
      { journalctl -u justaprocess-lab.service --no-pager | tail -20 >&2 || true; die "the JupyterLab service failed (above)"; }
    sleep 2
  done
  [ "$answered" = yes ] || die "JupyterLab did not start: journalctl -u justaprocess-lab.service"
  log "ready. Open on this machine (Vagrant: the forwarded port; cloud: ssh -L $lab_port:127.0.0.1:$lab_port):"
  if [ -t 1 ] || [ "${JAP_SHOW_TOKEN:-}" = 1 ]; then
    log "    http://127.0.0.1:${lab_port}/lab/tree/learner/index.ipynb?token=$(cat "$token_file")"
  else
    log "    http://127.0.0.1:${lab_port}/lab/tree/learner/index.ipynb"
    log "    its token (never written into a log): sudo cat $token_file"
  fi
  step_done "service + doctor + JupyterLab answering"
else
  log "not booted (chroot): the service starts JupyterLab at the next boot; its doctor runs then"
fi
[ "$booted" = yes ] || step_done "service enabled"
log "step times: ${times[*]/%/,} total ${SECONDS}s"
