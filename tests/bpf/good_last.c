/*
 * A good object for the bad-input tests: named zz_last.o there, so it sorts after every bad
 * object and proves the run goes on past a failure. One map and one program that uses it.
 */
#include <bpf_helpers.h>

DEFINE_BPF_MAP(switch_count, ARRAY, int, uint64_t, 1);

DEFINE_BPF_PROG("tracepoint/sched/sched_switch", AID_ROOT, AID_ROOT, count_switches)
(void *ctx) {
    int key = 0;
    uint64_t *count = bpf_switch_count_lookup_elem(&key);
    if (count) __sync_fetch_and_add(count, 1);
    return 1;
}

LICENSE("GPL");
