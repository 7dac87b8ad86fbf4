"""Where a function starts in an ELF file: what a uprobe needs (an offset in the file)."""

from __future__ import annotations

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from bpfloader.errors import AttachError

FUNCTION_TYPES = ("STT_FUNC", "STT_GNU_IFUNC")


def function_offset(binary: str, symbol: str) -> int:
    """The file offset of function `symbol` of `binary` (from .symtab, else .dynsym): its
    address, moved from the loadable segment that holds it to where that segment is in the
    file."""
    try:
        with open(binary, "rb") as f:
            elf = ELFFile(f)
            address = _function_address(elf, symbol)
            if address is None:
                raise AttachError(f"no function {symbol!r} in its symbol tables", file=binary)
            for segment in elf.iter_segments():
                header = segment.header
                start = header["p_vaddr"]
                if header["p_type"] == "PT_LOAD" and start <= address < start + header["p_filesz"]:
                    return int(address - start + header["p_offset"])
    except OSError as e:
        raise AttachError(f"cannot read it: {e.strerror}", file=binary) from e
    except ELFError as e:
        raise AttachError(f"not an ELF file: {e}", file=binary) from e
    raise AttachError(f"function {symbol!r} is in no loadable segment", file=binary)


def _function_address(elf: ELFFile, symbol: str) -> int | None:
    for table_name in (".symtab", ".dynsym"):
        table = elf.get_section_by_name(table_name)
        if table is None or not hasattr(table, "get_symbol_by_name"):
            continue
        for sym in table.get_symbol_by_name(symbol) or ():
            if sym["st_info"]["type"] in FUNCTION_TYPES and sym["st_shndx"] != "SHN_UNDEF":
                return int(sym["st_value"])
    return None
