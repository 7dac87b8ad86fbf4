/* Bad input: no LICENSE() — the loader must refuse it (the kernel wants a license). */
#include <bpf_helpers.h>

DEFINE_BPF_MAP(unlicensed_map, ARRAY, int, int, 1);

DEFINE_BPF_PROG("tracepoint/sched/sched_switch", AID_ROOT, AID_ROOT, unlicensed)
(void *ctx) {
    int key = 0;
    int *v = bpf_unlicensed_map_lookup_elem(&key);
    return v ? *v : 0;
}
