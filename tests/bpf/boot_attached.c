/*
 * The boot test's declared attachments (boot_attached.policy beside it in the guest's
 * /etc/bpf): a tracepoint program attached by the loader at boot ("auto"), a cgroup program
 * attached to system.slice's egress, and one that systemd attaches itself to a unit's egress
 * (BPFProgram= in bpfloader-boot-bpfprogram.service). Each counts in its own slot.
 */
#include <bpf_helpers.h>

DEFINE_BPF_MAP_GRO(attached_counts, ARRAY, uint32_t, uint64_t, 3, 4 /* adm may read */);

static __always_inline void count(uint32_t key) {
    uint64_t *value = bpf_attached_counts_lookup_elem(&key);
    if (value) __sync_fetch_and_add(value, 1);
}

DEFINE_BPF_PROG("tracepoint/sched/sched_switch", AID_ROOT, 4, count_switches)(void *ctx) {
    count(0);
    return 0;
}

DEFINE_BPF_PROG("cgroupskb/system_egress", AID_ROOT, 4, count_system_egress)(struct __sk_buff *skb) {
    count(1);
    return 1;
}

DEFINE_BPF_PROG("cgroupskb/unit_egress", AID_ROOT, 4, count_unit_egress)(struct __sk_buff *skb) {
    count(2);
    return 1;
}

LICENSE("GPL");
