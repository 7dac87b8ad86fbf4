/*
 * Bad input: the object says its map defs are 7 bytes long (not a multiple of 4, below every
 * historic layout). Written without bpf_helpers.h, which would declare the real size.
 */
#include <linux/bpf.h>

#define SECTION(NAME) __attribute__((section(NAME), used))

struct tiny_map_def {
    unsigned int type, key_size, value_size, max_entries, map_flags, zero, gid, mode;
};

unsigned int _size_of_bpf_map_def SECTION("size_of_bpf_map_def") = 7;
const struct tiny_map_def SECTION("maps") sized_map = {
    .type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = 4, .max_entries = 1, .mode = 0600,
};

static void *(*lookup)(const void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;

SECTION("tracepoint/sched/sched_switch")
int sized(void *ctx) {
    int key = 0;
    int *v = lookup(&sized_map, &key);
    return v ? *v : 0;
}

char _license[] SECTION("license") = "GPL";
