/*
 * Kernel tests: an object sharing `shared_counts` (pinned as map__shared_counts) with any other
 * object built from this file under another name. PROG_FN names the program function.
 */
#include <bpf_helpers.h>

#ifndef PROG_FN
#define PROG_FN tp_shared_a
#endif

DEFINE_BPF_SHARED_MAP_UGM(shared_counts, ARRAY, int, uint64_t, 8, 0, 1020, 0640);
DEFINE_BPF_MAP(own_map, ARRAY, int, uint32_t, 1);

DEFINE_BPF_PROG("tracepoint/sched/sched_switch", 0, 1020, PROG_FN)
(void *ctx) {
    int key = 0;
    uint64_t *count = bpf_shared_counts_lookup_elem(&key);
    uint32_t one = 1;
    if (count)
        __sync_fetch_and_add(count, 1);
    bpf_own_map_update_elem(&key, &one, BPF_ANY);
    return 1;
}

LICENSE("GPL");
