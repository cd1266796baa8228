#!/usr/bin/env bash
# Guest job of `make test-v2`: the image was provisioned in a chroot by
# vagrant/provision.sh; here, booted on cgroup v2, run the helpers' unit tests
# (the scope below) and, in the full scope (CI), the notebooks that differ on a
# pure cgroup v2 VM with AppArmor: 03 control
# groups, 04 capabilities (user namespaces, securebits), 05 container by hand
# (device eBPF, AppArmor), 06 runtimes (crun runs there), 07 (its escapes on v2,
# rootless runc) and every troubleshooting chapter (08-15: they exec into,
# limit and inspect containers, which differs between cgroup v1 and v2).
set -u
# shellcheck source=vagrant/image/guest/common.sh
. /mnt/results/common.sh
phase "guest facts"
facts || exit 3
cd "$REPO" || exit 1
phase "doctor"
.venv/bin/python -m justaprocess doctor || echo "(doctor reported a problem: the tests below will say more)"
enter_leaf || exit 4
# The scope (JAP_V2_SCOPE, written to $R/scope by vm.sh):
#   quick (the default)  a developer's run, within 5 minutes warm: the tests of the code
#                        paths only a pure cgroup v2 kernel with AppArmor takes (common.sh,
#                        v2_quick, chosen from a full run's per-test times)
#   full                 what CI runs (.ci/run): the unit test files that touch cgroups,
#                        AppArmor, user namespaces or securebits (by content), the leftovers
#                        check and notebooks 03-15 (common.sh, v2_scope; the header says why)
#   all                  every unit test + those notebooks
#   anything else        a list of test paths or node ids to run alone (a quick look at one
#                        failure on v2, e.g. JAP_V2_SCOPE="tests/test_fleet.py notebooks/14-at-scale.ipynb")
# make test-vm runs the seat's tests (seat_scope), or with JAP_VM_SCOPE=rest everything
# the full scope leaves out (rest_scope).
scope=$(cat "$R/scope" 2>/dev/null || echo quick)
phase "pytest: scope ${scope:0:40}"
units=() nbs=()
case "$scope" in
  quick) v2_quick; units=("${V2_QUICK[@]}") ;;
  full) v2_scope; units=("${V2_UNITS[@]}") nbs=("${V2_NBS[@]}") ;;
  all) v2_scope; units=(tests) nbs=("${V2_NBS[@]}") ;;
  *) read -r -a units <<< "$scope" ;;
esac
echo "unit tests: ${units[*]}"
echo "notebooks: ${nbs[*]:-(none in this scope)}"
rc=0
.venv/bin/python -m pytest "${units[@]}" "${nbs[@]}" --junitxml="$R/junit.xml" > "$R/tests.log" 2>&1 || rc=$?
tail -25 "$R/tests.log"
phase end
pytest_rc "$rc"
