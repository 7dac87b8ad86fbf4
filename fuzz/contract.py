"""The object reader's contract, checked on one input, and a structure-aware ELF mutator; the
contracts of what reads what the reader took (CO-RE, externs, struct_ops, the client's layouts
of a map's BTF types) and of the other readers of untrusted bytes (the policy file, the uprobe
symbol reader).

Shared by fuzz/fuzz_reader.py (atheris, long runs) and tests/obj/test_reader_fuzz.py (a short,
deterministic run in CI), and likewise for the others. The contract of `read_object`: every
input either parses or raises ObjectFormatError whose str() is one line starting with the file
name; nothing else is raised, nothing hangs (`time_limit`), memory stays bounded
(`memory_budget`: what one input may add to the process's peak resident memory). An
ObjectFormatError made by read_object's catch-all ("malformed ELF (TypeName: ...)") is not a
violation but is reported as a finding: it means some check is missing where the bad value was
first read.
"""

from __future__ import annotations

import random
import signal
import struct
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from bpfloader.client.symbols import find_function
from bpfloader.errors import AttachError, LoaderError, ObjectFormatError
from bpfloader.obj import core, kconfig, ksyms, struct_ops
from bpfloader.obj.btf import Btf, BtfError, parse_btf
from bpfloader.obj.reader import read_object
from bpfloader.obj.relocate import relocate
from bpfloader.obj.spec import ObjectSpec

if TYPE_CHECKING:
    from bpfloader.client.layouts import Layout

PATH = "fuzz.o"
CATCH_ALL = "malformed ELF ("
MAX_LEN = 128 * 1024  # the long run's -max_len: libFuzzer cuts a longer seed there
ROOT = Path(__file__).resolve().parent.parent


class InputTimeout(BaseException):
    """Raised by the per-input alarm; a BaseException so that no `except Exception` hides it."""


class ContractViolation(AssertionError):
    pass


class OverBudget(ContractViolation):
    """An input made the reader take more memory than its budget."""


def _peak_rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


