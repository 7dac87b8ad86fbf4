"""The layouts of `union bpf_attr` members and info structs (include/uapi/linux/bpf.h).

Each command gets its own structure; the kernel zero-extends a shorter attr, so a structure
only needs the fields up to the last one used.
"""

from __future__ import annotations

import ctypes

u32 = ctypes.c_uint32
u64 = ctypes.c_uint64
OBJ_NAME_LEN = 16


class MapCreateAttr(ctypes.Structure):
    _fields_ = [
        ("map_type", u32),
        ("key_size", u32),
        ("value_size", u32),
        ("max_entries", u32),
        ("map_flags", u32),
        ("inner_map_fd", u32),
        ("numa_node", u32),
        ("map_name", ctypes.c_char * OBJ_NAME_LEN),
        ("map_ifindex", u32),
        ("btf_fd", u32),
        ("btf_key_type_id", u32),
        ("btf_value_type_id", u32),
        ("btf_vmlinux_value_type_id", u32),
        ("map_extra", u64),
    ]


class MapElemAttr(ctypes.Structure):
    _fields_ = [
        ("map_fd", u32),
        ("pad", u32),
        ("key", u64),
        ("value", u64),  # also next_key for MAP_GET_NEXT_KEY
        ("flags", u64),
    ]


class ProgLoadAttr(ctypes.Structure):
    _fields_ = [
        ("prog_type", u32),
        ("insn_cnt", u32),
        ("insns", u64),
        ("license", u64),
        ("log_level", u32),
        ("log_size", u32),
        ("log_buf", u64),
        ("kern_version", u32),
        ("prog_flags", u32),
        ("prog_name", ctypes.c_char * OBJ_NAME_LEN),
        ("prog_ifindex", u32),
        ("expected_attach_type", u32),
        ("prog_btf_fd", u32),
        ("func_info_rec_size", u32),
        ("func_info", u64),
        ("func_info_cnt", u32),
        ("line_info_rec_size", u32),
        ("line_info", u64),
        ("line_info_cnt", u32),
        ("attach_btf_id", u32),
        ("attach_prog_fd", u32),
        ("core_relo_cnt", u32),
        ("fd_array", u64),
        ("core_relos", u64),
        ("core_relo_rec_size", u32),
        ("log_true_size", u32),  # written back by kernels >= 6.4
    ]


class BtfLoadAttr(ctypes.Structure):
    _fields_ = [
        ("btf", u64),
        ("btf_log_buf", u64),
        ("btf_size", u32),
        ("btf_log_size", u32),
        ("btf_log_level", u32),
        ("btf_log_true_size", u32),  # written back by kernels >= 6.4
    ]


class ProgBindMapAttr(ctypes.Structure):
    _fields_ = [("prog_fd", u32), ("map_fd", u32), ("flags", u32)]


class ProgTestRunAttr(ctypes.Structure):
    """BPF_PROG_TEST_RUN up to `batch_size`. The kernel writes back retval, duration (the mean
    ns per run), data_size_out and ctx_size_out: the full sizes, even when it answers ENOSPC."""

    _fields_ = [
        ("prog_fd", u32),
        ("retval", u32),
        ("data_size_in", u32),
        ("data_size_out", u32),
        ("data_in", u64),
        ("data_out", u64),
        ("repeat", u32),
        ("duration", u32),
        ("ctx_size_in", u32),
        ("ctx_size_out", u32),
        ("ctx_in", u64),
        ("ctx_out", u64),
        ("flags", u32),
        ("cpu", u32),
        ("batch_size", u32),
    ]


class ObjAttr(ctypes.Structure):
    """BPF_OBJ_PIN and BPF_OBJ_GET."""

    _fields_ = [
        ("pathname", u64),
        ("bpf_fd", u32),
        ("file_flags", u32),
    ]


class InfoAttr(ctypes.Structure):
    _fields_ = [
        ("bpf_fd", u32),
        ("info_len", u32),
        ("info", u64),
    ]


class GetIdAttr(ctypes.Structure):
    """BPF_*_GET_NEXT_ID (`id` the one to start after) and BPF_*_GET_FD_BY_ID (`id`)."""

    _fields_ = [
        ("id", u32),
        ("next_id", u32),
        ("open_flags", u32),
    ]


class BtfInfoStruct(ctypes.Structure):
    _fields_ = [
        ("btf", u64),
        ("btf_size", u32),
        ("id", u32),
        ("name", u64),
        ("name_len", u32),
        ("kernel_btf", u32),
    ]


class MapInfoStruct(ctypes.Structure):
    _fields_ = [
        ("type", u32),
        ("id", u32),
        ("key_size", u32),
        ("value_size", u32),
        ("max_entries", u32),
        ("map_flags", u32),
        ("name", ctypes.c_char * OBJ_NAME_LEN),
        ("ifindex", u32),
        ("btf_vmlinux_value_type_id", u32),
        ("netns_dev", u64),
        ("netns_ino", u64),
        ("btf_id", u32),
        ("btf_key_type_id", u32),
        ("btf_value_type_id", u32),
        ("btf_vmlinux_id", u32),
        ("map_extra", u64),
    ]


