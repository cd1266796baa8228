"""One root filesystem, one command, every engine at hand - side by side, live.

The hand-built engine of chapter 05, the OCI runtimes runc and crun
(:class:`runtimes.OCIContainer`) and podman, an engine above one of them (a
store of the lab's own, :mod:`justaprocess.podman`), each start the same
command from the same busybox root with the same memory and pids limits.
What each one set up is then read the same way for all, from the kernel:
``/proc/PID/ns``, ``/proc/PID/status`` (capabilities, NoNewPrivs, Seccomp),
``/proc/PID/cgroup`` and the cgroup's own limit files (:func:`runtimes.facts`).

An engine that cannot run here is still tried, so its column says why in its
own words: crun 1.8 on a v1+v2 hybrid whose cgroup2 hierarchy has a controller
answers "cgroups in hybrid mode not supported" (libcrun/cgroup.c).  Only a
tool that is not installed is not tried (the column says how to install it).

Every object is the lab's, registered before it exists (the containers' own
classes and the podman store do it); :meth:`Lineup.remove` takes all away, and
so does ``lab.cleanup`` after a killed kernel.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from . import cgroups, lab, runtimes
from .errors import BadInput, LabError

ENGINES = ("hand-built", "runc", "crun", "podman")


@dataclass
class Column:
    """One engine's container: its facts, or why it is not running."""
    engine: str                   # one of ENGINES
    label: str                    # what started it: "runc 1.1.5", "podman 4.3.1 -> crun"
    pid: int | None = None        # host PID of the container's PID 1
    facts: runtimes.ContainerFacts | None = None
    skipped: str = ""             # the reason it does not run ("" when it does)
    name: str = ""                # the container's name (jap-...), as its engine knows it

    @property
    def running(self) -> bool:
        return self.facts is not None

    @property
    def memory_file(self) -> str | None:
        """The cgroup file that holds its memory limit: memory.max (v2) or
        memory.limit_in_bytes (v1's memory hierarchy)."""
        if self.facts is None:
            return None
        cg = self.facts.cgroups
        if "memory" in cg:
            return os.path.join(cg["memory"], "memory.limit_in_bytes")
        return os.path.join(cg["unified"], "memory.max") if "unified" in cg else None


def short_cgroup(path: str) -> str:
    """The last two levels of a cgroup directory, long hex ids cut: ``jap-lab/jap-1a2b3c``,
    ``libpod_parent/libpod-aa96d208ea43…``."""
    parts = []
    for p in path.rstrip("/").split("/")[-2:]:
        head, _, tail = p.rpartition("-")
        if len(tail) > 16 and all(ch in "0123456789abcdef" for ch in tail):
            p = f"{head}-{tail[:12]}…"
        parts.append(p)
    return "/".join(parts)


