"""Device control on cgroup v2: an eBPF program (BPF_PROG_TYPE_CGROUP_DEVICE) built from an allow-list.

cgroup v2 has no ``devices.allow``/``devices.deny`` files: "Device controller" in
Documentation/admin-guide/cgroup-v2.rst says access is controlled by eBPF programs
attached to the cgroup with BPF_CGROUP_DEVICE.  The kernel runs every program attached
to the cgroup and its ancestors on each open(2) and mknod(2) of a device node; a return
of 0 is EPERM.  The program reads one ``struct bpf_cgroup_dev_ctx`` (include/uapi/linux/
bpf.h)::

    __u32 access_type;   /* (BPF_DEVCG_ACC_* << 16) | BPF_DEVCG_DEV_* */
    __u32 major;
    __u32 minor;

This module builds such a program from the lab's rules (``'c 1:3 rwm'``, the v1 syntax of
cgroup-v1/devices.rst), the way runc and crun do (runc's devicefilter: one block of
compares per rule, "allow" on the first match, "deny" at the end), loads it with
bpf(2) BPF_PROG_LOAD, attaches it with BPF_PROG_ATTACH (BPF_F_ALLOW_MULTI) to a cgroup
directory and detaches it again.  Nothing is pinned in bpffs: the program lives as long
as it is attached (our fd is closed right after the attach), and goes when it is
detached or its cgroup is removed (docs/kernel-notes.md, "cgroup v2 device programs").

It works on any cgroup2 directory: on pure v2 and on the hybrid's unified hierarchy too
(the kernel checks the eBPF programs *and* the v1 devices controller: security/device_cgroup.c).
"""
from __future__ import annotations

import ctypes
import errno
import os
import re
import struct
from typing import Iterable, NamedTuple

from . import _libc
from .errors import BadInput, LabError, NotSupported

# include/uapi/linux/bpf.h
BPF_PROG_LOAD, BPF_PROG_ATTACH, BPF_PROG_DETACH = 5, 8, 9
BPF_PROG_GET_NEXT_ID, BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD = 11, 13, 15
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = _libc.BPF_CGROUP_DEVICE
BPF_F_ALLOW_MULTI = 2
BPF_DEVCG_ACC_MKNOD, BPF_DEVCG_ACC_READ, BPF_DEVCG_ACC_WRITE = 1, 2, 4
BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR = 1, 2
BPF_OBJ_NAME_LEN = 16
LICENSE = b"Apache"   # as runc's; the kernel only asks it for GPL-only helpers (we call none)

ACCESS = {"r": BPF_DEVCG_ACC_READ, "w": BPF_DEVCG_ACC_WRITE, "m": BPF_DEVCG_ACC_MKNOD}
TYPES = {"c": BPF_DEVCG_DEV_CHAR, "b": BPF_DEVCG_DEV_BLOCK}


class Rule(NamedTuple):
    """One allow rule: type 'c'/'b'/'a', major and minor (None = any), access bits."""
    type: str
    major: int | None
    minor: int | None
    access: int

    def __str__(self) -> str:
        if self.type == "a":
            return "a"
        acc = "".join(k for k, v in ACCESS.items() if self.access & v)
        num = lambda n: "*" if n is None else str(n)  # noqa: E731
        return f"{self.type} {num(self.major)}:{num(self.minor)} {acc}"


_RULE = re.compile(r"^([abc]) (\d+|\*):(\d+|\*) ([rwm]{1,3})$")


def parse(rule: str) -> Rule:
    """``'c 1:3 rwm'`` (cgroup-v1/devices.rst syntax) or ``'a'`` (every device, every access)."""
    if rule == "a":
        return Rule("a", None, None, 7)
    m = _RULE.match(rule) if isinstance(rule, str) else None
    if not m:
        raise BadInput(f"devices: {rule!r} is not a rule: 'TYPE MAJ:MIN ACCESS' as in 'c 1:3 rwm' "
                       "(type a/b/c, '*' for any number, access r w m)")
    t, ma, mi, acc = m.groups()
    num = lambda s: None if s == "*" else int(s)  # noqa: E731
    bits = 0
    for ch in acc:
        bits |= ACCESS[ch]
    if t == "a":  # 'a *:* rwm' is v1's long spelling of 'a'
        return Rule("a", None, None, 7)
    for n in (ma, mi):
        if n != "*" and int(n) > 0x7FFFFFFF:  # Linux: 12-bit majors, 20-bit minors (kdev_t.h)
            raise BadInput(f"devices: {rule!r}: no device has such a number")
    return Rule(t, num(ma), num(mi), bits)


