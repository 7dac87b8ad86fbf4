/*
 * Android's 2026 format, every def field (tests/loader/test_android_2026.py): maps in two
 * directories, one with a create_location; maps gated out by the kernel range and by the API
 * level; a socket-storage map (BTF types), a devmap (reused on a second load) and a ring
 * buffer; `$VER` variants passing in both orders, a variant gated out ahead of the one pinned,
 * an optional program the verifier refuses, a program gated by the API level, one pinned in
 * another directory. The test reads every def back from the ELF itself.
 */
#define BPFLOADER_ANDROID_2026
#define BPF_OBJ_NAME "fields"
#define DEFAULT_BPF_PIN_SUBDIR "tethering"
#include <bpf_helpers.h>

#ifndef CHANGED /* -DCHANGED=1: the same object with other code (a reload's new version) */
#define CHANGED 0
#endif

struct sk_value {
    uint64_t bytes;
};

DEFINE_BPF_MAP_GRW(counts, ARRAY, uint32_t, uint64_t, 4, 1073)
DEFINE_BPF_MAP_EXT(shared_rules, HASH, uint32_t, uint32_t, 16, 0, 0, 3003, 0640, "net_shared",
                   "net_shared", KVER_NONE, KVER_INF, BPFLOADER_API_T, BPFLOADER_API_MAX)
DEFINE_BPF_MAP_EXT(future_kernel, ARRAY, uint32_t, uint32_t, 1, 0, 0, 0, 0600, "", "tethering",
                   KVER(99, 0, 0), KVER_INF, BPFLOADER_MIN_API, BPFLOADER_MAX_API)
DEFINE_BPF_MAP_EXT(future_android, ARRAY, uint32_t, uint32_t, 1, 0, 0, 0, 0600, "", "tethering",
                   KVER_NONE, KVER_INF, BPFLOADER_API_27Q2, BPFLOADER_API_MAX)
DEFINE_BPF_SK_STORAGE(per_socket, struct sk_value, 0, 1073, 0660)
DEFINE_BPF_MAP_RO(redirect, DEVMAP, uint32_t, uint32_t, 8, 1073)
DEFINE_BPF_RINGBUF(events, uint64_t, 4096, 0, 1073, 0660)

static __always_inline int count(uint32_t key)
{
    uint64_t *value = bpf_counts_lookup_elem(&key);

    if (value)
        __sync_fetch_and_add(value, 1);
    return 0;
}

/* Two variants whose gates both pass: the first in section order is pinned. */
DEFINE_BPF_PROG(skfilter, first, 4_9, AID_ROOT, 1073)(struct __sk_buff *skb)
{
    return count(0) + CHANGED;
}
DEFINE_BPF_PROG(skfilter, first, 5_4, AID_ROOT, 1073)(struct __sk_buff *skb)
{
    return count(1);
}

/* A variant gated out ahead of the one pinned. */
DEFINE_BPF_PROG_KVER_RANGE(schedcls, prio, 4_9, AID_ROOT, 3003, KVER_NONE, KVER(4, 0, 0))
(struct __sk_buff *skb)
{
    return count(2);
}
DEFINE_BPF_PROG_KVER(schedcls, prio, 5_15, AID_ROOT, 3003, KVER(5, 15, 0))
(struct __sk_buff *skb)
{
    uint64_t seen = 1;

    bpf_events_output(&seen);
    return count(3);
}

/* Optional, and refused by the verifier (it reads past the map's value): left out. */
DEFINE_OPTIONAL_BPF_PROG(schedact, broken, 4_9, AID_ROOT, 1073)(struct __sk_buff *skb)
{
    uint32_t key = 0;
    uint64_t *value = bpf_counts_lookup_elem(&key);

    return value ? (int)value[1] : 0;
}

/* Only from 27Q2 on: gated out by the API level this loader claims. */
DEFINE_BPF_PROG_EXT(xdp, future, 5_4, AID_ROOT, 1073, KVER_NONE, KVER_INF, BPFLOADER_API_27Q2,
                    BPFLOADER_API_MAX, false, "", "tethering")
(struct xdp_md *ctx)
{
    return XDP_PASS;
}

/* Pinned in another directory, labelled through a create_location as Android does. */
DEFINE_BPF_PROG_EXT(cgroupsock, sock_create, 4_14, AID_ROOT, 3003, KVER_NONE, KVER_INF,
                    BPFLOADER_MIN_API, BPFLOADER_MAX_API, false, "net_shared", "net_shared")
(struct bpf_sock *sk)
{
    count(2);
    return 1;
}

LICENSE("GPL");
