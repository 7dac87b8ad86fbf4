/*
 * Bad input: the maps section is not a whole number of defs (two 120-byte defs plus 4 bytes).
 * Written without bpf_helpers.h, which would keep the section a whole number of defs.
 */
#include <linux/bpf.h>

#define SECTION(NAME) __attribute__((section(NAME), used))

struct full_map_def {
    unsigned int words[30]; /* 120 bytes: type, key_size, value_size, max_entries, ... */
};

unsigned int _size_of_bpf_map_def SECTION("size_of_bpf_map_def") = 120;
const struct full_map_def SECTION("maps") first_map = {{BPF_MAP_TYPE_ARRAY, 4, 4, 1, 0, 0, 0, 0600}};
const struct full_map_def SECTION("maps") second_map = {{BPF_MAP_TYPE_ARRAY, 4, 4, 1, 0, 0, 0, 0600}};
const unsigned int SECTION("maps") stray_word = 0;

static void *(*lookup)(const void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;

SECTION("tracepoint/sched/sched_switch")
int partial(void *ctx) {
    int key = 0;
    int *v = lookup(&first_map, &key);
    return v ? *v : 0;
}

char _license[] SECTION("license") = "GPL";
