/*
 * Android's 2026 format, one fault per -D (tests/loader/test_android_2026.py):
 *   EXTRA_MAP        a .maps map without an .android_maps def: loads, pinned beside the others
 *   DEF_ONLY         an .android_maps def without its .maps map: refused, as Android refuses it
 *   NO_DEF           a code section without its .android_progs def: refused
 *   CLASSIC_TOO      a classic `maps` section beside the 2026 ones: refused
 *   NO_LICENSE       no license section: refused
 *   OUTSIDE_BPFFS    a pin_location outside /sys/fs/bpf/: refused
 */
#define BPFLOADER_ANDROID_2026
#define BPF_OBJ_NAME "bad"
#define DEFAULT_BPF_PIN_SUBDIR "tethering"
#include <bpf_helpers.h>

DEFINE_BPF_MAP_GRW(counts, ARRAY, uint32_t, uint64_t, 4, 1073)

#ifdef EXTRA_MAP
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, uint32_t);
    __uint(max_entries, 1);
} extra SECTION(".maps");
#endif
#ifdef DEF_ONLY
DEFINE_BPF_MAP_DEF_2026(orphan, ARRAY, 4, 4, 1, 0, 0, 0, 0600, "", "tethering", KVER_NONE,
                        KVER_INF, BPFLOADER_MIN_API, BPFLOADER_MAX_API);
#endif
#ifdef CLASSIC_TOO
const struct { unsigned int words[30]; } classic SECTION("maps") = {};
#endif
#ifdef OUTSIDE_BPFFS
const struct bpf_map_def SECTION(".android_maps") elsewhere_def = {
    .type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = 4, .max_entries = 1, .mode = 0600,
    .max_kver = KVER_INF, .max_api_level_full = BPFLOADER_API_MAX,
    .pin_location = "/tmp/map_bad_elsewhere", .name_idx = 13,
};
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, uint32_t);
    __uint(max_entries, 1);
} elsewhere SECTION(".maps");
#endif

DEFINE_BPF_PROG(skfilter, count, 5_4, AID_ROOT, 1073)(struct __sk_buff *skb)
{
    uint32_t key = 0;
    uint64_t *value = bpf_counts_lookup_elem(&key);

#ifdef EXTRA_MAP
    bpf_map_lookup_elem_unsafe(&extra, &key);
#endif
    if (value)
        __sync_fetch_and_add(value, 1);
    return 0;
}

#ifdef NO_DEF
SECTION("schedcls/nodef$5_4") int schedcls_nodef_5_4(struct __sk_buff *skb)
{
    return 0;
}
#endif

#ifndef NO_LICENSE
LICENSE("GPL");
#endif
