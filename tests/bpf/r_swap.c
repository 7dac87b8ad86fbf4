/*
 * Reload tests: one object built in several versions with -D flags. VERSION changes the
 * programs' code (and their kernel names, sw_vN / wk_vN) and nothing else; VALUE_TYPE,
 * MAX_ENTRIES and VALUES_UID/GID/MODE change the definition of the `values` map, for the
 * incompatible-map and owner/mode tests. `counts` never changes.
 */
#include <bpf_helpers.h>

#ifndef VERSION
#define VERSION 1
#endif
#ifndef VALUE_TYPE
#define VALUE_TYPE uint64_t
#endif
#ifndef MAX_ENTRIES
#define MAX_ENTRIES 16
#endif
#ifndef VALUES_UID
#define VALUES_UID 0
#endif
#ifndef VALUES_GID
#define VALUES_GID 0
#endif
#ifndef VALUES_MODE
#define VALUES_MODE 0600
#endif

#define CAT(a, b) a##b
#define NAMED(prefix, v) CAT(prefix, v)

DEFINE_BPF_MAP_UGM(values, HASH, int, VALUE_TYPE, MAX_ENTRIES, VALUES_UID, VALUES_GID,
                   VALUES_MODE);
DEFINE_BPF_MAP(counts, ARRAY, int, uint64_t, 4);

DEFINE_BPF_PROG("tracepoint/sched/sched_switch", AID_ROOT, AID_ROOT, NAMED(sw_v, VERSION))
(void *ctx) {
    int key = VERSION;
    VALUE_TYPE v = VERSION * 100;
    bpf_values_update_elem(&key, &v, BPF_ANY);
    return 1;
}

DEFINE_BPF_PROG("tracepoint/sched/sched_wakeup", AID_ROOT, AID_ROOT, NAMED(wk_v, VERSION))
(void *ctx) {
    int key = 0;
    uint64_t *count = bpf_counts_lookup_elem(&key);
    if (count)
        __sync_fetch_and_add(count, VERSION);
    return 1;
}

LICENSE("GPL");
