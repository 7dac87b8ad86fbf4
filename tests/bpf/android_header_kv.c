/*
 * An object as Android's own classic header (bpf_helpers.h, `maps`/`progs` sections) writes it,
 * without our header: its 120-byte struct bpf_map_def and 92-byte struct bpf_prog_def, and the
 * BPF_ANNOTATE_KV_PAIR struct it puts beside every map, in a section `.maps.NAME`. The macros
 * below follow the layout and the annotation Android's header emits; the loader must read the
 * annotation's types from either header alike.
 */
#include <linux/bpf.h>
#include <stdbool.h>

#define SECTION(NAME) __attribute__((section(NAME), used))

struct bpf_map_def {
    unsigned int type, key_size, value_size, max_entries, map_flags, zero, gid, mode;
    unsigned int bpfloader_min_ver, bpfloader_max_ver, min_kver, max_kver;
    char selinux_context[32], pin_subdir[32];
    bool shared, ignore_on_bits;
    char pad0[2];
    unsigned int uid;
};

struct bpf_prog_def {
    unsigned int uid, gid, min_kver, max_kver;
    bool optional, ignore_on_bits;
    char pad0[2];
    unsigned int bpfloader_min_ver, bpfloader_max_ver;
    char selinux_context[32], pin_subdir[32];
};

unsigned int _bpfloader_min_ver SECTION("bpfloader_min_ver") = 42;
unsigned int _bpfloader_max_ver SECTION("bpfloader_max_ver") = 0x10000;
unsigned int _size_of_bpf_map_def SECTION("size_of_bpf_map_def") = sizeof(struct bpf_map_def);
unsigned int _size_of_bpf_prog_def SECTION("size_of_bpf_prog_def") = sizeof(struct bpf_prog_def);
char _license[] SECTION("license") = "Apache 2.0";

#define BPF_ANNOTATE_KV_PAIR(name, type_key, type_val)  \
        struct ____btf_map_##name {                     \
                type_key key;                           \
                type_val value;                         \
        };                                              \
        struct ____btf_map_##name                       \
        __attribute__ ((section(".maps." #name), used)) \
                ____btf_map_##name = { }

#define DEFINE_BPF_MAP(the_map, TYPE, KeyType, ValueType, num_entries)                      \
    const struct bpf_map_def SECTION("maps") the_map = {                                    \
        .type = BPF_MAP_TYPE_##TYPE, .key_size = sizeof(KeyType),                           \
        .value_size = sizeof(ValueType), .max_entries = (num_entries), .mode = 0600,        \
        .bpfloader_max_ver = 0x10000, .max_kver = 0xFFFFFFFFu,                              \
    };                                                                                      \
    BPF_ANNOTATE_KV_PAIR(the_map, KeyType, ValueType)

struct stats_key {
    unsigned int uid;
    unsigned int tag;
};

struct stats_value {
    unsigned long long rx_packets, rx_bytes, tx_packets, tx_bytes;
};

DEFINE_BPF_MAP(stats_map, HASH, struct stats_key, struct stats_value, 16);
DEFINE_BPF_MAP(config_map, ARRAY, unsigned int, unsigned int, 2);

static void *(*bpf_map_lookup_elem)(const void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;

const struct bpf_prog_def SECTION("progs") count_def = {
    .max_kver = 0xFFFFFFFFu, .bpfloader_max_ver = 0x10000,
};
SECTION("skfilter/count") int count(struct __sk_buff *skb) {
    struct stats_key key = {.uid = 0};
    unsigned int index = 0;
    struct stats_value *v = bpf_map_lookup_elem(&stats_map, &key);
    unsigned int *c = bpf_map_lookup_elem(&config_map, &index);
    return (v ? 1 : 0) + (c ? *c : 0);
}
