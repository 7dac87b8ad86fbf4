"""How a refusal of BPF_PROG_LOAD is said (errors.verifier_refusal): where the verifier stopped
and why, not `EACCES (Permission denied)` (issue 20). The logs are the kernel's own words, as
the kernel tests (tests/loader/test_bad_input.py, test_check.py) get them from a real
verifier; here each form of log is checked on its own, old kernels' included."""

from __future__ import annotations

import errno

from bpfloader.errors import VerifierError, verifier_refusal

# A log of a kernel since 5.19, with the object's line info (BTF): `; SOURCE @ FILE:LINE`.
WITH_LINES = """\
0: R1=ctx() R10=fp0
; int key = 0; @ prog.c:5
1: (63) *(u32 *)(r10 -4) = r1         ; R1=0 R10=fp0 fp-8=0000????
6: (85) call bpf_map_lookup_elem#1    ; R0=map_value_or_null(id=1,map=m,ks=4,vs=8)
; return *v; @ prog.c:7
7: (79) r1 = *(u64 *)(r0 +0)
R0 invalid mem access 'map_value_or_null'
processed 7 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0
"""


def test_the_source_line_and_the_reason():
    assert verifier_refusal(errno.EACCES, WITH_LINES) == (
        "rejected by the verifier at prog.c:7 (`return *v;`): "
        "R0 invalid mem access 'map_value_or_null'"
    )
    error = VerifierError(errno.EACCES, WITH_LINES.encode())
    assert error.reason == verifier_refusal(errno.EACCES, WITH_LINES)
    assert "Permission denied" not in str(error)
    assert (error.errno, error.operation) == (errno.EACCES, "BPF_PROG_LOAD")  # kept for the journal


def test_a_kernel_before_5_19_gives_the_line_without_its_place():
    old = WITH_LINES.replace(" @ prog.c:7", "").replace(" @ prog.c:5", "")
    assert verifier_refusal(errno.EACCES, old) == (
        "rejected by the verifier at `return *v;`: R0 invalid mem access 'map_value_or_null'"
    )


def test_without_btf_the_instruction():
    bare = "\n".join(line for line in WITH_LINES.splitlines() if not line.startswith("; "))
    assert verifier_refusal(errno.EACCES, bare) == (
        "rejected by the verifier at instruction 7 (`r1 = *(u64 *)(r0 +0)`; no BTF: no C line): "
        "R0 invalid mem access 'map_value_or_null'"
    )


def test_two_last_words_and_einval_after_instructions():
    log = WITH_LINES.replace(
        "R0 invalid mem access 'map_value_or_null'",
        "invalid access to map value, value_size=4 off=4 size=4\n"
        "R0 min value is outside of the allowed memory range",
    )
    assert verifier_refusal(errno.EINVAL, log) == (
        "rejected by the verifier at prog.c:7 (`return *v;`): invalid access to map value, "
        "value_size=4 off=4 size=4 | R0 min value is outside of the allowed memory range"
    )


def test_other_refusals_keep_their_errno():
    """EPERM is a privilege missing; EINVAL before any instruction, an attribute refused: not
    the verifier's judgement of the code."""
    assert verifier_refusal(errno.EPERM, "") == ""
    assert verifier_refusal(errno.EINVAL, "unknown opcode 8d\n") == ""
    error = VerifierError(errno.EPERM, b"")
    assert error.reason == "BPF_PROG_LOAD failed: EPERM (Operation not permitted)"
    error = VerifierError(errno.EINVAL, b"invalid attach type\n")
    assert error.reason == "BPF_PROG_LOAD failed: EINVAL (Invalid argument): invalid attach type"


def test_a_refusal_before_any_instruction():
    assert verifier_refusal(errno.EACCES, "R1 type=ctx expected=fp\n") == (
        "rejected by the verifier: R1 type=ctx expected=fp"
    )
