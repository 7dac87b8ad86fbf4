/*
 * One counter per kind of tracing attachment, to see each fire: a tracepoint (getppid calls of
 * the watched process), a uprobe and a uretprobe (on whatever function they are attached to),
 * the cpu clock (perf_event), and a kprobe.
 */
#include <bpf_helpers.h>

enum slot { TRACEPOINT, UPROBE, URETPROBE, PERF_EVENT, KPROBE, SLOTS };

DEFINE_BPF_MAP(hits, ARRAY, uint32_t, uint64_t, SLOTS);
DEFINE_BPF_MAP(watched_tgid, ARRAY, uint32_t, uint32_t, 1);

static __always_inline void hit(uint32_t slot) {
    uint64_t *count = bpf_hits_lookup_elem(&slot);
    if (count) __sync_fetch_and_add(count, 1);
}

DEFINE_BPF_PROG("tracepoint/syscalls/sys_enter_getppid", AID_ROOT, AID_ROOT, on_getppid)
(void *ctx) {
    uint32_t zero = 0;
    uint32_t *tgid = bpf_watched_tgid_lookup_elem(&zero);
    if (tgid && *tgid == bpf_get_current_pid_tgid() >> 32) hit(TRACEPOINT);
    return 0;
}

DEFINE_BPF_PROG("uprobe/probed", AID_ROOT, AID_ROOT, on_call)(void *ctx) {
    hit(UPROBE);
    return 0;
}

DEFINE_BPF_PROG("uretprobe/probed", AID_ROOT, AID_ROOT, on_return)(void *ctx) {
    hit(URETPROBE);
    return 0;
}

DEFINE_BPF_PROG("perf_event/cpu_clock", AID_ROOT, AID_ROOT, on_tick)(void *ctx) {
    hit(PERF_EVENT);
    return 0;
}

DEFINE_BPF_PROG("kprobe/do_nanosleep", AID_ROOT, AID_ROOT, on_sleep)(void *ctx) {
    hit(KPROBE);
    return 0;
}

LICENSE("GPL");
