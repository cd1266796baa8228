#!/usr/bin/env bash
# make test-vagrant: the attendee's `vagrant up --provider=libvirt` of the
# pre-built box, for real, on this machine; a maintainer's target (5-17 min), not CI.
#
#   1. host tools (vagrant/host-packages.txt) + lint (vm.sh lint)
#   2. the box: vagrant/build/justaprocess.box, reused while its key matches
#      (vm.sh box-key), else built by `vm.sh box`
#   3. in namespaces made for the run (network, mount, PID: unshare(1)), with a
#      private libvirt (its /etc/libvirt, /var/lib/libvirt, /var/log/libvirt,
#      /var/cache/libvirt and /run are the run's own folders): virtlogd and
#      libvirtd started by hand, `vagrant box add` into a throwaway VAGRANT_HOME,
#      then the attendee's command, unchanged:
#        cd vagrant && JAP_VM_BOX=justaprocess vagrant up --provider=libvirt
#      (+ JAP_VM_LIBVIRT_DRIVER=qemu where there is no usable KVM)
#   4. checks, from the host side: the contents API through the forwarded port
#      (200 with the token, the learner notebooks listed; 403 without), and the
#      lab refused on the guest's management-network address (lab-firewall.nft);
#      FULL=1: `sudo make -C /opt/justaprocess test` in the guest
#   5. vagrant destroy -f, the box's volume, the storage pool, the networks;
#      the daemons stopped by PID. On any exit the PID namespace ends (its
#      processes die with it), the network and mount namespaces with it, and
#      the run's folder is removed.
# Run as root. Knobs: FULL=1, JAP_VM_LIBVIRT_DRIVER (kvm|qemu; default: kvm only
# on bare metal, as vm.sh decides), JAP_VM_CPUS, JAP_VM_MEMORY.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
BOX=$repo/vagrant/build/justaprocess.box
OUTD=$repo/vagrant/build/test-vagrant

say() { printf '[vagrant] %s\n' "$*"; }
die() { printf '[vagrant] error: %s\n' "$*" >&2; exit 1; }

# Phase times, kept in a file: the part in the namespaces adds its own.
phase() {
  local now; now=$(date +%s)
  if [ -n "${PHASE:-}" ] && [ "$PHASE" != end ]; then printf '%-44s %5ss\n' "$PHASE" $((now - PHASE_T)) >> "$RUN/times"; fi
  PHASE=$1; PHASE_T=$now
  [ "$1" = end ] || say "== $1"
}

# --- on the host ----------------------------------------------------------------
CHILD=""
# shellcheck disable=SC2317  # run by the trap
host_cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  # The run's PID 1 first gets SIGTERM: its own cleanup (vagrant destroy, ...)
  # runs once its current command ends. Then SIGKILL for unshare (which ignores
  # SIGTERM while it waits): with --kill-child its child, the run's PID 1, gets
  # SIGKILL, and the kernel ends every process of the PID namespace with it.
  if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
    local init=""; read -r init _ < "/proc/$CHILD/task/$CHILD/children" 2>/dev/null || true
    say "stopping the run's namespaces (unshare pid $CHILD, its PID 1: ${init:-gone})"
    [ -z "$init" ] || kill -TERM "$init" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$CHILD" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$CHILD" 2>/dev/null || true
    wait "$CHILD" 2>/dev/null || true
  fi
  if [ -n "${RUN:-}" ] && [ -d "$RUN" ]; then
    phase end
    if [ -s "$RUN/times" ]; then
      say "phase times (test-vagrant):"; sed 's/^/    /' "$RUN/times"
      printf '    %-44s %5ss\n' total $(( $(date +%s) - T0 ))
    fi
    # Nothing is mounted below it on the host: its mounts lived in the run's mount namespace.
    if awk -v d="$RUN/" 'index($5 "/", d) == 1 {f=1} END {exit !f}' /proc/self/mountinfo; then
      say "warning: something is mounted below $RUN: left in place"
    else
      rm -rf --one-file-system "$RUN"
    fi
  fi
  if [ "$rc" = 0 ]; then say "test-vagrant passed"; else say "test-vagrant FAILED (exit $rc)"; fi
  exit "$rc"
}