@contextmanager
def memory_budget(mib: float) -> Iterator[None]:
    """Raise OverBudget if the block raises the process's peak resident memory by more than
    `mib` MiB over what it was resident when the block began (Linux: the peak is reset by
    writing 5 to /proc/self/clear_refs). The hard cap is RLIMIT_AS, set by the caller."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    start = _peak_rss_kib()
    yield
    grew = (_peak_rss_kib() - start) / 1024
    if grew > mib:
        raise OverBudget(f"input took {grew:.1f} MiB of memory, over its budget of {mib} MiB")


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise InputTimeout once the block has used `seconds` of CPU time (the process's, user
    and system: ITIMER_PROF). CPU time, not the clock's: a reader that blows up spends CPU,
    while a process the machine leaves waiting does not (under a busy machine, a 2 s wall
    clock budget flagged inputs that take 1 ms). A block that waits without spending CPU is
    for libFuzzer's own -timeout (wall clock) to catch."""

    def expired(signum: int, frame: object) -> None:
        raise InputTimeout(f"input took more than {seconds} s of CPU time")

    previous = signal.signal(signal.SIGPROF, expired)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def where_raised(error: BaseException) -> str:
    """`TypeName at file:line (function)` of the innermost frame, and of the innermost
    bpfloader frame when that differs."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return type(error).__name__
    last = frames[-1]
    ours = [f for f in frames if "/bpfloader/" in f.filename]
    text = f"{type(error).__name__} at {_frame(last)}"
    if ours and ours[-1] is not last:
        text += f" via {_frame(ours[-1])}"
    return text


def _frame(frame: traceback.FrameSummary) -> str:
    name = frame.filename
    for marker in ("/bpfloader/",):
        if marker in name:
            name = marker.strip("/") + "/" + name.split(marker, 1)[1]
    return f"{name}:{frame.lineno} ({frame.name})"


@contextmanager
def only_refusals(what: str) -> Iterator[None]:
    """Around a call whose refusals (the one-line errors it may raise) are caught inside: any
    other exception breaks the contract, but the input's time budget, an interrupt, or a
    violation already found, which go on as they are."""
    try:
        yield
    except (InputTimeout, KeyboardInterrupt, ContractViolation):
        raise
    except BaseException as e:
        raise ContractViolation(f"{what} raised {where_raised(e)}: {e!r}") from e


def one_line(error: BaseException, what: str) -> None:
    """A refusal must be one line: ContractViolation otherwise."""
    if "\n" in str(error):
        raise ContractViolation(f"{what} is not one line: {error!r}") from error


def check(data: bytes) -> str | None:
    """Run the reader on `data`; raise ContractViolation if it breaks the contract. Returns
    a finding (where the original exception was raised) when the catch-all was needed. An
    object with CO-RE relocations is relocated too (`check_core`), its externs resolved
    (`check_kconfig`, `check_ksyms`) and its struct_ops maps laid out (`check_struct_ops`)."""
    with only_refusals("read_object"):
        try:
            spec = read_object(data, PATH)
        except ObjectFormatError as e:
            text = str(e)
            if "\n" in text or not text.startswith(PATH + ": "):
                raise ContractViolation(f"error is not one line naming the file: {text!r}") from e
            if e.reason.startswith(CATCH_ALL):
                original = e.__context__
                return where_raised(original) if original is not None else e.reason
            return None
    check_core(spec)
    check_map_layouts(spec)
    if spec.kconfig is not None:
        check_kconfig(spec.kconfig, SAMPLE_CONFIG)
    if spec.ksyms is not None:
        check_ksyms(spec, SAMPLE_KALLSYMS)
    check_struct_ops(spec)
    return None


def check_core(spec: ObjectSpec) -> None:
    """The CO-RE engine's contract on what the reader took: resolving the object's relocations
    against its own BTF as the target (every candidate search, match and value path, on the
    mutated types) and patching its programs either succeed or raise a one-line CoreError."""
    if spec.core is None:
        return
    with only_refusals("CO-RE relocation"):
        try:
            results = core.resolve(spec.core, core.TargetBtf("self", spec.core.btf))
            for program in spec.programs:
                core.apply(program.instructions, program.core_relos, results)
        except ObjectFormatError as e:
            if "\n" in str(e) or not isinstance(e, core.CoreError):
                raise ContractViolation(f"CO-RE error is not a one-line CoreError: {e!r}") from e


LAYOUT_SAMPLE_LIMIT = 1 << 16  # decode sample values of types no larger, nor decoding into more


def check_map_layouts(spec: ObjectSpec) -> None:
    """The client's contract on a map's BTF types (client/layouts.py: what BpfMap decodes a
    map's keys and values by, from the BTF the kernel keeps, the object's): laying out each
    map's key and value type succeeds or raises a one-line LoaderError; a layout decodes
    sample bytes (zeros, a pattern) and encodes what it decoded back into as many bytes, and
    zeros come back as they went (a pattern need not: a `_Bool` of 0xa5 is True, written 1)."""
    typed = [m for m in spec.maps if m.btf_key_type_id or m.btf_value_type_id]
    if spec.btf is None or not typed:
        return
    from bpfloader.client.layouts import layout
    from bpfloader.errors import LoaderError
    from bpfloader.obj.btf import parse_btf

    found: list[tuple[Layout, int]] = []
    with only_refusals("map layout"):
        try:
            btf = parse_btf(spec.btf)
            for m in typed:
                for what, type_id, size in (
                    ("key", m.btf_key_type_id, m.key_size),
                    ("value", m.btf_value_type_id, m.value_size),
                ):
                    if type_id:
                        try:
                            found.append((layout(btf, type_id, size, what), size))
                        except LoaderError as e:
                            one_line(e, "layout error")
        except LoaderError as e:  # the BTF itself (the reader took it whole)
            one_line(e, "BTF error")
    for each, size in found:
        if size <= LAYOUT_SAMPLE_LIMIT and each.items <= LAYOUT_SAMPLE_LIMIT:
            _round_trip(each, size)


def _round_trip(found: Layout, size: int) -> None:
    with only_refusals("a decoded value"):
        for sample in (bytes(size), b"\xa5" * size):
            decoded = found.unpack(sample, 0)
            out = bytearray(size)
            found.pack(decoded, out, 0, "value")
            if len(out) != size or (not any(sample) and found.unpack(bytes(out), 0) != decoded):
                raise ContractViolation(f"a decoded value does not encode back: {decoded!r}")


SAMPLE_KALLSYMS = "ffffffff81000000 T _text\nffffffff81000010 t bpfloader_fuzz [mod]\n"


def check_ksyms(spec: ObjectSpec, kallsyms: str) -> None:
    """The `__ksym` contract on what the reader took: resolving the object's externs against
    its own BTF as the kernel's (each extern finds itself: the type comparison runs on the
    mutated types) and a kallsyms text, then giving every program its externs, succeed or
    raise a one-line ObjectFormatError naming an extern."""
    assert spec.ksyms is not None
    with only_refusals("ksyms resolution"):
        try:
            wanted = {k.name for k in spec.ksyms.externs}
            addresses = ksyms.kallsyms_addresses(kallsyms, wanted)
            values = ksyms.resolve(spec.ksyms, core.TargetBtf("self", spec.ksyms.btf), addresses)
            patches = ksyms.patches(spec.ksyms, values, {})
            fds = {m.name: 0 for m in spec.maps}
            for program in spec.programs:
                relocate(program, fds, None, patches)
        except ObjectFormatError as e:
            one_line(e, "ksyms error")


VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
FAKE_PROG_FD = 3  # every program's fd in a struct_ops map's value
_kernel_btf: list[Btf | None] = []


def kernel_btf() -> Btf | None:
    """The running kernel's BTF (VMLINUX_BTF), parsed once per process; None where it cannot
    be read or parsed. The harnesses ask for it before their first input, so that no input's
    time or memory budget pays for it."""
    if not _kernel_btf:
        try:
            _kernel_btf.append(parse_btf(VMLINUX_BTF.read_bytes()))
        except (OSError, BtfError):
            _kernel_btf.append(None)
    return _kernel_btf[0]


def check_struct_ops(spec: ObjectSpec) -> None:
    """The struct_ops contract on what the reader took: laying each struct_ops map out against
    the kernel's BTF as the loader does (`kernel_btf`: the mutated object's members matched by
    name against real kernel types; the object's own BTF where the kernel's cannot be read),
    then each program's attach btf id and member (`program_attach`), then the map's value with
    FAKE_PROG_FD for every program, succeed or raise a one-line LoaderError (StructOpsError:
    what this kernel cannot take). A value made is the size of the kernel's value type, with
    the fd in each program's slot; only programs of the object get an attach id."""
    specs = {m.name: m for m in spec.maps if m.struct_ops is not None}
    if not specs:
        return
    kernel = kernel_btf()
    if kernel is None:
        if spec.btf is None:
            return
        try:
            kernel = parse_btf(spec.btf)
        except BtfError:
            return  # no BTF to lay the maps out against
    with only_refusals("struct_ops layout"):
        try:
            resolved: dict[str, struct_ops.KernelStructOps] = {}
            for name, map_spec in specs.items():
                assert map_spec.struct_ops is not None
                resolved[name] = struct_ops.resolve(name, map_spec.struct_ops, kernel)
            attach = struct_ops.program_attach(resolved, specs)
            fds = {p.name: FAKE_PROG_FD for p in spec.programs}
            values = {name: layout.value(fds) for name, layout in resolved.items()}
            value_sizes = {
                name: kernel.type(r.value_type_id).size_or_type for name, r in resolved.items()
            }
        except LoaderError as e:
            one_line(e, "struct_ops error")
            return
    fd = FAKE_PROG_FD.to_bytes(struct_ops.POINTER_SIZE, "little")
    for name, layout in resolved.items():
        value = values[name]
        if not len(value) == layout.value_size == value_sizes[name]:
            raise ContractViolation(
                f"struct_ops map '{name}': a value of {len(value)} bytes (value_size "
                f"{layout.value_size}), not the kernel's {value_sizes[name]}"
            )
        for offset, program in layout.slots:
            if value[offset : offset + len(fd)] != fd:
                raise ContractViolation(
                    f"struct_ops map '{name}': program '{program}' is not at byte {offset} of "
                    "the value"
                )
    strangers = set(attach) - {p.name for p in spec.programs}
    if strangers:
        raise ContractViolation(f"attach ids for programs not in the object: {sorted(strangers)}")


