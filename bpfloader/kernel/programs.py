"""Programs in the kernel: load (with the verifier log only when it is needed), describe, and
run on given input (BPF_PROG_TEST_RUN)."""

from __future__ import annotations

import ctypes
import errno
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bpfloader.errors import KernelError, VerifierError
from bpfloader.kernel.attrs import (
    InfoAttr,
    ProgBindMapAttr,
    ProgInfoStruct,
    ProgLoadAttr,
    ProgTestRunAttr,
)
from bpfloader.kernel.maps import kernel_name
from bpfloader.kernel.syscall import Cmd, bpf
from bpfloader.obj.bpftypes import ProgType

FUNC_INFO = struct.Struct("<II")  # struct bpf_func_info: insn_off, type_id
LINE_INFO = struct.Struct("<IIII")  # struct bpf_line_info: insn_off, file, line, line_col
LOG_FIRST_SIZE = 256 * 1024
LOG_MAX_SIZE = 128 * 1024 * 1024
EAGAIN_RETRIES = 5
# A test run's first output buffer is the input plus this: room for an XDP program to grow the
# packet (bpf_xdp_adjust_head, bpf_xdp_adjust_tail) without a second run.
TEST_RUN_HEADROOM = 4096
# And its first context buffer: more than any context the kernel writes back (__sk_buff: 192).
TEST_RUN_CTX_SIZE = 256
U32_MAX = 0xFFFFFFFF

if TYPE_CHECKING:
    from bpfloader.obj.spec import FuncInfo, LineInfo


@dataclass(frozen=True)
class ProgramInfo:
    """What the kernel says of a program (BPF_OBJ_GET_INFO_BY_FD).

    `type` is its ProgType (a bare int only for a type newer than this package); `name` the
    kernel's (at most 15 characters of the function's); `tag` its instructions' hash, as
    bpftool shows it; `verified_insns` what the verifier went through (0 before Linux 5.16).
    `xlated_size` and `jited_size` are the bytes of its instructions as the kernel rewrote
    them and of its machine code: None where the kernel does not tell this process (it shows
    them only to CAP_BPF or CAP_SYS_ADMIN), and `jited_size` None too for a program the JIT
    did not compile (bpf_jit_enable 0: the interpreter runs it)."""

    id: int
    type: ProgType | int
    name: str
    tag: str
    verified_insns: int
    jited_size: int | None
    xlated_size: int | None


@dataclass(frozen=True)
class TestRun:
    """What one BPF_PROG_TEST_RUN answered.

    `retval` is the program's return value (of the last run when repeated), `data` the packet
    as the program left it, `duration_ns` the mean time of one run as the kernel measured it,
    `ctx` the context as the program left it (None when no context was given)."""

    __test__ = False  # not a test class, whatever pytest makes of the name

    retval: int
    data: bytes
    duration_ns: int
    ctx: bytes | None = None


@dataclass(frozen=True)
class LoadedProgram:
    fd: int
    load_seconds: float  # time spent inside BPF_PROG_LOAD, all attempts