driver() {
  if [ -n "${JAP_VM_LIBVIRT_DRIVER:-}" ]; then echo "$JAP_VM_LIBVIRT_DRIVER"; return; fi
  case "${JAP_VM_ACCEL:-}" in kvm*) echo kvm; return ;; tcg*) echo qemu; return ;; esac
  # As vm.sh: KVM on bare metal only; under a hypervisor guests crawl or hang.
  if [ -w /dev/kvm ] && ! grep -qw hypervisor /proc/cpuinfo; then echo kvm; else echo qemu; fi
}

host_main() {
  [ "$(id -u)" -eq 0 ] || die "run as root (libvirtd, namespaces)"
  T0=$(date +%s)
  NAME=jap-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')-vagrant
  RUN=/var/tmp/$NAME
  trap host_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM HUP
  mkdir -m 0755 "$RUN"
  say "run $NAME: $RUN (removed at the end)"
  phase "host tools + lint"
  bash "$here/vm.sh" lint
  phase "box (built, or reused while its key matches)"
  local key; key=$(bash "$here/vm.sh" box-key)
  if [ -s "$BOX" ] && [ "$(cat "$BOX.key" 2>/dev/null)" = "$key" ]; then
    say "box: reusing $BOX (key $key, $(du -h "$BOX" | cut -f1))"
  else
    say "box: building it (make box; key $key)"
    bash "$here/vm.sh" box
  fi
  rm -rf "$OUTD"; mkdir -p "$OUTD"
  phase end; PHASE=""
  # Network + mount + PID namespaces; --kill-child: they cannot outlive this script.
  unshare --net --mount --pid --fork --mount-proc --propagation private --kill-child \
    env JAP_RUN="$RUN" JAP_NAME="$NAME" JAP_DRIVER="$(driver)" JAP_T0="$T0" \
    bash "$here/test-vagrant.sh" inside &
  CHILD=$!
  local rc=0; wait "$CHILD" || rc=$?
  CHILD=""
  [ "$rc" = 0 ] || die "the run in the namespaces failed (exit $rc); logs: $OUTD/"
}

