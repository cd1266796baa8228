#!/usr/bin/env bash
# Guest job of `make test-vm`: a fresh Debian 12 box with the checkout in
# /opt/justaprocess (as Vagrant's synced folder puts it). Provision it exactly
# as Vagrant does, hand the token to the host (which checks JupyterLab through
# the forwarded port), then run the course's whole test suite on cgroup v2.
set -u
# shellcheck source=vagrant/image/guest/common.sh
. /mnt/results/common.sh
phase "guest facts"
facts || exit 3
phase "provision.sh (as Vagrant runs it)"
# Vagrant's shell provisioner: upload to /tmp/vagrant-shell, chmod +x, run as
# root via `sudo -E -H bash -l` with the Vagrantfile's env exported.
rc=0
install -m 0755 "$REPO/vagrant/provision.sh" /tmp/vagrant-shell
env JAP_REPO="$REPO" JAP_LAB_IP=0.0.0.0 bash -l -c /tmp/vagrant-shell > "$R/provision.log" 2>&1 || rc=$?
tail -5 "$R/provision.log"
[ "$rc" = 0 ] || { echo "error: provision.sh failed ($rc): provision.log"; phase end; exit "$rc"; }
phase "provision.sh again (idempotent)"
env JAP_REPO="$REPO" JAP_LAB_IP=0.0.0.0 bash -l -c /tmp/vagrant-shell > "$R/provision-2.log" 2>&1 || rc=$?
grep -E 'system packages:|provision\]' "$R/provision-2.log" | tail -4
[ "$rc" = 0 ] || { echo "error: the second provision.sh failed ($rc): provision-2.log"; phase end; exit "$rc"; }
# The host checks JupyterLab through the forwarded port with this token.
cp /var/lib/justaprocess/jupyter-token "$R/token"
systemctl --no-pager --lines=0 status justaprocess-lab.service | head -5
phase "make test (whole suite)"
cd "$REPO" || exit 1
enter_leaf || exit 4
PYTEST_ADDOPTS="$PYTEST_ADDOPTS --junitxml=$R/junit.xml" make test > "$R/tests.log" 2>&1 || rc=$?
tail -30 "$R/tests.log"
phase "wait for the host's port check"
for _ in $(seq 1 120); do [ -e "$R/hostcheck.done" ] && break; sleep 1; done
phase end
pytest_rc "$rc"
