# Sourced by the guest jobs (test-v2.sh, test-vm.sh), run from the 9p folder.
# shellcheck shell=bash
R=/mnt/results
export REPO=/opt/justaprocess
_pt=$(date +%s); _pn=""
phase() {  # phase NAME: closes the previous phase's time in phases.txt
  local now; now=$(date +%s)
  [ -n "$_pn" ] && printf '%-34s %5ss\n' "$_pn" $((now - _pt)) >> "$R/phases.txt"
  _pn=$1; _pt=$now
  [ "$1" = end ] || echo "== $1"
}
facts() {  # the guest's kernel and cgroup facts; fail unless pure cgroup v2
  echo "kernel: $(uname -r)   cpus: $(nproc)   memory: $(awk '/MemTotal/ {print int($2/1024) " MiB"}' /proc/meminfo)"
  echo "/sys/fs/cgroup: $(stat -fc %T /sys/fs/cgroup)   controllers: $(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null)"
  echo "this job's cgroup: $(cat /proc/self/cgroup)"
  [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] || { echo "error: the guest is not on pure cgroup v2"; return 3; }
}
# pytest: 0 all passed; 5 collected nothing (a run that tests nothing fails too).
pytest_rc() { local rc=$1; [ "$rc" = 5 ] && echo "error: pytest collected no test"; return "$rc"; }
# cgroup v2: only leaves hold processes. Like the lab's service, the job (a
# delegated unit) moves its processes into a leaf first, so the lab's cgroups
# can go beside it (helpers/justaprocess/cgroups/tree.py, enter_leaf).
enter_leaf() { "$REPO/.venv/bin/python" -m justaprocess cgroup --enter-leaf job && cat /proc/self/cgroup; }
# Software emulation (TCG) runs ~10-20x slower than the attendee's VM: the
# first matplotlib figure alone took over 120 s here. pytest.ini's cell timeout
# is a hang detector; give it room. (The 30 s budget per notebook is measured
# by `make test` on the host.)
export PYTEST_ADDOPTS="--nbval-cell-timeout=${JAP_GUEST_CELL_TIMEOUT:-600}"
# test-v2's full scope (JAP_V2_SCOPE=full, CI): the unit test files that touch cgroups,
# AppArmor, user namespaces or securebits (by content) and the leftovers check; notebooks
# 03-15 (test-v2.sh says why). Sets V2_UNITS and V2_NBS.
v2_scope() {
  local f; V2_UNITS=() V2_NBS=()
  for f in tests/test_*.py; do
    if grep -qiE 'cgroup|apparmor|userns|user_ns|securebits' "$f" || [ "$f" = tests/test_zz_leftovers.py ]; then V2_UNITS+=("$f"); fi
  done
  for f in notebooks/0[3-7]-*.ipynb notebooks/0[89]-*.ipynb notebooks/1[0-5]-*.ipynb; do
    [ -e "$f" ] && V2_NBS+=("$f")
  done
  return 0
}
# test-v2's default scope (quick): a developer's run within 5 minutes warm, boot included.
# The code paths only a pure cgroup v2 kernel with AppArmor takes - the v2 layout, limits,
# stats and pressure (cgroups, cgroups_memory), a process started into its cgroup (launch),
# the device eBPF program (devices, container), AppArmor (apparmor, container), user
# namespaces and securebits (namespaces, capabilities_securebits), runc and crun on v2
# (runtimes), the lab's cleanup and doctor there (lab, doctor), the escapes of 07 on v2
# (escapes) - and chapters 04 and 05 as a learner runs them, then the leftovers check.
# Chosen from a full run's per-test times (29 Nov 2026, quiet machine, in seconds): these
# files 3.5 apparmor, 1.4 securebits, 11.7 cgroups, 6.6 cgroups_memory, 15.1 container,
# 4.5 devices, 8.8 doctor, 10.3 escapes, 12.4 lab, 11.0 launch, 10.3 namespaces,
# 39.5 runtimes, 2.4 leftovers; notebooks 24.1 (04), 12.6 (05). Left to the full scope:
# notebook 03 (97 s, its memory.min demo alone 54 s), podman (200 s), each chapter's
# kernel killed and cleaned up (272 s), every exercise's check (93 s), chapters 06-15.
v2_quick() {
  # shellcheck disable=SC2034  # read by test-v2.sh
  V2_QUICK=(tests/test_apparmor.py tests/test_capabilities_securebits.py tests/test_cgroups.py
            tests/test_cgroups_memory.py tests/test_container.py tests/test_devices.py
            tests/test_doctor.py tests/test_escapes.py tests/test_lab.py tests/test_launch.py
            tests/test_namespaces.py tests/test_runtimes.py
            notebooks/04-capabilities.ipynb notebooks/05-container-by-hand.ipynb
            tests/test_zz_leftovers.py)
}
# JAP_VM_SCOPE=rest: every unit test file and chapter test-v2's full scope does not run
# (and the leftovers check), so that the two runs together cover the whole suite on v2.
rest_scope() {
  local f; v2_scope; REST=()
  for f in tests/test_*.py notebooks/[0-9][0-9]-*.ipynb; do
    case " ${V2_UNITS[*]} ${V2_NBS[*]} " in *" $f "*) continue ;; esac
    REST+=("$f")
  done
  REST+=(tests/test_zz_leftovers.py)
}
# test-vm's default scope (seat): the tests of what provision.sh made - the pinned venv,
# the lab's start and its token, the guest firewall, the instructor's kit - and the
# chapters test-v2's full scope does not run (00-02 today: minutes under emulation, where the
# rest's unit tests - every learner copy run, for one - take a quarter of an hour).
seat_scope() {
  local f; v2_scope; REST=(tests/test_dependencies.py tests/test_lab_start.py tests/test_secrets.py
                          tests/test_vm_surface.py tests/test_workshop.py)
  for f in notebooks/[0-9][0-9]-*.ipynb; do
    case " ${V2_NBS[*]} " in *" $f "*) continue ;; esac
    REST+=("$f")
  done
  REST+=(tests/test_zz_leftovers.py)
}
