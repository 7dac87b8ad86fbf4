/*
 * CO-RE relocations of every kind clang 14 emits, in every program type the tests load:
 * compiled against a vmlinux.h generated from the running kernel (tests/loader/
 * test_core_differential.py), loaded by bpftool (libbpf) and bpfloader, compared.
 *
 * `___flavor` structs and enums stand for another kernel's layout: fields and enumerators
 * this kernel lacks are only reached behind bpf_core_*_exists guards (their relocations are
 * poisoned, and the verifier drops the dead code).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 32);
    __type(key, __u32);
    __type(value, __u64);
} out SEC(".maps");

static __always_inline void put(__u32 key, __u64 value)
{
    bpf_map_update_elem(&out, &key, &value, BPF_ANY);
}

/* task_struct as a kernel that renamed a field would have it: `pid` is there, the other not. */
struct task_struct___other {
    pid_t pid;
    int no_such_field_in_this_kernel;
} __attribute__((preserve_access_index));

/* A type no kernel has. */
struct bpfloader_missing_type___x {
    int a;
};

/* An enum whose enumerator this kernel lacks (and one it has, under a flavored enum). */
enum bpf_map_type___other {
    BPF_MAP_TYPE_RINGBUF___other = 27,
    BPF_MAP_TYPE_NO_SUCH_TYPE___other = 9999,
};

/* Kinds that need no pointer: type and enum relocations (ALU immediates and ld_imm64). */
static __always_inline void types_and_enums(__u32 base)
{
    put(base + 0, bpf_core_type_exists(struct task_struct));
    put(base + 1, bpf_core_type_exists(struct bpfloader_missing_type___x));
    put(base + 2, bpf_core_type_size(struct task_struct));
    put(base + 3, bpf_core_type_id_kernel(struct task_struct));
    put(base + 4, bpf_core_type_id_local(struct task_struct___other));
    put(base + 5, bpf_core_enum_value_exists(enum bpf_map_type, BPF_MAP_TYPE_RINGBUF));
    put(base + 6, bpf_core_enum_value(enum bpf_map_type, BPF_MAP_TYPE_RINGBUF));
    put(base + 7, bpf_core_enum_value_exists(enum bpf_map_type___other,
                                             BPF_MAP_TYPE_NO_SUCH_TYPE___other));
    put(base + 8, bpf_core_enum_value(enum bpf_map_type___other, BPF_MAP_TYPE_RINGBUF___other));
    if (bpf_core_enum_value_exists(enum bpf_map_type___other, BPF_MAP_TYPE_NO_SUCH_TYPE___other))
        put(base + 9, bpf_core_enum_value(enum bpf_map_type___other,
                                          BPF_MAP_TYPE_NO_SUCH_TYPE___other));
    put(base + 10, bpf_core_type_size(struct bpfloader_missing_type___x));
}

/* Field relocations through pointers (bpf_probe_read_kernel): offsets, chains, bitfields,
 * sizes, signedness, existence guarded and not. */
static __always_inline void task_fields(struct task_struct *task)
{
    struct task_struct___other *other = (void *)task;

    put(11, BPF_CORE_READ(task, pid));
    put(12, BPF_CORE_READ(task, real_parent, tgid));
    put(13, BPF_CORE_READ(task, nsproxy, pid_ns_for_children, level));
    put(14, bpf_core_field_size(task->comm));
    put(15, bpf_core_field_exists(task->pid));
    put(16, bpf_core_field_exists(other->no_such_field_in_this_kernel));
    if (bpf_core_field_exists(other->no_such_field_in_this_kernel))
        put(17, BPF_CORE_READ(other, no_such_field_in_this_kernel));
    put(18, BPF_CORE_READ(other, pid));
    put(19, BPF_CORE_READ_BITFIELD_PROBED(task, in_execve));
    put(20, BPF_CORE_READ_BITFIELD_PROBED(task, sched_reset_on_fork));
    put(21, __builtin_preserve_field_info(task->pid, BPF_FIELD_SIGNED));
    put(22, __builtin_preserve_field_info(task->flags, BPF_FIELD_SIGNED));
    put(23, bpf_core_field_offset(task->tgid));
    put(24, BPF_CORE_READ(task, cpus_ptr, bits[0]));
}

SEC("tracepoint/syscalls/sys_enter_getpid")
int core_tracepoint(struct trace_event_raw_sys_enter *ctx)
{
    task_fields((struct task_struct *)bpf_get_current_task());
    put(25, ctx->id);
    types_and_enums(0);
    return 0;
}

SEC("raw_tracepoint/sched_switch")
int core_raw_tracepoint(struct bpf_raw_tracepoint_args *ctx)
{
    struct task_struct *next = (struct task_struct *)ctx->args[2];

    put(26, BPF_CORE_READ(next, pid));
    task_fields(next);
    return 0;
}

SEC("kprobe/do_nanosleep")
int BPF_KPROBE(core_kprobe, struct hrtimer_sleeper *t)
{
    put(27, BPF_CORE_READ(t, timer.state));
    task_fields((struct task_struct *)bpf_get_current_task());
    types_and_enums(0);
    return 0;
}

SEC("socket")
int core_socket(struct __sk_buff *skb)
{
    types_and_enums(0);
    return skb->len + bpf_core_field_exists(skb->hwtstamp);
}

SEC("tc")
int core_tc(struct __sk_buff *skb)
{
    put(28, skb->protocol + skb->ifindex);
    put(29, bpf_core_field_size(skb->cb[1]));
    types_and_enums(0);
    return 0;
}

SEC("xdp")
int core_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;

    put(30, data_end - data);
    put(31, bpf_core_field_offset(struct xdp_md, rx_queue_index));
    types_and_enums(0);
    return XDP_PASS;
}