def load_program(
    *,
    name: str,
    prog_type: int,
    expected_attach_type: int,
    instructions: bytes,
    license: str,
    kern_version: int,
    btf_fd: int = 0,
    func_info: Sequence[FuncInfo] = (),
    line_info: Sequence[LineInfo] = (),
    attach_btf_id: int = 0,
    prog_flags: int = 0,
    fd_array: Sequence[int] = (),
) -> LoadedProgram:
    """Load once with the log off; if the verifier refuses, load again to get its log.
    `fd_array`: the fds that instructions name by index (the BTF of a kfunc's module).

    The log costs verifier time and memory, so the happy path goes without it; a refusal is
    repeated with log level 1 and a buffer that grows until the whole log fits (up to
    LOG_MAX_SIZE; past it the kernel keeps the log's tail and VerifierError says truncated).
    """
    insns = ctypes.create_string_buffer(instructions, len(instructions))
    license_buf = ctypes.create_string_buffer(license.encode())
    attr = ProgLoadAttr(
        prog_type=prog_type,
        insn_cnt=len(instructions) // 8,
        insns=ctypes.addressof(insns),
        license=ctypes.addressof(license_buf),
        kern_version=kern_version,
        prog_name=kernel_name(name),
        expected_attach_type=expected_attach_type,
        prog_flags=prog_flags,
        attach_btf_id=attach_btf_id,
    )
    fds = (ctypes.c_int * len(fd_array))(*fd_array)
    if fd_array:
        attr.fd_array = ctypes.addressof(fds)
    # With the object's BTF: the type of each function and the source line of instructions,
    # which the verifier quotes in its log.
    funcs = b"".join(FUNC_INFO.pack(f.insn, f.type_id) for f in func_info)
    lines = b"".join(
        LINE_INFO.pack(x.insn, x.file_name_off, x.line_off, x.line_col) for x in line_info
    )
    func_buf = ctypes.create_string_buffer(funcs, len(funcs))
    line_buf = ctypes.create_string_buffer(lines, len(lines))
    if btf_fd:
        attr.prog_btf_fd = btf_fd
        if func_info:
            attr.func_info_rec_size, attr.func_info_cnt = FUNC_INFO.size, len(func_info)
            attr.func_info = ctypes.addressof(func_buf)
        if line_info:
            attr.line_info_rec_size, attr.line_info_cnt = LINE_INFO.size, len(line_info)
            attr.line_info = ctypes.addressof(line_buf)
    clock = _Stopwatch()
    try:
        return LoadedProgram(_load(attr, clock), clock.total)
    except KernelError:
        pass
    log_size = LOG_FIRST_SIZE
    while True:
        log = ctypes.create_string_buffer(log_size)
        attr.log_level, attr.log_size, attr.log_buf = 1, log_size, ctypes.addressof(log)
        attr.log_true_size = 0
        try:
            fd = _load(attr, clock)
        except KernelError as e:
            if e.errno == errno.ENOSPC and log_size < LOG_MAX_SIZE:
                # Kernels >= 6.4 say exactly how much is needed; older ones only that it's more.
                needed = attr.log_true_size if attr.log_true_size > log_size else log_size * 4
                log_size = min(LOG_MAX_SIZE, needed)
                continue
            raise VerifierError(e.errno, log.value, truncated=e.errno == errno.ENOSPC) from e
        return LoadedProgram(fd, clock.total)


class _Stopwatch:
    def __init__(self) -> None:
        self.total = 0.0


def _load(attr: ProgLoadAttr, clock: _Stopwatch) -> int:
    """BPF_PROG_LOAD, retried on EAGAIN as the kernel asks; time spent goes to `clock`."""
    for attempt in range(EAGAIN_RETRIES + 1):
        start = time.perf_counter()
        try:
            return bpf(Cmd.PROG_LOAD, attr)
        except KernelError as e:
            if e.errno != errno.EAGAIN or attempt == EAGAIN_RETRIES:
                raise
        finally:
            clock.total += time.perf_counter() - start
    raise AssertionError("unreachable")


def program_info(fd: int) -> ProgramInfo:
    info = ProgInfoStruct()
    attr = InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    bpf(Cmd.OBJ_GET_INFO_BY_FD, attr, operation="BPF_OBJ_GET_INFO_BY_FD (program)")
    # A loaded program has instructions: 0 of them is the kernel keeping the sizes to itself.
    shown = info.xlated_prog_len > 0
    return ProgramInfo(
        id=info.id,
        type=prog_type(info.type),
        name=info.name.decode(errors="replace"),
        tag=bytes(info.tag).hex(),
        verified_insns=info.verified_insns,
        jited_size=info.jited_prog_len if shown and info.jited_prog_len else None,
        xlated_size=info.xlated_prog_len if shown else None,
    )


def prog_type(number: int) -> ProgType | int:
    """The ProgType of `number`; the number itself for a type this package does not know."""
    try:
        return ProgType(number)
    except ValueError:
        return number


