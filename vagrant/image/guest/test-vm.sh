#!/usr/bin/env bash
# Guest job of `make test-vm`: a fresh Debian 12 box with the checkout in
# /opt/justaprocess (as Vagrant's synced folder puts it). Provision it exactly
# as Vagrant does, hand the token to the host (which checks JupyterLab through
# the forwarded port), let the host run the instructor's kit against this seat, then
# run the seat's tests and the chapters test-v2's full scope does not run (scope "seat";
# "rest": every test the full test-v2 does not run; "all": the whole suite) on cgroup v2.
set -u
# shellcheck source=vagrant/image/guest/common.sh
. /mnt/results/common.sh
# A machine on the guest's network (a network namespace joined by a veth pair)
# tries the lab's port on another guest address and on the NAT address the
# forward arrives on: the guest firewall (vagrant/lab-firewall.nft) refuses both.
# Then the service's limits, and the token in no log. vm.sh checks the lines.
lab_surface() {
  local nb nat addr port=8888 token
  local connect='import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close(); print("reached")
except ConnectionRefusedError:
    print("refused")
except OSError as exc:
    print("error", exc)'
  nat=$(ip -4 -o route get 192.0.2.200 | sed -n 's/.* src \([0-9.]*\).*/\1/p')
  unshare --net sleep 300 & nb=$!
  for _ in $(seq 1 100); do
    [ "$(readlink "/proc/$nb/ns/net")" != "$(readlink /proc/self/ns/net)" ] && break; sleep 0.05
  done
  ip link add vmcheck0 type veth peer name vmcheck1 netns "$nb"
  ip addr add 192.0.2.1/24 dev vmcheck0 && ip link set vmcheck0 up
  nsenter -t "$nb" -n sh -c 'ip addr add 192.0.2.2/24 dev vmcheck1 && ip link set vmcheck1 up &&
    ip link set lo up && ip route add default via 192.0.2.1'
  for addr in 192.0.2.1 "$nat"; do
    echo "neighbour -> $addr:$port: $(nsenter -t "$nb" -n python3 -c "$connect" "$addr" "$port")"
  done
  kill "$nb"; wait "$nb" 2>/dev/null   # the veth pair goes with its namespace
  echo "unit limits: TasksMax=$(systemctl show -P TasksMax justaprocess-lab.service)" \
       "MemoryMax=$(systemctl show -P MemoryMax justaprocess-lab.service)"
  token=$(cat /var/lib/justaprocess/jupyter-token)
  echo "token in the journal: $(journalctl -u justaprocess-lab.service --no-pager | grep -cF "$token")"
  echo "token in provision.log: $(grep -cF "$token" "$R/provision.log")"
}
phase "guest facts"
facts || exit 3
phase "provision.sh (as Vagrant runs it)"
# Vagrant's shell provisioner: upload to /tmp/vagrant-shell, chmod +x, run as
# root via `sudo -E -H bash -l` with the Vagrantfile's env exported.
rc=0
# The host's wheelhouse (vm.sh, seed_caches), as a venue's local mirror: pip installs
# the same pinned versions from it without the network (pip(1): --no-index --find-links).
if [ -s "$R/wheels" ]; then
  export PIP_NO_INDEX=1 PIP_FIND_LINKS
  PIP_FIND_LINKS=$(cat "$R/wheels")
  echo "pip: the wheelhouse $PIP_FIND_LINKS (--no-index)"
fi
install -m 0755 "$REPO/vagrant/provision.sh" /tmp/vagrant-shell
env JAP_REPO="$REPO" JAP_LAB_IP=0.0.0.0 bash -l -c /tmp/vagrant-shell > "$R/provision.log" 2>&1 || rc=$?
tail -5 "$R/provision.log"
[ "$rc" = 0 ] || { echo "error: provision.sh failed ($rc): provision.log"; phase end; exit "$rc"; }
phase "provision.sh again (idempotent)"
env JAP_REPO="$REPO" JAP_LAB_IP=0.0.0.0 bash -l -c /tmp/vagrant-shell > "$R/provision-2.log" 2>&1 || rc=$?
grep -E 'system packages:|provision\]' "$R/provision-2.log" | tail -4
[ "$rc" = 0 ] || { echo "error: the second provision.sh failed ($rc): provision-2.log"; phase end; exit "$rc"; }
unset PIP_NO_INDEX PIP_FIND_LINKS
# The host checks JupyterLab through the forwarded port with this token.
cp /var/lib/justaprocess/jupyter-token "$R/token"
systemctl --no-pager --lines=0 status justaprocess-lab.service | head -5
phase "the lab's surface (a neighbour, limits, the token)"
lab_surface > "$R/surface.txt" 2>&1
cat "$R/surface.txt"
phase "the instructor's kit (the host asks this seat)"
# vm.sh's check_kit: a learner's attempts through the forwarded port, then roster and
# cards over SSH (user jap). This seat waits until the host is done.
touch "$R/kit.go"
for _ in $(seq 1 900); do [ -e "$R/kit.done" ] && break; sleep 1; done
[ -e "$R/kit.done" ] || echo "the host's kit check did not finish within 15 minutes"
cd "$REPO" || exit 1
enter_leaf || exit 4
scope=$(cat "$R/scope" 2>/dev/null || echo seat)
if [ "$scope" = all ]; then
  phase "make test (whole suite)"
  PYTEST_ADDOPTS="$PYTEST_ADDOPTS --junitxml=$R/junit.xml" make test > "$R/tests.log" 2>&1 || rc=$?
else
  # common.sh: seat_scope (the default) or rest_scope; run as `make test` runs pytest.
  phase "pytest: scope $scope"
  if [ "$scope" = rest ]; then rest_scope; else seat_scope; fi
  echo "tests: ${REST[*]}"
  bash tools/in-lab-cgroup.sh .venv/bin/python -m pytest "${REST[@]}" --junitxml="$R/junit.xml" > "$R/tests.log" 2>&1 || rc=$?
fi
tail -30 "$R/tests.log"
phase "wait for the host's port check"
for _ in $(seq 1 120); do [ -e "$R/hostcheck.done" ] && break; sleep 1; done
phase end
pytest_rc "$rc"
