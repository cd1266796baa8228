#!/usr/bin/env bash
# Build, provision and boot the workshop VM on this machine: the proof that the
# course works on a real cgroup-v2 kernel (attendee VMs are pure v2; the dev
# and CI machines are a v1+v2 hybrid). Run as root.
#
#   vm.sh lint     vagrant validate -p + shellcheck on vagrant/ (seconds)
#   vm.sh test-v2  cached image provisioned in a chroot by vagrant/provision.sh, booted:
#                  JAP_V2_SCOPE=quick (default) the tests of the v2-only code paths (~5 min);
#                  full (CI) the unit tests that touch cgroups, AppArmor, userns + notebooks 03-15
#   vm.sh test-vm  a fresh image booted; vagrant/provision.sh run inside under systemd
#                  as Vagrant runs it; JupyterLab checked through the forwarded port;
#                  the instructor's kit against two seats (this machine + the guest);
#                  the seat's tests + the chapters test-v2's full scope does not run
#                  (JAP_VM_SCOPE=rest: every test the full test-v2 does not run; all: the suite)
#   vm.sh box      a pre-provisioned libvirt Vagrant box for venues without internet
#   vm.sh box-key  the key of the box's inputs (vagrant/build/justaprocess.box.key)
#   vm.sh base     only build the cached base root filesystem
#   vm.sh caches   only build the cached roots and test-vm's wheelhouse (no qemu)
#   vm.sh keys     the cache keys of the inputs as they are now (base, provisioned, wheels)
#
# Cache: $JAP_VM_CACHE (default /var/cache/justaprocess/vm), outside the checkout,
# keyed by the inputs; built under tmp.* and renamed when complete, so an
# interrupted build is thrown away by the next run. Results of the last run:
# vagrant/build/<target>/ (logs, junit.xml).
# Knobs: JAP_VM_ACCEL (tcg|kvm; default: kvm only on bare metal), JAP_VM_MEMORY (MiB),
# JAP_VM_CPUS, JAP_VM_MIRROR, JAP_VM_TIMEOUT (s, guest run); test-v2: JAP_V2_SCOPE; test-vm: JAP_VM_SCOPE
# (seat|rest|all), JAP_VM_COLD=1 (no seeded caches: every package downloaded, as a first `vagrant up`).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
target=${1:-}
CACHE=${JAP_VM_CACHE:-/var/cache/justaprocess/vm}
SUITE=bookworm
MIRROR=${JAP_VM_MIRROR:-http://deb.debian.org/debian}
MEMORY=${JAP_VM_MEMORY:-2048}
CPUS=${JAP_VM_CPUS:-2}
# What a Debian 12 Vagrant/cloud box has before provisioning: systemd, a
# kernel, udev, networking, Python, sshd. Everything else comes from provision.sh.
INCLUDE=systemd,systemd-sysv,udev,kmod,linux-image-amd64,initramfs-tools,iproute2,ca-certificates,python3,sudo,less,procps,openssh-server
BASE_VERSION=1   # bump when configure_base changes
EXCLUDES=(--exclude=/.git --exclude=/.venv --exclude=/notebooks/learner --exclude=/.vagrant
          --exclude=/vagrant/build --exclude=/vagrant/.vagrant --exclude='*.egg-info'
          --exclude=__pycache__ --exclude=.ipynb_checkpoints --exclude='*.box')

say() { printf '[vm] %s\n' "$*"; }
die() { printf '[vm] error: %s\n' "$*" >&2; exit 1; }

# --- cleanup: everything this run made goes on exit or interruption ---------
PIDS=()      # qemu processes we started: ended by PID only
MOUNTS=()    # unmounted in reverse order
TMPS=()      # removed (after unmounting anything below them)
# shellcheck disable=SC2317  # run by the trap
cleanup() {
  local rc=$? i p
  trap - EXIT INT TERM HUP
  for p in "${PIDS[@]}"; do
    if kill -0 "$p" 2>/dev/null; then say "stopping qemu pid $p"; kill "$p" 2>/dev/null || true
      for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
      kill -9 "$p" 2>/dev/null || true; fi
  done
  for ((i=${#MOUNTS[@]}-1; i>=0; i--)); do
    mountpoint -q "${MOUNTS[i]}" 2>/dev/null && umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" 2>/dev/null || true
  done
  for p in "${TMPS[@]}"; do remove_tree "$p"; done
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# Unmount whatever is mounted below a folder (a chroot's /proc, /dev, an
# interrupted debootstrap's), then delete it without crossing into another
# filesystem: a bind-mounted /dev must never be emptied.
remove_tree() {
  local d=$1 m
  [ -e "$d" ] || return 0
  while read -r m; do umount -l "$m" 2>/dev/null || true
  done < <(awk -v d="$(realpath "$d")/" 'index($5 "/", d) == 1 {print $5}' /proc/self/mountinfo | sort -r)
  rm -rf --one-file-system "$d"
}

# --- phases and their times --------------------------------------------------
T0=$(date +%s); PHASE=""; PHASE_T=$T0; TIMES=()
phase() {
  local now; now=$(date +%s)
  [ -n "$PHASE" ] && TIMES+=("$(printf '%-34s %5ss' "$PHASE" $((now - PHASE_T)))")
  PHASE=$1; PHASE_T=$now
  [ "$1" = end ] || say "== $1"
}
print_times() {
  phase end
  say "phase times ($target):"
  printf '    %s\n' "${TIMES[@]}"
  printf '    %-34s %5ss\n' total $(( $(date +%s) - T0 ))
}

# --- host tools ---------------------------------------------------------------
host_tools() {
  local missing=() pkg
  while read -r pkg; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$repo/vagrant/host-packages.txt" | awk '{print $1}')
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing host tools: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

lint() {
  say "shellcheck: vagrant/provision.sh vagrant/image/*.sh vagrant/image/guest/*"
  (cd "$repo" && shellcheck -x vagrant/provision.sh vagrant/image/*.sh vagrant/image/guest/jap-job \
    vagrant/image/guest/*.sh .ci/run)
  say "vagrant validate -p"
  (cd "$repo/vagrant" && VAGRANT_CHECKPOINT_DISABLE=1 vagrant validate -p)
  say "cloud-init.yaml: #cloud-config, valid YAML, runs provision.sh"
  python3 - "$repo/vagrant/cloud-init.yaml" <<'PY'
import sys, yaml
text = open(sys.argv[1]).read()
assert text.startswith("#cloud-config\n"), "cloud-init.yaml must start with #cloud-config"
doc = yaml.safe_load(text)
assert any("vagrant/provision.sh" in str(c) for c in doc["runcmd"]), "runcmd must run vagrant/provision.sh"
PY
}

# The cache lock is held while cached roots are built and a run's disk is
# made; a booted run holds only a lock on its own tmp.* folder. A tmp.* whose
# lock nobody holds is the leftover of an interrupted run: removed.
lock() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock -n 9 || { say "another build holds $CACHE/.lock: waiting"; flock -w 3600 9 || die "lock timeout"; }
  local t; for t in "$CACHE"/tmp.*; do
    [ -e "$t" ] || continue
    if flock -n "$t/.busy" true 2>/dev/null || [ ! -e "$t/.busy" ]; then
      say "removing an interrupted build: $t"; remove_tree "$t"
    fi
  done
  return 0
}
unlock() { flock -u 9; }
# A folder under the cache, locked by this run until it exits.
# (Sets TD; not run in $(...): the lock and TMPS must stay in this shell.)
tmpdir() {
  local fd; TD=$(mktemp -d "$CACHE/tmp.$1.XXXXXX"); TMPS+=("$TD")
  exec {fd}>"$TD/.busy"; flock -n "$fd"
}

ca_files() { find /usr/local/share/ca-certificates -name '*.crt' -type f 2>/dev/null | sort; }

# --- base root filesystem (debootstrap), cached --------------------------------
base_key() {
  { echo "$SUITE $MIRROR $INCLUDE $BASE_VERSION"; declare -f configure_base
    local f; for f in $(ca_files); do cat "$f"; done; } | sha256sum | cut -c1-12
}

configure_base() {
  local r=$1 f
  echo jap-vm > "$r/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 jap-vm\n::1 localhost ip6-localhost ip6-loopback\n' > "$r/etc/hosts"
  echo '/dev/vda / ext4 defaults,errors=remount-ro 0 1' > "$r/etc/fstab"
  cat > "$r/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF
  # Network: DHCP on the virtio NIC (qemu's user network, like VirtualBox NAT).
  mkdir -p "$r/etc/systemd/network"
  printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n' > "$r/etc/systemd/network/10-dhcp.network"
  chroot "$r" systemctl enable --quiet systemd-networkd.service
  echo 'nameserver 10.0.2.3' > "$r/etc/resolv.conf"   # qemu user network's DNS
  # The serial console is for the kernel's messages; logs go to the 9p folder.
  ln -sf /dev/null "$r/etc/systemd/system/serial-getty@ttyS0.service"
  : > "$r/etc/machine-id"
  # Test image only: busybox-static triggers an initramfs rebuild that takes
  # ~13 min under TCG; the image boots its own kernel and initrd as built here.
  # (`make box` switches it back on.)
  sed -i 's/^update_initramfs=.*/update_initramfs=no/' "$r/etc/initramfs-tools/update-initramfs.conf"
  # Test image only: the host's extra CA certificates, without which pip in a
  # guest here cannot reach the package index (attendee machines don't need them).
  for f in $(ca_files); do cp "$f" "$r/usr/local/share/ca-certificates/"; done
  chroot "$r" update-ca-certificates >/dev/null
  chroot "$r" apt-get clean
}

build_base() {
  BASE=$CACHE/base-$(base_key)
  if [ -d "$BASE" ]; then say "base image: cached $BASE"; return 0; fi
  local t; tmpdir base; t=$TD
  say "base image: debootstrap $SUITE (about 2 minutes)"
  debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$t/root" "$MIRROR" > "$t/debootstrap.log" 2>&1 ||
    { tail -30 "$t/debootstrap.log" >&2; die "debootstrap failed"; }
  configure_base "$t/root"
  ls "$t"/root/boot/vmlinuz-* "$t"/root/boot/initrd.img-* >/dev/null || die "no kernel/initrd in the base image"
  mv "$t/root" "$BASE"
  local old; for old in "$CACHE"/base-*; do [ "$old" = "$BASE" ] || remove_tree "$old"; done
}

# --- chroot: provision.sh exactly as Vagrant runs it ---------------------------
chroot_mounts() {
  local r=$1
  mount -t proc proc "$r/proc"; MOUNTS+=("$r/proc")
  mount -t sysfs sys "$r/sys"; MOUNTS+=("$r/sys")
  mount --bind /dev "$r/dev"; MOUNTS+=("$r/dev")
  mount -t devpts -o newinstance,ptmxmode=0666 devpts "$r/dev/pts"; MOUNTS+=("$r/dev/pts")
  # The image's resolv.conf names qemu's DNS; in the chroot use the host's.
  mount --bind /etc/resolv.conf "$r/etc/resolv.conf"; MOUNTS+=("$r/etc/resolv.conf")
  # No daemon of a package starts in the chroot (invoke-rc.d honours policy-rc.d).
  printf '#!/bin/sh\nexit 101\n' > "$r/usr/sbin/policy-rc.d"; chmod 755 "$r/usr/sbin/policy-rc.d"
}
chroot_umounts() {
  local r=$1 m
  rm -f "$r/usr/sbin/policy-rc.d"
  for m in etc/resolv.conf dev/pts dev sys proc; do umount "$r/$m"; done
}

# Vagrant's shell provisioner uploads the script to /tmp/vagrant-shell, makes it
# executable and runs it as root through `sudo -E -H bash -l` with the
# provisioner's env exported; the Vagrantfile passes JAP_REPO and JAP_LAB_IP.
VAGRANT_LIKE='install -m 0755 /opt/justaprocess/vagrant/provision.sh /tmp/vagrant-shell && export JAP_REPO=/opt/justaprocess JAP_LAB_IP=0.0.0.0 && /tmp/vagrant-shell'

copy_checkout() {
  mkdir -p "$1/opt/justaprocess"
  rsync -a --delete "${EXCLUDES[@]}" "$repo/" "$1/opt/justaprocess/"
}

chroot_provision() {
  local r=$1 logf=$2
  copy_checkout "$r"
  chroot_mounts "$r"
  if ! chroot "$r" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
       PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
       bash -l -c "$VAGRANT_LIKE" > "$logf" 2>&1; then
    tail -40 "$logf" >&2; die "provision.sh failed in the chroot (log: $logf)"
  fi
  chroot_umounts "$r"
}

# The Makefile without its comment lines: what provision.sh runs of it (make venv learner),
# not the words about it (a comment's edit need not cost a rebuild).
prov_key() {
  { base_key; cat "$repo/vagrant/provision.sh" "$repo/tools/system-packages.txt" \
      "$repo/tools/install-system-packages.sh" "$repo/helpers/pyproject.toml" "$repo/helpers/constraints.txt"
    sed '/^[[:space:]]*#/d' "$repo/Makefile"; } |
    sha256sum | cut -c1-12
}

# A Debian 12 root provisioned by provision.sh, cached by its inputs.
build_provisioned() {
  PROV=$CACHE/prov-$(prov_key)
  if [ -d "$PROV" ]; then say "provisioned image: cached $PROV"; return 0; fi
  local t; tmpdir prov; t=$TD
  say "provisioned image: copying the base, running provision.sh in a chroot"
  cp -a "$BASE" "$t/root"
  chroot_provision "$t/root" "$OUT/provision-cache.log"
  mv "$t/root" "$PROV"
  local old; for old in "$CACHE"/prov-*; do [ "$old" = "$PROV" ] || remove_tree "$old"; done
}

# --- a run's own writable root: an overlay on a cached one ------------------------
overlay_root() {
  local lower=$1
  tmpdir run; WORK=$TD
  mkdir -p "$WORK/upper" "$WORK/work" "$WORK/root" "$WORK/results"
  mount -t overlay overlay -o "lowerdir=$lower,upperdir=$WORK/upper,workdir=$WORK/work" "$WORK/root"
  MOUNTS+=("$WORK/root")
  ROOT=$WORK/root
}

install_guest_job() {
  local r=$1
  install -m 0755 "$here/guest/jap-job" "$r/usr/local/sbin/jap-job"
  install -m 0644 "$here/guest/jap-job.service" "$r/etc/systemd/system/jap-job.service"
  mkdir -p "$r/etc/systemd/system/multi-user.target.wants"
  ln -sf /etc/systemd/system/jap-job.service "$r/etc/systemd/system/multi-user.target.wants/jap-job.service"
}

# mkfs.ext4 -d writes a folder into a fresh file system image: no loop device, no mount.
make_disk() {
  local r=$1 size
  cp "$r"/boot/vmlinuz-* "$WORK/vmlinuz"; cp "$r"/boot/initrd.img-* "$WORK/initrd"
  size=$(( $(du -sxm "$r" | cut -f1) + ${JAP_VM_FREE_MB:-2048} ))
  mkfs.ext4 -q -F -L japroot -E root_owner=0:0 -d "$r" "$WORK/disk.img" "${size}M" >/dev/null
  umount "$r"
}

cpu() { case "$(accel)" in kvm*) echo host ;; *) echo max ;; esac; }  # every feature TCG emulates

accel() {
  if [ -n "${JAP_VM_ACCEL:-}" ]; then echo "$JAP_VM_ACCEL"; return; fi
  # KVM on bare metal; under a hypervisor (nested: these machines) KVM opens
  # fine but guests crawl or hang, so ask for software emulation explicitly.
  if [ -w /dev/kvm ] && ! grep -qw hypervisor /proc/cpuinfo; then echo kvm; else echo tcg,thread=multi; fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Boot the disk; the guest's jap-job.service runs $WORK/results/job.sh and powers off.
# $2: "HOSTPORT:GUESTPORT ..." forwarded from the host's 127.0.0.1, as Vagrant's NAT does.
boot() {
  local timeout=$1 fwds=${2:-} extra=${3:-} net f
  chmod 0777 "$WORK/results"
  net="user,id=n0"
  for f in $fwds; do net+=",hostfwd=tcp:127.0.0.1:${f%%:*}-:${f##*:}"; done
  say "booting: qemu -accel $(accel), ${MEMORY} MiB, $CPUS CPUs${fwds:+, forwarded 127.0.0.1:host->guest: $fwds}"
  qemu-system-x86_64 -accel "$(accel)" -cpu "$(cpu)" -m "$MEMORY" -smp "$CPUS" -nodefaults -display none -no-reboot \
    -kernel "$WORK/vmlinuz" -initrd "$WORK/initrd" \
    -append "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=0${extra:+ $extra}" \
    -drive "file=$WORK/disk.img,format=raw,if=virtio,cache=unsafe" \
    -virtfs "local,path=$WORK/results,mount_tag=results,security_model=none" \
    -netdev "$net" -device virtio-net-pci,netdev=n0 -device virtio-rng-pci \
    -serial "file:$WORK/serial.log" -monitor none &
  QEMU=$!; PIDS+=("$QEMU")
  BOOT_T0=$(date +%s)
  BOOT_TIMEOUT=$timeout
}

# Wait for qemu to exit (the guest powers off), at most the timeout; once the
# job wrote its exit code, the guest gets a minute to power off.
wait_guest() {
  local done_t=""
  while kill -0 "$QEMU" 2>/dev/null; do
    if [ $(( $(date +%s) - BOOT_T0 )) -gt "$BOOT_TIMEOUT" ]; then
      say "guest still running after ${BOOT_TIMEOUT}s: stopping it"; kill "$QEMU" 2>/dev/null || true
    fi
    if [ -z "$done_t" ] && [ -s "$WORK/results/job.rc" ]; then done_t=$(date +%s); fi
    if [ -n "$done_t" ] && [ $(( $(date +%s) - done_t )) -gt 60 ]; then
      say "the job is done but the guest did not power off: stopping qemu"; kill "$QEMU" 2>/dev/null || true
    fi
    sleep 2
  done
  wait "$QEMU" 2>/dev/null || true
}

# Copy the results out of the temporary folder and report them.
bring_back() {
  local dest=$repo/vagrant/build/$target
  rm -rf "$dest"; mkdir -p "$dest"
  cp -a "$WORK/results/." "$dest/" 2>/dev/null || true
  cp "$WORK/serial.log" "$dest/serial.log" 2>/dev/null || true
  [ -s "$dest/phases.txt" ] && { say "guest phase times:"; sed 's/^/    /' "$dest/phases.txt"; }
  [ -s "$dest/job.log" ] && { say "guest log (tail): $dest/job.log"; tail -40 "$dest/job.log" | sed 's/^/    /'; }
  if [ -s "$dest/junit.xml" ]; then python3 "$here/junit-summary.py" "$dest/junit.xml"; fi
  RESULTS=$dest
}

guest_rc() {
  [ -s "$RESULTS/job.rc" ] || { tail -30 "$RESULTS/serial.log" >&2 2>/dev/null || true
    die "the guest produced no result (boot failed or timed out): see $RESULTS/serial.log"; }
  cat "$RESULTS/job.rc"
}

# --- targets ------------------------------------------------------------------------
test_v2() {
  phase "host tools + lint"; host_tools; lint
  phase "cache lock (another run may hold it)"; lock
  OUT=$(mktemp -d); TMPS+=("$OUT")
  phase "base image (debootstrap, cached)"; build_base
  phase "provisioned image (chroot, cached)"; build_provisioned
  phase "provision.sh again on this checkout"
  overlay_root "$PROV"
  chroot_provision "$ROOT" "$WORK/results/provision.log"
  grep -E 'system packages:|provision\]' "$WORK/results/provision.log" | sed 's/^/    /' || true
  install_guest_job "$ROOT"
  phase "disk image (mkfs.ext4 -d)"; make_disk "$ROOT"; unlock
  cp "$here/guest/common.sh" "$WORK/results/"; cp "$here/guest/test-v2.sh" "$WORK/results/job.sh"
  echo "${JAP_V2_SCOPE:-quick}" > "$WORK/results/scope"
  phase "boot + tests in the guest (cgroup v2)"
  # The JupyterLab service is proven by test-vm; here its start would only take CPU.
  boot "${JAP_VM_TIMEOUT:-3600}" "" "systemd.mask=justaprocess-lab.service systemd.mask=ssh.service"; wait_guest
  phase "results"; bring_back
  local rc; rc=$(guest_rc)
  print_times
  [ "$rc" = 0 ] || die "tests failed in the cgroup-v2 guest (exit $rc): $RESULTS/"
  say "test-v2 passed"
}

test_vm() {
  phase "host tools + lint"; host_tools; lint
  [ -x "$repo/.venv/bin/python" ] || { say "the instructor's kit runs from this checkout: make venv"
    make --no-print-directory -C "$repo" venv >/dev/null; }
  phase "cache lock (another run may hold it)"; lock
  OUT=$(mktemp -d); TMPS+=("$OUT")
  phase "base image (debootstrap, cached)"; build_base
  if [ "${JAP_VM_COLD:-}" != 1 ]; then
    phase "caches: packages + wheels (cached)"; build_provisioned; build_wheels
  fi
  phase "disk image: fresh box + checkout"
  overlay_root "$BASE"
  copy_checkout "$ROOT"   # what Vagrant's rsync folder puts in the VM
  [ "${JAP_VM_COLD:-}" = 1 ] || seed_caches "$ROOT"
  seat_user "$ROOT"
  install_guest_job "$ROOT"
  make_disk "$ROOT"; unlock
  cp "$here/guest/common.sh" "$WORK/results/"; cp "$here/guest/test-vm.sh" "$WORK/results/job.sh"
  echo "${JAP_VM_SCOPE:-seat}" > "$WORK/results/scope"
  local port sshport hport; port=$(free_port); sshport=$(free_port); hport=$(free_port)
  phase "boot + provision + tests in the guest"
  start_host_seat "$hport"
  boot "${JAP_VM_TIMEOUT:-2400}" "$port:8888 $sshport:22"
  check_forwarded_port "$port" &
  local checker=$!
  check_kit "$port" "$sshport" "$hport" &
  local kit=$!
  wait_guest
  wait "$checker" || true
  wait "$kit" || true
  stop_host_seat
  phase "results"; bring_back
  local rc; rc=$(guest_rc)
  print_times
  if [ ! -f "$RESULTS/hostcheck.ok" ]; then
    [ -f "$RESULTS/hostcheck.log" ] && cat "$RESULTS/hostcheck.log"
    die "JupyterLab did not answer through the forwarded port 127.0.0.1:$port"
  fi
  check_surface "$RESULTS/surface.txt"
  check_kit_results "$RESULTS"
  [ "$rc" = 0 ] || die "failed in the cgroup-v2 guest (exit $rc): $RESULTS/"
  say "test-vm passed"
}

# --- test-vm: the caches a venue's local mirror would give ---------------------------
# The guest still runs apt-get update + install and pip install itself; only the
# downloads come from here: the .deb files and package lists of the provisioned
# image (built from the same base by the same provision.sh), and a wheelhouse of the
# pinned Python packages (pip --no-index --find-links, set by guest/test-vm.sh).
# JAP_VM_COLD=1: none of it, every package from the network, as a first `vagrant up`.
wheels_key() {
  { cat "$repo/helpers/pyproject.toml" "$repo/helpers/constraints.txt"; python3 -V; } | sha256sum | cut -c1-12
}
build_wheels() {
  WHEELS=$CACHE/wheels-$(wheels_key)
  if [ -d "$WHEELS" ]; then say "wheelhouse: cached $WHEELS"; return 0; fi
  local t; tmpdir wheels; t=$TD
  say "wheelhouse: pip download (the pinned versions of helpers/constraints.txt)"
  python3 -m venv "$t/venv"
  # setuptools: the build backend of the helpers (pip's isolated build of `-e helpers`)
  "$t/venv/bin/pip" download -q --disable-pip-version-check -d "$t/wheels" -c "$repo/helpers/constraints.txt" \
    "$repo/helpers[lab,test]" 'setuptools>=64' > "$t/pip.log" 2>&1 || { tail -20 "$t/pip.log" >&2; die "pip download failed"; }
  rm -f "$t"/wheels/justaprocess-*   # the course's own package is built in the guest
  mv "$t/wheels" "$WHEELS"
  local old; for old in "$CACHE"/wheels-*; do [ "$old" = "$WHEELS" ] || remove_tree "$old"; done
}
seed_caches() {
  local r=$1
  cp "$PROV"/var/cache/apt/archives/*.deb "$r/var/cache/apt/archives/" 2>/dev/null || true
  cp -a "$PROV/var/lib/apt/lists/." "$r/var/lib/apt/lists/"
  mkdir -p "$r/var/cache/jap-wheels"; cp "$WHEELS"/* "$r/var/cache/jap-wheels/"
  echo /var/cache/jap-wheels > "$WORK/results/wheels"
  say "seeded: $(find "$r/var/cache/apt/archives" -name '*.deb' | wc -l) .deb files, apt lists," \
      "$(find "$r/var/cache/jap-wheels" -type f | wc -l) wheels"
}

# --- test-vm: the instructor's kit against two real seats --------------------------------
# Seat "host": a JupyterLab started here by tools/start-lab.sh (its own state folder and
# progress file); seat "guest": the provisioned VM, over SSH as `jap` (a key made for
# this run, like cloud-init.yaml's user) through a forwarded port. A learner's attempts
# go through each seat's JupyterLab kernel (lab-kernel.py); then roster and cards from
# this checkout, as the instructor runs them (helpers/justaprocess/workshop.py).
KIT_CELLS=('import os; from justaprocess import proc; from justaprocess.checks import ch00'
           'ch00.check_kernel(os.getppid(), proc.namespaces()["net"])   # the parent: wrong'
           'ch00.check_kernel(os.getpid(), proc.namespaces()["net"])    # the kernel itself: right')
seat_user() {
  local r=$1 k=$WORK/kit
  mkdir -p "$k"; chmod 700 "$k"
  ssh-keygen -q -t ed25519 -N '' -C test-vm-kit -f "$k/key"
  chroot "$r" useradd -m -s /bin/bash jap
  echo 'jap ALL=(ALL) NOPASSWD: ALL' > "$r/etc/sudoers.d/jap"; chmod 0440 "$r/etc/sudoers.d/jap"
  install -d -m 0700 "$r/home/jap/.ssh"; install -m 0600 "$k/key.pub" "$r/home/jap/.ssh/authorized_keys"
  chroot "$r" chown -R jap:jap /home/jap/.ssh
}
start_host_seat() {
  local hport=$1 k=$WORK/kit
  mkdir -p "$k/state"
  JAP_STATE_DIR=$k/state JAP_PROGRESS=$k/host-progress.jsonl JUPYTER_RUNTIME_DIR=$k/runtime \
    JUPYTERLAB_WORKSPACES_DIR=$k/workspaces \
    bash "$repo/tools/start-lab.sh" "$hport" > "$k/host-lab.log" 2>&1 &
  HOST_LAB=$!; PIDS+=("$HOST_LAB")
}
stop_host_seat() {
  kill "$HOST_LAB" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$HOST_LAB" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$HOST_LAB" 2>/dev/null || true; wait "$HOST_LAB" 2>/dev/null || true
}
# Runs beside the guest: once the guest is provisioned (kit.go), the attempts, the
# roster and the cards; then kit.done lets the guest go on to its tests.
check_kit() {
  local port=$1 sshport=$2 hport=$3 r=$WORK/results k=$WORK/kit py=$repo/.venv/bin/python
  set +e   # a background job: each step reports, and kit.done must be written in the end
  printf '# the kit check of make test-vm: this machine and the guest\nlocal host\njap-vm guest\n' > "$k/seats.txt"
  printf 'Host jap-vm\n  HostName 127.0.0.1\n  Port %s\n  IdentityFile %s\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n' \
    "$sshport" "$k/key" > "$k/ssh_config"
  for _ in $(seq 1 1800); do
    { [ -e "$r/kit.go" ] || ! kill -0 "$QEMU" 2>/dev/null; } && break; sleep 2
  done
  [ -e "$r/kit.go" ] || return 1
  local kitenv=(env JAP_STATE_DIR="$k/state" JAP_PROGRESS="$k/host-progress.jsonl")
  {
    echo "== a learner's attempts through the guest's JupyterLab (127.0.0.1:$port)"
    "$py" "$here/lab-kernel.py" "http://127.0.0.1:$port" "$r/token" "${KIT_CELLS[@]}" && echo "rc 0"
    echo "== a learner's attempts through this machine's JupyterLab (127.0.0.1:$hport)"
    "$py" "$here/lab-kernel.py" "http://127.0.0.1:$hport" "$k/state/jupyter-token" "${KIT_CELLS[@]}" && echo "rc 0"
    echo "== roster"
    "${kitenv[@]}" "$py" -m justaprocess roster "$k/seats.txt" --ssh-config "$k/ssh_config" --timeout 600 --json > "$r/kit-roster.json"
    "${kitenv[@]}" "$py" -m justaprocess roster "$k/seats.txt" --ssh-config "$k/ssh_config" --timeout 600
    echo "== cards"
    "${kitenv[@]}" "$py" -m justaprocess cards "$k/seats.txt" --ssh-config "$k/ssh_config" --timeout 600 -o "$r/kit-cards.html"
    cp "$k/state/jupyter-token" "$r/kit-host-token"
    echo "host seat's lab answers the card's token: $(curl -s -o /dev/null -w '%{http_code}' \
      -H "Authorization: token $(cat "$k/state/jupyter-token")" "http://127.0.0.1:$hport/api/status")"
    # Each seat's own `make test`, of workshop.QUICK's few tests (minutes, not the suite's
    # half hour under emulation); the host seat is this checkout, as `local` always is.
    echo "== ready --quick"
    "$py" -m justaprocess ready "$k/seats.txt" --ssh-config "$k/ssh_config" --timeout 900 --quick > "$r/kit-ready.txt" 2>&1
    echo "rc $?" >> "$r/kit-ready.txt"
    cat "$r/kit-ready.txt"
  } > "$r/kit.log" 2>&1
  touch "$r/kit.done"
}
# Both seats in the roster with the attempts just made (chapter 00, 1 solved), both
# cards with the token that opens that seat's lab.
check_kit_results() {
  local d=$1
  [ -s "$d/kit.log" ] || die "the instructor's kit was not run (the guest never said kit.go): $d"
  say "the instructor's kit, against this machine and the guest:"; sed 's/^/    /' "$d/kit.log"
  python3 - "$d" <<'PY' || die "the instructor's kit did not see both seats as they are (above)"
import json, re, sys
d = sys.argv[1]
rows = {r["seat"]: r for r in json.load(open(f"{d}/kit-roster.json"))}
assert set(rows) == {"host", "guest"}, f"roster seats: {sorted(rows)}"
for seat, r in rows.items():
    assert not r["problem"], f"{seat}: {r['problem']}"
    assert r["chapter"] == "00" and r["solved"] == 1 and r["last"], f"{seat}: {r}"
page = open(f"{d}/kit-cards.html").read()
for seat, token in (("guest", open(f"{d}/token").read().strip()), ("host", open(f"{d}/kit-host-token").read().strip())):
    assert f"seat {seat}</h2>" in page and f"/lab?token={token}" in page, f"no card with {seat}'s token"
assert "jap@jap-vm" in page, "the guest's card has no ssh line"
said = open(f"{d}/kit-ready.txt").read().splitlines()
for seat in ("host", "guest"):
    assert any(re.match(rf"{seat} +ready +\d+ passed", ln) for ln in said), f"ready --quick: {seat} is not ready"
assert said[-2:] == ["2 of 2 seats ready", "rc 0"], "ready --quick: " + " / ".join(said[-2:])
print("[vm] kit: both seats in the roster with their attempts; both cards with their seat's token;"
      " both seats ready (ready --quick)")
PY
}

# What the guest saw (guest/test-vm.sh, lab_surface): a machine on its network
# refused on every guest address, the service bounded, the token in no log.
check_surface() {
  local f=$1
  [ -s "$f" ] || die "the guest did not check the lab's surface: $f missing"
  say "the lab's surface, seen from the guest:"; sed 's/^/    /' "$f"
  if [ "$(grep -c '^neighbour -> .*: refused$' "$f")" -lt 2 ] || grep -q '^neighbour -> .*: reached$' "$f"; then
    die "a machine on the guest's network was not refused on every guest address (vagrant/lab-firewall.nft)"
  fi
  grep -q '^unit limits: TasksMax=[0-9][0-9]* MemoryMax=[0-9][0-9]*$' "$f" ||
    die "the lab's service has no TasksMax=/MemoryMax= (vagrant/provision.sh)"
  if ! grep -q '^token in the journal: 0$' "$f" || ! grep -q '^token in provision.log: 0$' "$f"; then
    die "the token was written into a log"
  fi
}

# From the host, through the forwarded port, as the attendee's browser would:
# the contents API must list the learner notebooks. Then tell the guest.
check_forwarded_port() {
  local port=$1 r=$WORK/results token
  for _ in $(seq 1 1200); do
    kill -0 "$QEMU" 2>/dev/null || return 1
    if [ -s "$r/token" ]; then
      token=$(cat "$r/token")
      if curl -fsS --max-time 20 "http://127.0.0.1:$port/api/contents/learner?token=$token" > "$r/hostcheck.json" 2>>"$r/hostcheck.log" &&
         python3 - "$r/hostcheck.json" > "$r/hostcheck.log" 2>&1 <<'PY'
import json, sys
names = [c["name"] for c in json.load(open(sys.argv[1]))["content"]]
nbs = sorted(n for n in names if n.endswith(".ipynb"))
print("contents API, learner/:", ", ".join(nbs))
assert "index.ipynb" in nbs, "index.ipynb missing from learner/"
PY
      then
        curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/api/contents/learner" > "$r/hostcheck.notoken" || true
        touch "$r/hostcheck.ok" "$r/hostcheck.done"; return 0
      fi
    fi
    sleep 3
  done
  touch "$r/hostcheck.done"; return 1
}

# --- make box: a pre-provisioned libvirt box --------------------------------------
# The provisioned root plus what a Vagrant box needs (the vagrant user with
# Vagrant's insecure key, sshd, DHCP with DNS, a boot loader; rsync and dbus,
# which Vagrant uses in the guest for the synced folder and the hostname), minus what only
# the test images have (this machine's CA certificates, update_initramfs=no).
box_customise() {
  local r=$1 f pub
  pub=$(dpkg -L vagrant | grep 'keys/vagrant.pub$' | head -1)
  [ -f "$pub" ] || die "Vagrant's insecure public key not found (package vagrant)"
  chroot_mounts "$r"
  chroot "$r" /usr/bin/env -i HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin bash -euc '
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends openssh-server ifupdown isc-dhcp-client dbus rsync >/dev/null
    id vagrant >/dev/null 2>&1 || useradd -m -s /bin/bash vagrant
    echo "vagrant ALL=(ALL) NOPASSWD: ALL" > /etc/sudoers.d/vagrant; chmod 0440 /etc/sudoers.d/vagrant
    install -d -m 0700 -o vagrant -g vagrant /home/vagrant/.ssh
    systemctl disable --quiet systemd-networkd.service
    sed -i "s/^update_initramfs=.*/update_initramfs=yes/" /etc/initramfs-tools/update-initramfs.conf
    apt-get clean'
  install -m 0600 "$pub" "$r/home/vagrant/.ssh/authorized_keys"
  chroot "$r" chown -R vagrant:vagrant /home/vagrant/.ssh
  for f in $(ca_files); do rm -f "$r/usr/local/share/ca-certificates/$(basename "$f")"; done
  chroot "$r" update-ca-certificates --fresh >/dev/null 2>&1
  chroot "$r" update-initramfs -u -k all >/dev/null 2>&1
  chroot_umounts "$r"
  printf 'auto lo\niface lo inet loopback\n\nallow-hotplug eth0\niface eth0 inet dhcp\n' > "$r/etc/network/interfaces"
  rm -f "$r/etc/systemd/network/10-dhcp.network" "$r/etc/systemd/system/serial-getty@ttyS0.service"
  rm -f "$r/etc/resolv.conf"; : > "$r/etc/resolv.conf"     # dhclient writes it
  echo 'LABEL=japroot / ext4 defaults,errors=remount-ro 0 1' > "$r/etc/fstab"
  rm -f "$r/etc/ssh/ssh_host_"*; : > "$r/etc/machine-id"    # made anew by each VM
  # Each VM makes its own host keys at first boot, before sshd's own config
  # test (ssh.service's ExecStartPre=sshd -t fails without keys).
  mkdir -p "$r/etc/systemd/system/ssh.service.d"
  printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
    > "$r/etc/systemd/system/ssh.service.d/hostkeys.conf"
}

# An MBR disk with one ext4 partition (mkfs.ext4 -d, no 64bit: extlinux reads it)
# and extlinux: a disk that boots by itself, as libvirt boxes must.
box_disk() {
  local r=$1 size kver mnt
  size=$(( $(du -sxm "$r" | cut -f1) + 3072 ))
  kver=$(find "$r/boot" -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sort -V | tail -1); kver=${kver#vmlinuz-}
  mkfs.ext4 -q -F -L japroot -O ^64bit -E root_owner=0:0 -d "$r" "$WORK/part.img" "${size}M" >/dev/null
  umount "$r"
  truncate -s "$((size + 1))M" "$WORK/disk.raw"
  printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$WORK/disk.raw"
  dd if="$WORK/part.img" of="$WORK/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
  rm -f "$WORK/part.img"
  mnt=$WORK/mnt; mkdir -p "$mnt"
  mount -o loop,offset=1048576 "$WORK/disk.raw" "$mnt"; MOUNTS+=("$mnt")
  mkdir -p "$mnt/boot/extlinux"
  printf 'DEFAULT debian\nTIMEOUT 10\nLABEL debian\n  LINUX /boot/vmlinuz-%s\n  INITRD /boot/initrd.img-%s\n  APPEND %s\n' \
    "$kver" "$kver" "root=LABEL=japroot ro net.ifnames=0 console=tty0 console=ttyS0,115200" \
    > "$mnt/boot/extlinux/extlinux.conf"
  extlinux --install "$mnt/boot/extlinux" >/dev/null
  umount "$mnt"
  dd if=/usr/lib/syslinux/mbr/mbr.bin of="$WORK/disk.raw" bs=440 count=1 conv=notrunc status=none
  BOX_SIZE_MB=$size
}

# Boot the box's own disk (BIOS -> extlinux, -snapshot: the disk stays as built),
# log in as Vagrant would (user vagrant, insecure key), read the token, and ask
# JupyterLab through the forwarded port for the learner notebooks.
box_boot_check() {
  local sshp webp key token ok=no
  key=$(dpkg -L vagrant | grep 'keys/vagrant$' | head -1)
  cp "$key" "$WORK/key"; chmod 600 "$WORK/key"
  sshp=$(free_port); webp=$(free_port)
  say "booting the box: ssh 127.0.0.1:$sshp, JupyterLab 127.0.0.1:$webp"
  qemu-system-x86_64 -accel "$(accel)" -cpu "$(cpu)" -m "$MEMORY" -smp "$CPUS" -nodefaults -display none -snapshot \
    -drive "file=$WORK/disk.raw,format=raw,if=virtio" \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$sshp-:22,hostfwd=tcp:127.0.0.1:$webp-:8888" \
    -device virtio-net-pci,netdev=n0 -device virtio-rng-pci -serial "file:$WORK/box-serial.log" -monitor none &
  QEMU=$!; PIDS+=("$QEMU")
  local sshc=(ssh -q -i "$WORK/key" -p "$sshp" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
              -o ConnectTimeout=10 -o BatchMode=yes vagrant@127.0.0.1)
  for _ in $(seq 1 300); do
    kill -0 "$QEMU" 2>/dev/null || break
    if token=$("${sshc[@]}" sudo cat /var/lib/justaprocess/jupyter-token 2>/dev/null) && [ -n "$token" ] &&
       curl -fsS --max-time 20 "http://127.0.0.1:$webp/api/contents/learner?token=$token" > "$WORK/box-contents.json" 2>/dev/null; then
      python3 -c 'import json,sys; n=sorted(c["name"] for c in json.load(open(sys.argv[1]))["content"]); print("[vm] box: ssh as vagrant ok; JupyterLab lists learner/:", ", ".join(n)); assert "index.ipynb" in n' "$WORK/box-contents.json" && ok=yes
      "${sshc[@]}" 'cat /sys/fs/cgroup/cgroup.controllers; sudo systemctl is-active justaprocess-lab; hostnamectl hostname' | sed 's/^/    /' || true
      break
    fi
    sleep 4
  done
  kill "$QEMU" 2>/dev/null || true; wait "$QEMU" 2>/dev/null || true
  [ "$ok" = yes ] || { tail -20 "$WORK/box-serial.log" >&2 || true; die "the box did not boot to a working JupyterLab (serial log above)"; }
}

box_package() {
  local out=$1 d=$WORK/box
  mkdir -p "$d" "$(dirname "$out")"
  qemu-img convert -O qcow2 "$WORK/disk.raw" "$d/box.img"
  printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' $(( BOX_SIZE_MB / 1024 + 2 )) > "$d/metadata.json"
  printf 'Vagrant.configure("2") do |config|\n  config.vm.provider :libvirt do |lv|\n    lv.driver = "kvm"\n  end\nend\n' > "$d/Vagrantfile"
  tar -C "$d" -cf - metadata.json Vagrantfile box.img | gzip -1 > "$out.tmp"
  mv "$out.tmp" "$out"
  box_key > "$out.key"   # make test-vagrant reuses a box whose key still matches
  say "box: $out ($(du -h "$out" | cut -f1))"
  # `vagrant box add` into a throwaway VAGRANT_HOME: the box is well-formed.
  VAGRANT_HOME=$WORK/vhome VAGRANT_CHECKPOINT_DISABLE=1 vagrant box add --name justaprocess-check "$out" >/dev/null
  VAGRANT_HOME=$WORK/vhome vagrant box list | sed 's/^/    vagrant box list: /'
}

# The box's inputs: the provisioned root's and the box's own steps. (The checkout
# in it is refreshed by Vagrant's rsync folder at `vagrant up`.)
box_key() { { prov_key; declare -f box_customise box_disk box_package; } | sha256sum | cut -c1-12; }

build_box() {
  phase "host tools + lint"; host_tools; lint
  phase "cache lock (another run may hold it)"; lock
  OUT=$(mktemp -d); TMPS+=("$OUT")
  phase "base image (debootstrap, cached)"; build_base
  phase "provisioned image (chroot, cached)"; build_provisioned
  phase "box: provision.sh + box setup (chroot)"
  overlay_root "$PROV"
  chroot_provision "$ROOT" "$WORK/results/provision.log"
  box_customise "$ROOT"
  phase "box: disk + extlinux"; box_disk "$ROOT"; unlock
  phase "box: boot check (ssh, JupyterLab)"; box_boot_check
  phase "box: package + vagrant box add"; box_package "$repo/vagrant/build/justaprocess.box"
  print_times
}

main() {
  [ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, chroot, mounts)"
  case "$target" in
    lint) host_tools; lint ;;
    base) host_tools; lock; build_base ;;
    caches) host_tools; lock; OUT=$(mktemp -d); TMPS+=("$OUT"); build_base; build_provisioned; build_wheels ;;
    keys) echo "base-$(base_key) prov-$(prov_key) wheels-$(wheels_key)" ;;
    test-v2) test_v2 ;;
    test-vm) test_vm ;;
    box) build_box ;;
    box-key) box_key ;;
    *) sed -n '2,27p' "$0"; exit 2 ;;
  esac
}
# One line, read whole before it runs: bash reads a script as it goes, and an
# edit of this file during a run must not feed the running shell new lines.
main "$@"; exit $?
