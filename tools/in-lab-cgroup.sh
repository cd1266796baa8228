#!/usr/bin/env bash
# Run a command (the tests, JupyterLab) where the lab is allowed to create cgroups.
#
# On cgroup v1 and the v1+v2 hybrid: nothing to do. On pure cgroup v2 a
# cgroup may hand controllers to children only when it holds no processes
# itself (cgroup-v2.rst, "No Internal Process Constraint"), and under systemd
# only a *delegated* cgroup is ours to divide (systemd.resource-control(5),
# Delegate=). So: in a delegated unit (the VM's JupyterLab service, a CI job),
# move into a leaf "job" and let the lab make its cgroups beside it; anywhere
# else (an ssh login's session scope) ask systemd for a delegated scope first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py=.venv/bin/python

if [ "$(stat -f -c %T /sys/fs/cgroup)" != cgroup2fs ]; then
  exec "$@"
fi
if "$py" -m justaprocess cgroup --enter-leaf job >/dev/null 2>&1; then
  exec "$@"
fi
if [ -z "${JAP_IN_SCOPE:-}" ] && [ -d /run/systemd/system ] && command -v systemd-run >/dev/null; then
  # A transient scope with Delegate=yes; this script runs again inside it.
  exec systemd-run --scope --quiet --collect -p Delegate=yes --unit="justaprocess-$$" \
    env JAP_IN_SCOPE=1 bash "$0" "$@"
fi
echo "error: on cgroup v2 the lab needs a cgroup delegated to it, and $(awk -F: '$1=="0"{print $3}' /proc/self/cgroup) is not." >&2
echo "       Run it in a systemd unit with Delegate=yes (the VM's service does), or set JAP_CGROUP_BASE" >&2
echo "       to an empty cgroup of yours (helpers/justaprocess/cgroups/tree.py, lab_base)." >&2
exit 1