POLICY_PATH = "fuzz.policy"


def check_policy(text: bytes, spec: ObjectSpec) -> None:
    """The policy file's contract (loader/policy.py): parsing a text, then applying it to
    `spec`, succeeds or raises a one-line LoaderError; nothing else is raised."""
    from bpfloader.errors import LoaderError
    from bpfloader.loader.policy import apply_policy, parse_policy

    with only_refusals("policy file"):
        try:
            apply_policy(spec, parse_policy(text, POLICY_PATH))
        except LoaderError as e:
            one_line(e, "policy error")


# Functions of the symbol reader's seeds (tests/binary_support.py), and one none has.
SYMBOL_NAMES = ("main", "bpfloader_probed", "probe_lib", "probe_weak", "f", "absent")


def check_symbols(data: bytes, names: Sequence[str] = SYMBOL_NAMES) -> None:
    """The uprobe symbol reader's contract (client/symbols.py) on one file's bytes, for each
    of `names`: the function's offset, inside the file, or a one-line AttachError; nothing
    else is raised."""

    def read(offset: int, count: int) -> bytes:
        return data[offset : offset + count]

    for name in names:
        with only_refusals("find_function"):
            try:
                offset = find_function(read, len(data), name)
            except AttachError as e:
                one_line(e, "symbol reader error")
                continue
        if not 0 <= offset < len(data):
            raise ContractViolation(f"{name!r} at {offset}, outside the file's {len(data)} bytes")


