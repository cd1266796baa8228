# Just a Process: the two commands.
#   make lab    install what is missing, then start JupyterLab on 127.0.0.1:8888
#   make test   install what is missing, then run every test (unit tests + nbval)
#   make test-ui  the chapters with widgets in JupyterLab in a real browser (chromium)
# Both are idempotent: a second run installs nothing.

SHELL := /bin/bash
# Debian's Python (python3 + python3-venv from tools/system-packages.txt), not
# whichever python3 is first on PATH: the VM and CI must build the same venv.
PYTHON ?= /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8888

.PHONY: lab test test-ui system venv learner learner-reset cleanup leftovers doctor help constraints

help:
	@sed -n '2,5p' Makefile

system:
	@bash tools/install-system-packages.sh

# The venv is rebuilt only when the dependency list (helpers/pyproject.toml) or the
# versions it resolved to (helpers/constraints.txt) change. -c: every seat gets those
# versions, whichever day it is built. --no-compile: Python writes the .pyc of what
# it imports when it first imports it; compiling all ~5000 files up front took
# minutes of a VM's provisioning under emulation (vagrant/README.md).
$(VENV)/.installed: helpers/pyproject.toml helpers/constraints.txt | system
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --no-compile -c helpers/constraints.txt -e 'helpers[lab,test]'
	@mkdir -p $(VENV)/etc/jupyter/labconfig && cp tools/page_config.json $(VENV)/etc/jupyter/labconfig/
	@touch $@

venv: system $(VENV)/.installed

# Learner copies (solutions emptied) are written only where missing: a
# learner's work is never overwritten. `make learner-reset` rewrites them.
learner: venv
	@$(PY) tools/notebooks.py learner

learner-reset: venv
	@$(PY) tools/notebooks.py learner --force

# tools/in-lab-cgroup.sh: on pure cgroup v2, run where the lab may make cgroups.
lab: venv learner
	@bash tools/in-lab-cgroup.sh bash tools/start-lab.sh $(PORT)

test: venv
	@bash tools/in-lab-cgroup.sh $(PY) -m pytest

# The browser test: Debian's chromium (the @test-ui group of the system list) and
# Playwright (the `ui` extra) are installed only here, not on the workshop VMs.
# Screenshots: build/ui-screenshots/.
$(VENV)/.installed-ui: helpers/pyproject.toml helpers/constraints.txt | $(VENV)/.installed
	$(PY) -m pip install -q --disable-pip-version-check -c helpers/constraints.txt -e 'helpers[lab,test,ui]'
	@touch $@

test-ui: venv learner
	@bash tools/install-system-packages.sh test-ui
	@$(MAKE) --no-print-directory $(VENV)/.installed-ui
	@bash tools/in-lab-cgroup.sh $(PY) -m pytest tests/ui

doctor: venv
	@$(PY) -m justaprocess doctor

# After a change of helpers/pyproject.toml (or to take newer releases): resolve the list
# afresh in a scratch venv, without the old constraints, and write them anew.
constraints: system
	@rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --disable-pip-version-check -e 'helpers[lab,test,ui]'
	@{ sed -n '/^#/p' helpers/constraints.txt; .venv-lock/bin/python -m pip freeze --exclude-editable; } \
	  > helpers/constraints.txt.new && mv helpers/constraints.txt.new helpers/constraints.txt
	@rm -rf .venv-lock
	@echo "helpers/constraints.txt rewritten: review the diff, run make test, commit it"

cleanup: venv
	@$(PY) -m justaprocess cleanup

leftovers: venv
	@$(PY) -m justaprocess leftovers

# --- the workshop VM (vagrant/README.md) ----------------------------------------
# As root; build tools (debootstrap, qemu, ...) come from vagrant/host-packages.txt.
# The image is cached outside the checkout (/var/cache/justaprocess/vm).
#   make test-v2   image provisioned in a chroot by vagrant/provision.sh, booted on
#                  cgroup v2: the tests of the v2-only code paths (~5 min warm);
#                  JAP_V2_SCOPE=full (CI): the cgroup unit tests + notebooks 03-15
#   make test-vm   fresh image booted, provision.sh run inside as Vagrant does,
#                  JupyterLab checked through the forwarded port, the instructor's kit
#                  against two seats, the seat's tests (JAP_VM_SCOPE=rest|all for more)
#   make box       vagrant/build/justaprocess.box: pre-provisioned, for offline venues
#   make test-vagrant  the box booted by `vagrant up --provider=libvirt` as an attendee
#                  would, in namespaces of its own; JupyterLab checked (maintainers, not CI;
#                  FULL=1: also `make test` in the guest)
.PHONY: test-v2 test-vm box test-vagrant
test-v2:
	@bash vagrant/image/vm.sh test-v2

test-vm:
	@bash vagrant/image/vm.sh test-vm

box:
	@bash vagrant/image/vm.sh box

test-vagrant:
	@FULL=$(FULL) bash vagrant/image/test-vagrant.sh
