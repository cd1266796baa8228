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
