"""One list of Python dependencies (helpers/pyproject.toml) and one lock of the versions it
resolved to (helpers/constraints.txt), which every way of building a seat installs."""
import os
import re
import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(*path: str) -> str:
    with open(os.path.join(REPO, *path)) as f:
        return f.read()


def pins() -> dict[str, Version]:
    out = {}
    for line in read("helpers", "constraints.txt").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)", line.strip())
        assert m, f"constraints.txt: {line!r} is not NAME==VERSION"
        out[canonicalize_name(m.group(1))] = Version(m.group(2))
    return out


def requirements() -> list[Requirement]:
    project = tomllib.loads(read("helpers", "pyproject.toml"))["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return [Requirement(r) for r in reqs]


def test_every_dependency_is_pinned_within_its_range():
    p = pins()
    for req in requirements():
        name = canonicalize_name(req.name)
        assert name in p, f"{req.name} (pyproject.toml) is not in constraints.txt: run `make constraints`"
        assert req.specifier.contains(p[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={p[name]}, outside pyproject's {req.specifier}: `make constraints`"


# Extras that `make venv` does not install (the seats have none of them): `ui` is
# installed by `make test-ui` only (the browser test). Their pins are checked where present.
NOT_ON_SEATS = ("ui",)


def seat_closure() -> set[str]:
    """Every distribution `make venv` installs: helpers[lab,test] and what they require."""
    project = tomllib.loads(read("helpers", "pyproject.toml"))["project"]
    todo = list(project["dependencies"])
    for extra, reqs in project["optional-dependencies"].items():
        if extra not in NOT_ON_SEATS:
            todo += reqs
    todo = [(r, "") for r in todo]
    seen: set[tuple[str, str]] = set()
    while todo:
        text, wanted_by = todo.pop()  # wanted_by: the extra of the parent that asks for it
        req = Requirement(text)
        if req.marker and not req.marker.evaluate({"extra": wanted_by}):
            continue
        name = canonicalize_name(req.name)
        for extra in ("", *req.extras):  # jsonschema[format-nongpl] brings more
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            try:
                todo += [(r, extra) for r in metadata.requires(name) or []]
            except metadata.PackageNotFoundError:
                pass  # reported as missing below
    return {name for name, _ in seen}


def test_the_venv_has_the_pinned_versions():
    """The venv this test runs in was built with -c constraints.txt (make venv)."""
    wrong = []
    on_seats = seat_closure()
    for name, version in pins().items():
        try:
            have = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            if name in on_seats:
                wrong.append(f"{name} missing")
            continue
        if have != version:
            wrong.append(f"{name} {have} instead of {version}")
    assert not wrong, f"the venv differs from constraints.txt: {wrong} - run `make venv`"


def test_every_way_of_building_a_seat_uses_the_constraints():
    make = read("Makefile")
    install = [ln for ln in make.splitlines() if "pip install" in ln and "helpers[lab,test" in ln
               and ".venv-lock" not in ln]
    assert install and all("-c helpers/constraints.txt" in ln for ln in install), install
    assert re.search(r"^\$\(VENV\)/\.installed: .*helpers/constraints\.txt", make, re.M)
    assert "helpers/constraints.txt" in read("vagrant", "provision.sh")  # its rebuild check
    assert "-c ./helpers/constraints.txt" in read("environment.yml")