class Lineup:
    """The same ``argv`` from the same ``rootfs`` under several engines.

    Nothing happens in the constructor; ``start()`` starts each engine's
    container (an engine that fails gets a skipped column with its error);
    ``table()`` lines up what the kernel says; ``remove()`` takes all away.
    """

    def __init__(self, rootfs, argv=("sleep", "120"), *, memory: int | str | None = "64M",
                 pids: int | None = 64, engines=ENGINES):
        engines = tuple(engines)
        unknown = [e for e in engines if e not in ENGINES]
        if unknown or not engines:
            raise BadInput(f"engines: some of {', '.join(ENGINES)}, not {unknown or 'none'}")
        if not argv:
            raise BadInput("argv: the command every engine runs, e.g. ['sleep', '120']")
        runtimes.check_options(memory, pids, None)   # refused now, before anything exists
        self.rootfs = rootfs
        self.argv = list(argv)
        self.memory, self.pids = memory, pids
        self.engines = engines
        self.columns: list[Column] = []
        self._made: list = []        # objects with remove(), in start order
        self.store = None            # the podman store, when podman runs

    # -- life cycle --
    def start(self) -> "Lineup":
        if self.columns:
            raise BadInput("this line-up is started already")
        try:
            for e in self.engines:
                self.columns.append(getattr(self, "_" + e.replace("-", "_"))())
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        """Stop and remove every container and the podman store (safe twice)."""
        while self._made:
            self._made.pop().remove()
        self.store = None

    def __enter__(self) -> "Lineup":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"<Lineup {' '.join(c.engine for c in self.columns) or 'not started'}>"

    # -- the engines --
    def _hand_built(self) -> Column:
        from . import container
        c = container.Container(self.argv, rootfs=self.rootfs, memory=self.memory, pids=self.pids)
        self._made.append(c)
        c.create()
        c.start()
        return self._column("hand-built", "justaprocess (ch. 05)", c.pid, c.name)

    def _runc(self) -> Column:
        return self._oci("runc")

    def _crun(self) -> Column:
        return self._oci("crun")

    def _oci(self, name: str) -> Column:
        rt = runtimes.find(name)
        if rt.path is None:
            return Column(name, name, skipped=rt.reason)
        # check_layout=False: where crun refuses the layout, let it run and say so itself.
        c = runtimes.OCIContainer(self.rootfs, self.argv, runtime=name, memory=self.memory,
                                  pids=self.pids, check_layout=False)
        try:
            c.start()
        except LabError as exc:     # start() removed what it made
            return Column(name, f"{name} {rt.version}", skipped=str(exc))
        self._made.append(c)
        return self._column(name, f"{name} {rt.version}", c.pid, c.name)

    def _podman(self) -> Column:
        from . import podman
        why = podman.missing()
        if why:
            return Column("podman", "podman", skipped=why)
        st = podman.Store()
        self._made.append(st)
        st.create()
        self.store = st
        name = lab.name("podman")
        opts = ["--pids-limit", str(self.pids)] if self.pids else []
        mem = cgroups.parse_size(self.memory, "memory")
        if mem:
            opts += ["--memory", str(mem)]
        try:
            st.run(name, self.argv, options=opts, detach=True, rootfs=self.rootfs)
        except LabError as exc:
            return Column("podman", "podman", skipped=str(exc))
        info = st.inspect(name)
        version = st.podman("version", "--format", "{{.Client.Version}}").strip()
        # the runtime podman really used, as it recorded it for this container
        return self._column("podman", f"podman {version} -> {info.get('OCIRuntime', '?')}",
                            int(info["State"]["Pid"]), name)

    def _column(self, engine: str, label: str, pid: int, name: str) -> Column:
        return Column(engine, label, pid, runtimes.facts(pid, engine), name=name)

    # -- looking at them --
    def column(self, engine: str) -> Column:
        for c in self.columns:
            if c.engine == engine:
                return c
        raise BadInput(f"no {engine!r} in this line-up: {', '.join(c.engine for c in self.columns)}")

    def running(self) -> list[Column]:
        return [c for c in self.columns if c.running]

    def rows(self) -> dict[str, list[str]]:
        """{row: one cell per column}: who started it, its cgroup, then ``facts.summary()``."""
        out: dict[str, list[str]] = {"started by": [c.label for c in self.columns]}
        cg = []
        for c in self.columns:
            d = c.facts and (c.facts.cgroups.get("memory") or c.facts.cgroups.get("unified"))
            cg.append(short_cgroup(d) if d else "-")
        out["cgroup"] = cg
        sums = [c.facts.summary() if c.facts else None for c in self.columns]
        keys = next((list(s) for s in sums if s), [])
        for k in keys:
            out[k] = [str(s[k]) if s else "-" for s in sums]
        return out

    def table(self) -> str:
        """The rows side by side, one column per engine; then why a column is empty."""
        rows = self.rows()
        w = max(len(k) for k in rows) + 2
        heads = [c.engine for c in self.columns]
        cws = [max(len(h), *(len(v[i]) for v in rows.values())) + 2 for i, h in enumerate(heads)]
        lines = [" " * w + "".join(f"{h:<{cw}}" for h, cw in zip(heads, cws))]
        for k, cells in rows.items():
            lines.append(f"{k:<{w}}" + "".join(f"{v:<{cw}}" for v, cw in zip(cells, cws)))
        lines += [f"{c.engine}: not running - {c.skipped}" for c in self.columns if c.skipped]
        return "\n".join(line.rstrip() for line in lines)

    def differences(self, base: str = "hand-built") -> dict[str, list[str]]:
        """{engine: the summary rows where it differs from ``base``} for the running ones."""
        b = self.column(base)
        if b.facts is None:
            raise BadInput(f"{base} is not running: {b.skipped}")
        return {c.engine: runtimes.differences(b.facts, c.facts)
                for c in self.running() if c is not b}
