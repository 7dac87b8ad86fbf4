/*
 * Pure reader test: every field of the current (120-byte map, 92-byte program) defs, every
 * map and program macro of bpf_helpers.h, $variant sections, a program without a def,
 * CRITICAL and a non-default LICENSE.
 *
 * first_map is declared first (offset 0 of "maps") but referenced by no program, so clang
 * lists its symbol after the referenced ones: pairing symbols with defs by order of
 * appearance would misname every map.
 */
#include <bpf_helpers.h>

DEFINE_BPF_MAP_EXT(first_map, HASH, uint32_t, uint64_t, 17, BPF_F_NO_PREALLOC, 1001, 1002, 0640,
                   "fs_bpf_pure_ctx", "pure_subdir", true, KVER(4, 19, 0), KVER(6, 99, 7), 3, 77,
                   IGNORE_ON_X86_64 | IGNORE_ON_USER)
DEFINE_BPF_MAP(plain_map, ARRAY, int, uint32_t, 8);
DEFINE_BPF_MAP_RO(ro_map, ARRAY, int, uint64_t, 4, 2001);
DEFINE_BPF_MAP_GWO(gwo_map, HASH, uint64_t, uint32_t, 5, 2002);
DEFINE_BPF_MAP_GRO(gro_map, PERCPU_ARRAY, int, uint16_t, 6, 2003);
DEFINE_BPF_MAP_GRW(grw_map, LRU_HASH, uint16_t, uint64_t, 7, 2004);
DEFINE_BPF_MAP_UGM(ugm_map, PERCPU_HASH, uint32_t, uint32_t, 9, 3001, 3002, 0604);
DEFINE_BPF_SHARED_MAP_UGM(shared_map, HASH, uint64_t, uint64_t, 64, 3003, 3004, 0660);
DEFINE_BPF_MAP_KVER_UGM(kver_map, ARRAY, int, int, 2, KVER(5, 10, 0), KVER(6, 1, 0), 0, 3005, 0600);

DEFINE_BPF_PROG_EXT("schedcls/every_field", 4001, 4002, every_prog, KVER(5, 4, 0), KVER(6, 30, 0),
                    5, 90, true, "fs_bpf_prog_ctx", "prog_subdir", IGNORE_ON_AARCH64 | IGNORE_ON_ENG)
(struct __sk_buff *skb) {
    int key = 0;
    uint32_t *plain = bpf_plain_map_lookup_elem(&key);
    if (plain) return *plain;
    uint64_t *ro = bpf_ro_map_lookup_elem(&key);
    if (ro) return *ro;
    uint32_t u = 1;
    uint32_t *ugm = bpf_ugm_map_lookup_elem(&u);
    return ugm ? *ugm : 0;
}

DEFINE_BPF_PROG("tracepoint/sched/sched_switch", 0, 5005, plain_prog)
(void *ctx) {
    uint64_t k = 7, v = 8;
    bpf_shared_map_update_elem(&k, &v, BPF_ANY);
    int key = 1;
    int *kv = bpf_kver_map_lookup_elem(&key);
    return kv ? *kv : 1;
}

DEFINE_OPTIONAL_BPF_PROG("xdp/optional", 6001, 6002, optional_prog)
(struct xdp_md *ctx) {
    return XDP_PASS;
}

DEFINE_BPF_PROG_KVER("kprobe/kver_min", 0, 0, kver_prog, KVER(5, 15, 0))
(void *ctx) {
    return 0;
}

DEFINE_BPF_PROG_KVER_RANGE("schedcls/ingress6/clat_ether$4_14", 0, 0, clat_4_14, KVER(4, 14, 0),
                           KVER(5, 10, 0))
(struct __sk_buff *skb) {
    return 1;
}

DEFINE_BPF_PROG_KVER("schedcls/ingress6/clat_ether$5_10", 0, 0, clat_5_10, KVER(5, 10, 0))
(struct __sk_buff *skb) {
    return 2;
}

/* No def: the loader's defaults (root:root, pinned 0440, no gates). */
SECTION("skfilter/no_def")
int no_def_prog(struct __sk_buff *skb) {
    return 0;
}

LICENSE("Dual BSD/GPL");
CRITICAL("pure test: the network stack needs it");
