#!/usr/bin/env bash
# Guest job of `make test-v2`: the image was provisioned in a chroot by
# vagrant/provision.sh; here, booted on cgroup v2, run the helpers' unit tests
# and the notebooks that differ on a pure cgroup v2 VM with AppArmor: 03 control
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
phase "pytest: cgroup unit tests + notebooks"
# Under TCG the whole unit suite takes long here: test-v2 (CI) runs the unit
# test files that touch cgroups, AppArmor, user namespaces or securebits (by
# content), the leftovers check and the
# notebooks below. JAP_V2_SCOPE=all runs every unit test; any other value is a
# list of test paths or node ids to run alone (a quick look at one failure on
# v2, e.g. JAP_V2_SCOPE="tests/test_fleet.py notebooks/14-at-scale.ipynb").
# The list is common.sh's v2_scope; make test-vm runs the seat's tests (seat_scope), or with
# JAP_VM_SCOPE=rest everything this list leaves out (rest_scope).
scope=$(cat "$R/scope" 2>/dev/null || echo cgroups)
units=() nbs=()
if [ "$scope" = all ]; then units=(tests)
elif [ "$scope" = cgroups ]; then
  v2_scope; units=("${V2_UNITS[@]}")
else
  read -r -a units <<< "$scope"
fi
if [ "$scope" = all ] || [ "$scope" = cgroups ]; then
  v2_scope; nbs=("${V2_NBS[@]}")
fi
echo "unit tests: ${units[*]}"
echo "notebooks: ${nbs[*]:-(none yet)}"
rc=0
.venv/bin/python -m pytest "${units[@]}" "${nbs[@]}" --junitxml="$R/junit.xml" > "$R/tests.log" 2>&1 || rc=$?
tail -25 "$R/tests.log"
phase end
pytest_rc "$rc"
