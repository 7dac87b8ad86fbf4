/*
 * Records sent to user space for the consumers' tests. sys_enter_getpgid(pid) of the watched
 * process reserves a ring buffer record {pid, tgid, cpu}, and discards it when pid is a
 * multiple of 3; sys_enter_getsid(pid) outputs the same record to a perf event array.
 */
#include <bpf_helpers.h>

struct record {
    uint64_t value;
    uint32_t tgid;
    uint32_t cpu;
};

struct syscall_enter_args {
    unsigned long long common;
    long syscall_nr;
    unsigned long arg0;
};

DEFINE_BPF_MAP(watched_tgid, ARRAY, uint32_t, uint32_t, 1);
DEFINE_BPF_RINGBUF(records, struct record, 16384, AID_ROOT, AID_ROOT, 0600);
DEFINE_BPF_MAP(samples, PERF_EVENT_ARRAY, uint32_t, uint32_t, 64);

static __always_inline bool watched(uint32_t tgid) {
    uint32_t zero = 0;
    uint32_t *want = bpf_watched_tgid_lookup_elem(&zero);
    return want && *want == tgid;
}

DEFINE_BPF_PROG("tracepoint/syscalls/sys_enter_getpgid", AID_ROOT, AID_ROOT, to_ring)
(struct syscall_enter_args *args) {
    uint32_t tgid = bpf_get_current_pid_tgid() >> 32;
    if (!watched(tgid)) return 0;
    struct record *r = bpf_records_reserve();
    if (!r) return 0;
    r->value = args->arg0;
    r->tgid = tgid;
    r->cpu = bpf_get_smp_processor_id();
    if (args->arg0 % 3 == 0)
        bpf_records_discard(r);
    else
        bpf_records_submit(r);
    return 0;
}

DEFINE_BPF_PROG("tracepoint/syscalls/sys_enter_getsid", AID_ROOT, AID_ROOT, to_perf)
(struct syscall_enter_args *args) {
    uint32_t tgid = bpf_get_current_pid_tgid() >> 32;
    if (!watched(tgid)) return 0;
    struct record r = {.value = args->arg0, .tgid = tgid, .cpu = bpf_get_smp_processor_id()};
    bpf_perf_event_output(args, &samples, BPF_F_CURRENT_CPU, &r, sizeof(r));
    return 0;
}

LICENSE("GPL");