class ProgInfoStruct(ctypes.Structure):
    _fields_ = [
        ("type", u32),
        ("id", u32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", u32),
        ("xlated_prog_len", u32),
        ("jited_prog_insns", u64),
        ("xlated_prog_insns", u64),
        ("load_time", u64),
        ("created_by_uid", u32),
        ("nr_map_ids", u32),
        ("map_ids", u64),
        ("name", ctypes.c_char * OBJ_NAME_LEN),
        ("ifindex", u32),
        ("gpl_compatible", u32),
        ("netns_dev", u64),
        ("netns_ino", u64),
        ("nr_jited_ksyms", u32),
        ("nr_jited_func_lens", u32),
        ("jited_ksyms", u64),
        ("jited_func_lens", u64),
        ("btf_id", u32),
        ("func_info_rec_size", u32),
        ("func_info", u64),
        ("nr_func_info", u32),
        ("nr_line_info", u32),
        ("line_info", u64),
        ("jited_line_info", u64),
        ("nr_jited_line_info", u32),
        ("line_info_rec_size", u32),
        ("jited_line_info_rec_size", u32),
        ("nr_prog_tags", u32),
        ("prog_tags", u64),
        ("run_time_ns", u64),
        ("run_cnt", u64),
        ("recursion_misses", u64),
        ("verified_insns", u32),
        ("attach_btf_obj_id", u32),
        ("attach_btf_id", u32),
    ]


class PerfEventAttr(ctypes.Structure):
    """struct perf_event_attr up to PERF_ATTR_SIZE_VER5 (112 bytes)."""

    _fields_ = [
        ("type", u32),
        ("size", u32),
        ("config", u64),
        ("sample_period", u64),
        ("sample_type", u64),
        ("read_format", u64),
        ("flags", u64),  # the bitfield: bit 0 disabled, ...
        ("wakeup_events", u32),
        ("bp_type", u32),
        ("config1", u64),
        ("config2", u64),
        ("branch_sample_type", u64),
        ("sample_regs_user", u64),
        ("sample_stack_user", u32),
        ("clockid", ctypes.c_int32),
        ("sample_regs_intr", u64),
        ("aux_watermark", u32),
        ("sample_max_stack", ctypes.c_uint16),
        ("reserved_2", ctypes.c_uint16),
    ]


class BatchAttr(ctypes.Structure):
    """BPF_MAP_LOOKUP_BATCH (and the other *_BATCH commands)."""

    _fields_ = [
        ("in_batch", u64),
        ("out_batch", u64),
        ("keys", u64),
        ("values", u64),
        ("count", u32),
        ("map_fd", u32),
        ("elem_flags", u64),
        ("flags", u64),
    ]


class ProgAttachAttr(ctypes.Structure):
    """BPF_PROG_ATTACH and BPF_PROG_DETACH: the attachments that predate links."""

    _fields_ = [
        ("target_fd", u32),
        ("attach_bpf_fd", u32),
        ("attach_type", u32),
        ("attach_flags", u32),
    ]


class LinkCreateAttr(ctypes.Structure):
    """BPF_LINK_CREATE up to `flags`: the per-type union after it stays zero (no cookie)."""

    _fields_ = [
        ("prog_fd", u32),
        ("target", u32),  # a target fd (cgroup, perf event) or an ifindex (XDP)
        ("attach_type", u32),
        ("flags", u32),
    ]


class RawTracepointAttr(ctypes.Structure):
    """BPF_RAW_TRACEPOINT_OPEN."""

    _fields_ = [("name", u64), ("prog_fd", u32)]


class LinkUpdateAttr(ctypes.Structure):
    """BPF_LINK_UPDATE: `old_prog_fd` with BPF_F_REPLACE, for the update to fail where the
    link runs another program by then."""

    _fields_ = [("link_fd", u32), ("new_prog_fd", u32), ("flags", u32), ("old_prog_fd", u32)]


class LinkDetachAttr(ctypes.Structure):
    _fields_ = [("link_fd", u32)]


class LinkInfoStruct(ctypes.Structure):
    """struct bpf_link_info: the common head, then the per-type union (kept as bytes)."""

    _fields_ = [
        ("type", u32),
        ("id", u32),
        ("prog_id", u32),
        ("pad", u32),
        ("details", ctypes.c_uint8 * 64),
    ]


assert ctypes.sizeof(ProgLoadAttr) == 144
assert ctypes.sizeof(ProgInfoStruct) == 232
assert ctypes.sizeof(PerfEventAttr) == 112
assert ctypes.sizeof(ProgTestRunAttr) == 80