# --- the program ------------------------------------------------------------------------
# struct bpf_insn (linux/bpf.h): u8 code; u8 dst_reg:4, src_reg:4; s16 off; s32 imm.
_LDX_W = 0x61        # BPF_LDX | BPF_MEM | BPF_W:   dst = *(u32 *)(src + off)
_AND32_K = 0x54      # BPF_ALU | BPF_AND | BPF_K:   dst &= imm (32 bit)
_RSH32_K = 0x74      # BPF_ALU | BPF_RSH | BPF_K:   dst >>= imm
_MOV32_K = 0xb4      # BPF_ALU | BPF_MOV | BPF_K:   dst = imm
_MOV32_X = 0xbc      # BPF_ALU | BPF_MOV | BPF_X:   dst = src
_JNE_K = 0x55        # BPF_JMP | BPF_JNE | BPF_K:   if dst != imm goto pc + 1 + off
_JNE_X = 0x5d        # BPF_JMP | BPF_JNE | BPF_X:   if dst != src goto pc + 1 + off
_EXIT = 0x95         # BPF_JMP | BPF_EXIT:          return r0


def _ins(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> tuple:
    return (code, dst, src, off, imm)


def program(rules: Iterable[str | Rule]) -> list[tuple]:
    """The instructions of a device filter that allows ``rules`` and denies everything else.

    r2 = device type, r3 = access asked for, r4 = major, r5 = minor; then per rule a block
    "if anything differs, jump to the next block; else return 1 (allow)"; the last block
    returns 0 (deny: EPERM).  An access rule matches when every bit asked for is allowed
    (``r3 & allowed == r3``); an 'a' rule allows everything.
    """
    rs = [r if isinstance(r, Rule) else parse(r) for r in rules]
    insns = [_ins(_LDX_W, 2, 1, 0), _ins(_AND32_K, 2, imm=0xFFFF),      # r2 = ctx->access_type & 0xffff
             _ins(_LDX_W, 3, 1, 0), _ins(_RSH32_K, 3, imm=16),          # r3 = ctx->access_type >> 16
             _ins(_LDX_W, 4, 1, 4),                                      # r4 = ctx->major
             _ins(_LDX_W, 5, 1, 8)]                                      # r5 = ctx->minor
    for r in rs:
        if r.type == "a":
            insns += [_ins(_MOV32_K, 0, imm=1), _ins(_EXIT)]
            break  # nothing after an allow-all is reached
        block = [("jne", 2, TYPES[r.type])]
        if r.access != 7:
            block += [_ins(_MOV32_X, 1, 3), _ins(_AND32_K, 1, imm=r.access), ("jnex", 1, 3)]
        if r.major is not None:
            block.append(("jne", 4, r.major))
        if r.minor is not None:
            block.append(("jne", 5, r.minor))
        block += [_ins(_MOV32_K, 0, imm=1), _ins(_EXIT)]
        n = len(block)
        for i, ins in enumerate(block):  # jumps go to the first instruction after the block
            if ins[0] == "jne":
                ins = _ins(_JNE_K, ins[1], off=n - i - 1, imm=ins[2])
            elif ins[0] == "jnex":
                ins = _ins(_JNE_X, ins[1], ins[2], off=n - i - 1)
            insns.append(ins)
    else:
        insns += [_ins(_MOV32_K, 0, imm=0), _ins(_EXIT)]
    return insns


def encode(insns: list[tuple]) -> bytes:
    return b"".join(struct.pack("<BBhi", c, (s << 4) | d, off, imm) for c, d, s, off, imm in insns)


def disassemble(insns: list[tuple]) -> list[str]:
    """The program in the kernel verifier's notation (what ``bpftool prog dump xlated`` shows)."""
    ctx = {0: "access_type", 4: "major", 8: "minor"}
    out = []
    for pc, (c, d, s, off, imm) in enumerate(insns):
        text = {_LDX_W: lambda: f"r{d} = *(u32 *)(r{s} + {off})   /* ctx->{ctx.get(off, off)} */",
                _AND32_K: lambda: f"w{d} &= {imm:#x}",
                _RSH32_K: lambda: f"w{d} >>= {imm}",
                _MOV32_K: lambda: f"w{d} = {imm}",
                _MOV32_X: lambda: f"w{d} = w{s}",
                _JNE_K: lambda: f"if r{d} != {imm & 0xFFFFFFFF} goto pc+{off}",
                _JNE_X: lambda: f"if r{d} != r{s} goto pc+{off}",
                _EXIT: lambda: "exit"}.get(c, lambda: f"(code {c:#04x} r{d} r{s} {off} {imm})")()
        out.append(f"{pc:3}: {text}")
    return out


# --- bpf(2) ------------------------------------------------------------------------------

class VerifierError(LabError):
    """The kernel's verifier refused the program; the message carries its log."""


def _attr() -> ctypes.Array:
    return ctypes.create_string_buffer(128)   # union bpf_attr, zero-padded (bpf(2))


def load(insns: list[tuple], name: str = "") -> int:
    """BPF_PROG_LOAD of a BPF_PROG_TYPE_CGROUP_DEVICE program: its fd (close-on-exec).

    Loaded first without a log; if the verifier refuses it, loaded again with a log
    buffer (log_level 1) so the error says why (bpf(2), "eBPF verifier").
    """
    code = encode(insns)
    buf = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(LICENSE)
    prog_name = name.encode()[:BPF_OBJ_NAME_LEN - 1]

    def attempt(log) -> int:
        a = _attr()
        struct.pack_into("=IIQQ", a, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(insns),
                         ctypes.addressof(buf), ctypes.addressof(lic))
        if log is not None:
            struct.pack_into("=IIQ", a, 24, 1, len(log), ctypes.addressof(log))
        struct.pack_into(f"={BPF_OBJ_NAME_LEN}s", a, 48, prog_name)
        return _libc.bpf(BPF_PROG_LOAD, a)

    try:
        return attempt(None)
    except PermissionError as exc:
        raise NotSupported(f"BPF_PROG_LOAD refused ({exc.strerror}): loading a cgroup device "
                           "program needs root (CAP_SYS_ADMIN, or CAP_BPF and CAP_NET_ADMIN)") from exc
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EACCES):
            raise
        log = ctypes.create_string_buffer(1 << 16)
        try:
            return attempt(log)
        except OSError as exc2:
            text = log.value.decode(errors="replace").strip() or "(empty log)"
            raise VerifierError(f"the kernel refused the device program ({exc2.strerror}); "
                                f"verifier log:\n{text}\n- a bug in justaprocess._bpfdev.program: "
                                "please report it with the rules you gave") from None