def program_map_ids(fd: int) -> list[int]:
    """The ids of the maps the program holds (its code's, and those bound to it): asked twice,
    for their number, then for the ids."""
    info = ProgInfoStruct()
    attr = InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    bpf(Cmd.OBJ_GET_INFO_BY_FD, attr, operation="BPF_OBJ_GET_INFO_BY_FD (program)")
    count = info.nr_map_ids
    if not count:
        return []
    ids = (ctypes.c_uint32 * count)()
    info = ProgInfoStruct(nr_map_ids=count, map_ids=ctypes.addressof(ids))
    attr = InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    bpf(Cmd.OBJ_GET_INFO_BY_FD, attr, operation="BPF_OBJ_GET_INFO_BY_FD (program)")
    return list(ids[: min(count, info.nr_map_ids)])  # a map it holds can only come, not go


def bind_map(prog_fd: int, map_fd: int) -> None:
    """Make the program hold a map its code does not name (BPF_PROG_BIND_MAP, Linux 5.10)."""
    bpf(Cmd.PROG_BIND_MAP, ProgBindMapAttr(prog_fd=prog_fd, map_fd=map_fd))


def test_run(prog_fd: int, data: bytes, *, repeat: int = 1, ctx: bytes | None = None) -> TestRun:
    """Run the program `repeat` times on `data` (and on the context `ctx`, e.g. the first bytes
    of a struct __sk_buff or xdp_md), without attaching it: BPF_PROG_TEST_RUN. The runs share
    one packet: each starts from the packet as the run before left it.

    The output buffers start at the input's size plus room to grow; if the program's output
    is larger, the kernel answers ENOSPC with the size it needs, and the run is made again
    with buffers that large (so the program runs again: its effects on maps happen again).
    KernelError otherwise: ENOTSUPP (524) for a program type the kernel cannot test-run, EINVAL
    for input it refuses (a packet shorter than an Ethernet header, a context with fields it
    does not let a test set)."""
    if not 1 <= repeat <= U32_MAX:
        raise ValueError(f"repeat must be from 1 to {U32_MAX}, not {repeat}")
    if len(data) > U32_MAX or (ctx is not None and len(ctx) > U32_MAX):
        raise ValueError("test run input larger than 4 GiB")
    data_in = ctypes.create_string_buffer(bytes(data), len(data))
    ctx_in = ctypes.create_string_buffer(bytes(ctx or b""), len(ctx or b""))
    data_size = min(len(data) + TEST_RUN_HEADROOM, U32_MAX)
    ctx_size = max(len(ctx), TEST_RUN_CTX_SIZE) if ctx is not None else 0
    while True:
        data_out = ctypes.create_string_buffer(data_size)
        ctx_out = ctypes.create_string_buffer(ctx_size)
        attr = ProgTestRunAttr(
            prog_fd=prog_fd,
            data_size_in=len(data),
            data_size_out=data_size,  # never 0: that would let the kernel write any length
            data_in=ctypes.addressof(data_in),
            data_out=ctypes.addressof(data_out),
            repeat=repeat,
        )
        if ctx is not None:
            attr.ctx_size_in, attr.ctx_in = len(ctx), ctypes.addressof(ctx_in)
            attr.ctx_size_out, attr.ctx_out = ctx_size, ctypes.addressof(ctx_out)
        try:
            bpf(Cmd.PROG_TEST_RUN, attr, operation="BPF_PROG_TEST_RUN")
        except KernelError as e:
            # ENOSPC comes with the full sizes written back: data's, or (the data fitting)
            # the context's. Anything else, or an ENOSPC that asks for no more, is final.
            if e.errno != errno.ENOSPC:
                raise
            if attr.data_size_out > data_size:
                data_size = attr.data_size_out
            elif ctx is not None and attr.ctx_size_out > ctx_size:
                ctx_size = attr.ctx_size_out
            else:
                raise
            continue
        return TestRun(
            retval=attr.retval,
            data=data_out.raw[: attr.data_size_out],
            duration_ns=attr.duration,
            ctx=ctx_out.raw[: attr.ctx_size_out] if ctx is not None else None,
        )


def program_fd_by_id(prog_id: int) -> int:
    """An fd of the program with id `prog_id` (BPF_PROG_GET_FD_BY_ID; root's)."""
    from bpfloader.kernel.attrs import GetIdAttr

    return bpf(Cmd.PROG_GET_FD_BY_ID, GetIdAttr(id=prog_id), operation="BPF_PROG_GET_FD_BY_ID")
