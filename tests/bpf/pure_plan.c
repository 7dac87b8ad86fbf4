/*
 * Pure planner test: gates of every kind on maps and programs, $variants, pin_subdir and a
 * shared map. Compile with -DMANDATORY_USES_GATED to add a mandatory program that uses the
 * kernel-gated map, and with -DOVERLAP to make two clat variants pass on 5.4 <= kernel < 5.10.
 */
#include <bpf_helpers.h>

#ifdef OVERLAP
#define CLAT_5_10_MIN KVER(5, 4, 0)
#else
#define CLAT_5_10_MIN KVER(5, 10, 0)
#endif

DEFINE_BPF_MAP_KVER_UGM(new_map, ARRAY, int, int, 1, KVER(5, 10, 0), KVER(6, 1, 0), 0, 0, 0600)
DEFINE_BPF_MAP_GRO(always_map, ARRAY, int, int, 1, 1234);
DEFINE_BPF_SHARED_MAP_UGM(common_map, HASH, int, int, 8, 0, 1235, 0660);
DEFINE_BPF_MAP_EXT(subdir_map, ARRAY, int, int, 1, 0, 0, 0, 0600, "", "elsewhere", false, KVER_NONE,
                   KVER_INF, 0, 0x10000, 0)
DEFINE_BPF_MAP_EXT(not_x86_map, ARRAY, int, int, 1, 0, 0, 0, 0600, "", "", false, KVER_NONE,
                   KVER_INF, 0, 0x10000, IGNORE_ON_X86_64)
DEFINE_BPF_MAP_EXT(not_user_map, ARRAY, int, int, 1, 0, 0, 0, 0600, "", "", false, KVER_NONE,
                   KVER_INF, 0, 0x10000, IGNORE_ON_USER)
DEFINE_BPF_MAP_EXT(new_loader_map, ARRAY, int, int, 1, 0, 0, 0, 0600, "", "", false, KVER_NONE,
                   KVER_INF, 49, 0x10000, 0)

DEFINE_OPTIONAL_BPF_PROG("tracepoint/opt/uses_new", 0, 0, opt_uses_new)
(void *ctx) {
    int key = 0;
    int *v = bpf_new_map_lookup_elem(&key);
    return v ? *v : 0;
}

#ifdef MANDATORY_USES_GATED
DEFINE_BPF_PROG("tracepoint/mand/uses_new", 0, 0, mand_uses_new)
(void *ctx) {
    int key = 0;
    int *v = bpf_new_map_lookup_elem(&key);
    return v ? *v : 0;
}
#endif

DEFINE_BPF_PROG("tracepoint/always/uses_always", 0, 1234, uses_always)
(void *ctx) {
    int key = 0;
    int *v = bpf_always_map_lookup_elem(&key);
    int *c = bpf_common_map_lookup_elem(&key);
    return (v ? *v : 0) + (c ? *c : 0);
}

DEFINE_BPF_PROG_KVER_RANGE("schedcls/clat$4_14", 0, 0, clat_4_14, KVER(4, 14, 0), KVER(5, 10, 0))
(struct __sk_buff *skb) {
    return 1;
}

DEFINE_BPF_PROG_KVER_RANGE("schedcls/clat$5_10", 0, 0, clat_5_10, CLAT_5_10_MIN, KVER_INF)
(struct __sk_buff *skb) {
    return 2;
}

DEFINE_BPF_PROG_EXT("xdp/old_loader", 0, 0, old_loader, KVER_NONE, KVER_INF, 0, 48, false, "", "", 0)
(struct xdp_md *ctx) {
    return XDP_PASS;
}

DEFINE_BPF_PROG_EXT("xdp/pinned", 7, 8, pinned, KVER_NONE, KVER_INF, 0, 0x10000, false, "",
                    "prog_dir", 0)
(struct xdp_md *ctx) {
    return XDP_PASS;
}

DEFINE_BPF_PROG_EXT("skfilter/not_userdebug", 0, 0, not_userdebug, KVER_NONE, KVER_INF, 0, 0x10000,
                    false, "", "", IGNORE_ON_USERDEBUG)
(struct __sk_buff *skb) {
    return 0;
}

LICENSE("GPL");