def prog_info(fd: int) -> tuple[int, str, str]:
    """(id, name, tag) of a loaded program (BPF_OBJ_GET_INFO_BY_FD, struct bpf_prog_info)."""
    info = ctypes.create_string_buffer(96)
    a = _attr()
    struct.pack_into("=IIQ", a, 0, fd, len(info), ctypes.addressof(info))
    _libc.bpf(BPF_OBJ_GET_INFO_BY_FD, a)
    pid = struct.unpack_from("=I", info, 4)[0]
    tag = info.raw[8:16].hex()
    name = info.raw[64:80].split(b"\0", 1)[0].decode(errors="replace")
    return pid, name, tag


def info(prog_id: int) -> tuple[int, str, str]:
    """(id, name, tag) of a loaded program by its id (FileNotFoundError if it is gone)."""
    fd = prog_fd(prog_id)
    try:
        return prog_info(fd)
    finally:
        os.close(fd)


def xlated(prog_id: int) -> list[tuple]:
    """The instructions the kernel holds for a program, read back from it (what
    ``bpftool prog dump xlated id N`` prints): bpf_prog_info.xlated_prog_insns."""
    fd = prog_fd(prog_id)
    try:
        info = ctypes.create_string_buffer(96)
        a = _attr()
        struct.pack_into("=IIQ", a, 0, fd, len(info), ctypes.addressof(info))
        _libc.bpf(BPF_OBJ_GET_INFO_BY_FD, a)            # first: how long it is
        n = struct.unpack_from("=I", info, 20)[0]
        code = ctypes.create_string_buffer(n)
        info = ctypes.create_string_buffer(96)
        struct.pack_into("=I", info, 20, n)                      # xlated_prog_len
        struct.pack_into("=Q", info, 32, ctypes.addressof(code))  # xlated_prog_insns
        struct.pack_into("=IIQ", a, 0, fd, len(info), ctypes.addressof(info))
        _libc.bpf(BPF_OBJ_GET_INFO_BY_FD, a)
    finally:
        os.close(fd)
    out = []
    for off in range(0, n, 8):
        c, regs, o, imm = struct.unpack_from("<BBhi", code, off)
        out.append((c, regs & 0xF, regs >> 4, o, imm))
    return out


