/*
 * Bad input: a critical object whose program the verifier refuses (a hash map lookup used
 * without a NULL check). Its failure must fail the run (exit 1) after the others loaded.
 */
#include <bpf_helpers.h>

DEFINE_BPF_MAP(must_map, HASH, int, int, 16);

DEFINE_BPF_PROG("tracepoint/sched/sched_switch", AID_ROOT, AID_ROOT, must_load)
(void *ctx) {
    int key = 0;
    int *v = bpf_must_map_lookup_elem(&key);
    return *v; /* may be NULL: the verifier refuses the dereference */
}

LICENSE("GPL");
CRITICAL("bad-input test: a critical object the verifier refuses");