SAMPLE_CONFIG = 'CONFIG_BPF=y\nCONFIG_HZ=250\nCONFIG_NR_CPUS=0x100\nCONFIG_LOCALVERSION="-x"\n'
FACTS = kconfig.KernelFacts(version=0x060C00, bpf_cookie=True, syscall_wrapper=True)


def check_kconfig(layout: kconfig.Kconfig, text: str) -> None:
    """The `.kconfig` contract on a config text (a mutated one, or SAMPLE_CONFIG for a
    mutated object's layout): parsing raises only ValueError; the values are the layout's
    size or a one-line ObjectFormatError naming an extern."""
    with only_refusals("parse_config"):
        try:
            config = kconfig.parse_config(text)
        except ValueError:
            return
    with only_refusals("kconfig values"):
        try:
            data = kconfig.values(layout, config, FACTS)
        except ObjectFormatError as e:
            if "\n" in str(e) or not e.reason.startswith("extern '"):
                raise ContractViolation(
                    f"kconfig error is not one line naming an extern: {e!r}"
                ) from e
            return
    if len(data) != layout.size:
        raise ContractViolation(f"kconfig values are {len(data)} bytes, not {layout.size}")


# -- mutations -------------------------------------------------------------------------------


def findings_of_mutations(
    seeds: list[bytes],
    word_mutation: Callable[[bytes, random.Random], bytes],
    count: int,
    seed: int,
    seconds: float,
) -> dict[str, int]:
    """A deterministic run of the contract on `count` inputs mutated from `seeds`, every
    other one by `word_mutation` (a word of the sections a reader walks) and the others by
    `mutate`, each within `seconds`: the catch-all findings by place (a violation raises)."""
    rng = random.Random(seed)
    findings: dict[str, int] = {}
    for i in range(count):
        base = rng.choice(seeds)
        data = word_mutation(base, rng) if i % 2 else mutate(base, rng)
        with time_limit(seconds):
            finding = check(data)
        if finding is not None:
            findings[finding] = findings.get(finding, 0) + 1
    return findings


INTERESTING = (0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF,
               0xFFFFFFFF, 0x100000000, 0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF)  # fmt: skip


def _header_fields(data: bytes, rng: random.Random) -> int | None:
    """The offset of a random field of a random section header (or of the ELF header)."""
    if len(data) < 64:
        return None
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shnum = struct.unpack_from("<H", data, 0x3C)[0]
    if rng.random() < 0.2 or not shnum or shoff + 64 * shnum > len(data):
        return rng.choice((0x18, 0x20, 0x28, 0x30, 0x34, 0x36, 0x38, 0x3A, 0x3C, 0x3E))
    return shoff + 64 * rng.randrange(shnum) + rng.choice((0, 4, 8, 16, 24, 32, 40, 44, 48, 56))


def _section_entry(data: bytes, rng: random.Random) -> int | None:
    """A random 8-byte-aligned offset inside a random section's data (symbols, relocations,
    BTF, defs live there)."""
    if len(data) < 64:
        return None
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shnum = struct.unpack_from("<H", data, 0x3C)[0]
    if not shnum or shoff + 64 * shnum > len(data):
        return None
    header = shoff + 64 * rng.randrange(shnum)
    offset, size = struct.unpack_from("<QQ", data, header + 24)
    if not size or offset + size > len(data):
        return None
    return offset + rng.randrange(0, size, 4) if size >= 4 else offset


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three mutations: bit flips, interesting integers at ELF fields, at section data
    or anywhere, truncation, deletion and duplication of chunks."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        if not out:
            out = bytearray(b"\x7fELF")
        choice = rng.randrange(8)
        if choice == 0:
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(out))
                out[i] ^= 1 << rng.randrange(8)
        elif choice in (1, 2, 3):
            at = (
                _header_fields(bytes(out), rng)
                if choice == 1
                else _section_entry(bytes(out), rng)
                if choice == 2
                else rng.randrange(len(out))
            )
            if at is None:
                at = rng.randrange(len(out))
            width = rng.choice((1, 2, 4, 8))
            value = rng.choice(INTERESTING) & ((1 << (8 * width)) - 1)
            if rng.random() < 0.3:
                value = rng.getrandbits(8 * width)
            chunk = value.to_bytes(width, "little")
            out[at : at + width] = chunk[: max(0, len(out) - at)]
        elif choice == 4:
            out = out[: rng.randrange(len(out))]
        elif choice == 5:
            i = rng.randrange(len(out))
            del out[i : i + rng.randint(1, 64)]
        elif choice == 6:
            i = rng.randrange(len(out))
            out[i:i] = out[i : i + rng.randint(1, 64)]
        else:
            i = rng.randrange(len(out))
            out[i] = rng.randrange(256)
    return bytes(out)