def prog_fd(prog_id: int) -> int:
    """An fd for a loaded program by its id (BPF_PROG_GET_FD_BY_ID); FileNotFoundError if gone."""
    a = _attr()
    struct.pack_into("=I", a, 0, prog_id)
    return _libc.bpf(BPF_PROG_GET_FD_BY_ID, a)


def exists(prog_id: int) -> bool:
    """Is a program with this id still loaded (attached somewhere, pinned or held by an fd)?"""
    try:
        fd = prog_fd(prog_id)
    except FileNotFoundError:
        return False
    os.close(fd)
    return True


def programs() -> list[int]:
    """The ids of every loaded BPF program on the machine (BPF_PROG_GET_NEXT_ID)."""
    out, nxt = [], 0
    while True:
        a = _attr()
        struct.pack_into("=I", a, 0, nxt)
        try:
            _libc.bpf(BPF_PROG_GET_NEXT_ID, a)
        except FileNotFoundError:
            return out
        nxt = struct.unpack_from("=I", a, 4)[0]
        out.append(nxt)


def named(prefix: str = "jap_") -> dict[int, str]:
    """{id: name} of the loaded programs whose name starts with ``prefix`` (the lab's)."""
    out = {}
    for i in programs():
        try:
            fd = prog_fd(i)
        except FileNotFoundError:
            continue  # went meanwhile
        try:
            _, name, _ = prog_info(fd)
        finally:
            os.close(fd)
        if name.startswith(prefix):
            out[i] = name
    return out


def program_name(cgroup_dir: str) -> str:
    """The program's name from the cgroup's lab name: ``jap-1a2b3c-web`` -> ``jap_1a2b3c_dev``
    (BPF object names allow letters, digits, '_' and '.' only, 15 characters)."""
    base = os.path.basename(cgroup_dir.rstrip("/"))
    m = re.match(r"jap-([0-9a-f]{6})", base)
    return f"jap_{m.group(1)}_dev" if m else "jap_dev"


# --- attached to a cgroup ----------------------------------------------------------------

def _open_dir(cgroup_dir: str) -> int:
    try:
        return os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BadInput(f"no cgroup directory {cgroup_dir}") from None


def _is_v2(cgroup_dir: str) -> bool:
    return os.path.exists(os.path.join(cgroup_dir, "cgroup.controllers"))


def attached(cgroup_dir: str) -> list[int]:
    """The ids of the device programs attached to this cgroup v2 directory itself."""
    fd = _open_dir(cgroup_dir)
    try:
        return _libc.cgroup_device_programs(fd)
    finally:
        os.close(fd)


def install(cgroup_dir: str, rules: Iterable[str | Rule]) -> int:
    """Load the allow-list program for ``rules`` and attach it to ``cgroup_dir``; its id.

    As runc does on an update: the new program is attached first (BPF_F_ALLOW_MULTI, so
    several may be attached at once), then the ones attached before are detached - there
    is no moment without a filter.  Our fd is closed: the attachment holds the program.
    """
    if not _is_v2(cgroup_dir):
        raise NotSupported(f"{cgroup_dir} is not a cgroup v2 directory: device programs attach "
                           "to cgroup2 only (cgroup-v2.rst 'Device controller'); on v1 the "
                           "devices controller's files do it")
    insns = program(rules)
    dfd = _open_dir(cgroup_dir)
    try:
        before = _libc.cgroup_device_programs(dfd)
        pfd = load(insns, program_name(cgroup_dir))
        try:
            a = _attr()
            struct.pack_into("=IIII", a, 0, dfd, pfd, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI)
            _libc.bpf(BPF_PROG_ATTACH, a)
            pid = prog_info(pfd)[0]
        finally:
            os.close(pfd)
        for old in before:
            _libc.cgroup_detach_device_program(dfd, old)
        return pid
    finally:
        os.close(dfd)


def detach_all(cgroup_dir: str) -> list[int]:
    """Detach every device program attached to ``cgroup_dir`` (a lab cgroup about to be
    removed); the ids of those that are still loaded after it (held elsewhere)."""
    if not _is_v2(cgroup_dir):
        return []
    try:
        dfd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    try:
        try:
            ids = _libc.cgroup_device_programs(dfd)
        except OSError as exc:
            if exc.errno == errno.EBADF:
                return []  # a folder that is no cgroup2 directory (the unit tests' fake tree)
            raise
        for i in ids:
            try:
                _libc.cgroup_detach_device_program(dfd, i)
            except FileNotFoundError:
                pass  # detached meanwhile
    finally:
        os.close(dfd)
    return [i for i in ids if exists(i)]
