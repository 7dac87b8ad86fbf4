/*
 * A good critical object: it loads as it is. The bad-input tests corrupt bytes of its ELF
 * (keeping the section headers readable, so the `critical` section is still found).
 */
#include <bpf_helpers.h>

DEFINE_BPF_MAP(vital_map, ARRAY, int, int, 1);

DEFINE_BPF_PROG("tracepoint/sched/sched_switch", AID_ROOT, AID_ROOT, vital)
(void *ctx) {
    int key = 0;
    int *v = bpf_vital_map_lookup_elem(&key);
    return v ? *v : 0;
}

LICENSE("GPL");
CRITICAL("bad-input test: a critical object");