# --- in the run's namespaces (PID 1 of its PID namespace) -----------------------------
PIDS=()   # virtlogd, libvirtd: ended by PID
# shellcheck disable=SC2317  # run by the trap
inside_cleanup() {
  local rc=$? p
  trap - EXIT INT TERM HUP
  phase "cleanup: destroy, volumes, pool, networks, daemons"
  if [ -n "${VAGRANT_DOTFILE_PATH:-}" ] && [ -d "$VAGRANT_DOTFILE_PATH" ]; then
    (cd "$repo/vagrant" && timeout 300 vagrant destroy -f) > "$OUTD/destroy.log" 2>&1 || say "vagrant destroy failed: $OUTD/destroy.log"
  fi
  if [ ${#PIDS[@]} -gt 0 ]; then libvirt_leftovers || { [ "$rc" != 0 ] || rc=1; }; fi
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null || continue
    for _ in $(seq 1 20); do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$p" 2>/dev/null || true
  done
  phase end
  exit "$rc"
}

V() { virsh -q -c qemu:///system "$@"; }

# What `vagrant destroy` leaves (the box's volume, the default pool it made)
# removed; then nothing may be left in this libvirt.
# shellcheck disable=SC2317  # run by the trap
libvirt_leftovers() {
  local d v n left
  for d in $(V list --all --name); do V destroy "$d" >/dev/null 2>&1 || true; V undefine --remove-all-storage "$d" >/dev/null || true; done
  for v in $(V vol-list default 2>/dev/null | awk '{print $1}'); do say "removing volume $v"; V vol-delete --pool default "$v" >/dev/null; done
  if V pool-info default >/dev/null 2>&1; then say "removing storage pool default"; V pool-destroy default >/dev/null; V pool-undefine default >/dev/null; fi
  for n in $(V net-list --all --name); do say "removing network $n"; V net-destroy "$n" >/dev/null 2>&1 || true; V net-undefine "$n" >/dev/null; done
  left=$(V list --all --name; V pool-list --all --name; V net-list --all --name)
  left=$(echo "$left" | sed '/^$/d')
  if [ -n "$left" ]; then say "left in libvirt: $left"; return 1; fi
  say "libvirt: no domain, pool, volume or network left"
}

inside_setup() {
  local d
  # The run's libvirt: its own config (a copy of the package's), state and runtime.
  mkdir -p "$RUN/etc" "$RUN/lib" "$RUN/log" "$RUN/cache" "$RUN/pid"
  cp -a /etc/libvirt "$RUN/etc/libvirt"
  rm -f "$RUN"/etc/libvirt/qemu/networks/default.xml "$RUN"/etc/libvirt/qemu/networks/autostart/*  # no `default` network
  cat >> "$RUN/etc/libvirt/qemu.conf" <<'EOF'
# make test-vagrant: qemu as root in the run's namespaces; no cgroups of the host touched
user = "root"
group = "root"
cgroup_controllers = [ ]
EOF
  cat >> "$RUN/etc/libvirt/libvirtd.conf" <<'EOF'
# make test-vagrant: the socket is in the run's own /run (mount namespace)
auth_unix_ro = "none"
auth_unix_rw = "none"
EOF
  mount --bind "$RUN/etc/libvirt" /etc/libvirt
  for d in lib log cache; do mount --bind "$RUN/$d" "/var/$d/libvirt"; done
  mount -t tmpfs -o mode=0755,size=64m "$JAP_NAME-run" /run
  mkdir -p /run/lock /run/libvirt
  # This network namespace's devices in /sys (as `ip netns exec` does).
  mount -t sysfs "$JAP_NAME-sys" /sys
  ip link set lo up
}

start_daemons() {
  virtlogd > "$OUTD/virtlogd.log" 2>&1 & PIDS+=($!)
  libvirtd --pid-file /run/libvirtd.pid > "$OUTD/libvirtd.log" 2>&1 & PIDS+=($!)
  say "virtlogd pid ${PIDS[0]}, libvirtd pid ${PIDS[1]} (PIDs in the run's PID namespace)"
  for _ in $(seq 1 120); do
    if V version >/dev/null 2>&1; then return 0; fi
    kill -0 "${PIDS[1]}" 2>/dev/null || break
    sleep 0.5
  done
  tail -20 "$OUTD/libvirtd.log" >&2; die "libvirtd did not answer"
}

# The token out of saved logs; the box upload's progress line (\r-separated) out too.
redact() { tr '\r' '\n' | sed -E -e 's/token=[0-9a-f]+/token=<redacted>/g' -e 's/Progress: [0-9]+%//g' -e 's/\x1b\[K//g' -e '/^ *$/d'; }

checks() {
  local port=${JAP_VM_PORT:-8888} token ip code rc
  token=$(cd "$repo/vagrant" && vagrant ssh -c 'sudo cat /var/lib/justaprocess/jupyter-token' 2>/dev/null | tr -d '\r\n')
  [ -n "$token" ] || die "no token in the guest"
  code=$(curl -sS -o "$RUN/contents.json" -w '%{http_code}' --max-time 60 \
    -H "Authorization: token $token" "http://127.0.0.1:$port/api/contents/learner") || true
  say "check: contents API with the token, 127.0.0.1:$port (the forwarded port): HTTP $code"
  [ "$code" = 200 ] || die "the contents API did not answer 200 with the token"
  python3 - "$RUN/contents.json" <<'PY'
import json, sys
nbs = sorted(c["name"] for c in json.load(open(sys.argv[1]))["content"] if c["name"].endswith(".ipynb"))
print("[vagrant] check: learner notebooks listed (%d): %s" % (len(nbs), ", ".join(nbs)))
assert "index.ipynb" in nbs and len(nbs) > 1, "the learner notebooks are missing"
PY
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 60 "http://127.0.0.1:$port/api/contents/learner") || true
  say "check: contents API without the token: HTTP $code"
  [ "$code" = 403 ] || die "without the token the contents API answered $code, not 403"
  ip=$(cd "$repo/vagrant" && vagrant ssh-config | awk '$1 == "HostName" {print $2}')
  [ -n "$ip" ] || die "no management-network address for the guest (vagrant ssh-config)"
  rc=0; code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 20 "http://$ip:8888/api/contents/learner?token=$token" 2> "$RUN/mgmt.err") || rc=$?
  say "check: the lab from the host side of the management network, $ip:8888: curl exit $rc ($(head -c 120 "$RUN/mgmt.err" | tr -d '\n' | redact))"
  # 7: connection refused (the guest firewall's TCP reset); anything that answers fails.
  [ "$rc" = 7 ] || die "the lab was not refused on the guest's management-network address $ip (HTTP ${code:-none}, curl exit $rc): vagrant/lab-firewall.nft"
}

full_suite() {
  local rc=0
  say "FULL=1: sudo make -C /opt/justaprocess test in the guest (about 12 min under emulation)"
  (cd "$repo/vagrant" && vagrant ssh -c 'sudo make -C /opt/justaprocess test') > "$OUTD/guest-test.log" 2>&1 || rc=$?
  tail -5 "$OUTD/guest-test.log" | sed 's/^/    /'
  [ "$rc" = 0 ] || die "the course's tests failed in the guest (exit $rc): $OUTD/guest-test.log"
}

inside_main() {
  RUN=$JAP_RUN; T0=$JAP_T0
  trap inside_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM HUP
  phase "namespaces + libvirtd, virtlogd"
  inside_setup
  start_daemons
  export VAGRANT_HOME=$RUN/vagrant.d VAGRANT_DOTFILE_PATH=$RUN/dot-vagrant VAGRANT_CHECKPOINT_DISABLE=1 \
         LIBVIRT_DEFAULT_URI=qemu:///system
  phase "vagrant box add (throwaway VAGRANT_HOME)"
  vagrant box add --name justaprocess "$BOX" > "$OUTD/box-add.log" 2>&1 || { cat "$OUTD/box-add.log" >&2; die "vagrant box add failed"; }
  # Names this run's libvirt objects with the lab prefix, without touching the
  # project's Vagrantfile (Vagrant merges $VAGRANT_HOME/Vagrantfile under it).
  cat > "$VAGRANT_HOME/Vagrantfile" <<EOF
Vagrant.configure("2") do |config|
  config.vm.provider "libvirt" do |lv|
    lv.default_prefix = "$JAP_NAME-"
    lv.management_network_name = "$JAP_NAME"
  end
end
EOF
  phase "vagrant up --provider=libvirt (driver $JAP_DRIVER)"
  say "cd vagrant && JAP_VM_BOX=justaprocess JAP_VM_LIBVIRT_DRIVER=$JAP_DRIVER vagrant up --provider=libvirt"
  local rc=0
  (cd "$repo/vagrant" && JAP_VM_BOX=justaprocess JAP_VM_LIBVIRT_DRIVER=$JAP_DRIVER vagrant up --provider=libvirt) \
    2>&1 | redact > "$OUTD/up.log" || rc=$?
  grep -E '^ *default: (\[provision\]|system packages:)|==> default: (Creating|Starting|Waiting|Rsyncing|Running provisioner)' "$OUTD/up.log" | sed 's/^/    /' || true
  [ "$rc" = 0 ] || { tail -30 "$OUTD/up.log" >&2; die "vagrant up failed (exit $rc): $OUTD/up.log"; }
  grep -q 'provision\] .*token=<redacted>' "$OUTD/up.log" || die "vagrant up did not print the URL with its token"
  # The box holds everything: provisioning installs nothing (no internet here).
  grep -q 'system packages: all [0-9]* present' "$OUTD/up.log" || die "provisioning the box installed system packages"
  phase "checks (forwarded port, token, management network)"
  checks
  if [ "${FULL:-}" = 1 ]; then phase "FULL=1: make test in the guest"; full_suite; fi
}

main() { case "${1:-}" in inside) inside_main ;; *) host_main ;; esac; }
# One line, read whole before it runs (an edit of this file during a run must
# not feed the running shell new lines).
main "$@"; exit $?
