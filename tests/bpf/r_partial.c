/*
 * Status tests: an object that loads with one map and one program gated out (they need a
 * kernel >= 99.0.0), so its status lists them as skipped.
 */
#include <bpf_helpers.h>

DEFINE_BPF_MAP_GRO(present_map, ARRAY, int, uint32_t, 2, 4);
DEFINE_BPF_MAP_KVER_UGM(future_map, ARRAY, int, uint32_t, 1, KVER(99, 0, 0), KVER_INF, 0, 0,
                        0600);

DEFINE_BPF_PROG("tracepoint/sched/sched_switch", AID_ROOT, 4, present_prog)
(void *ctx) {
    int key = 0;
    uint32_t one = 1;
    bpf_present_map_update_elem(&key, &one, BPF_ANY);
    return 1;
}

DEFINE_BPF_PROG_KVER("tracepoint/sched/sched_wakeup", AID_ROOT, AID_ROOT, future_prog,
                     KVER(99, 0, 0))
(void *ctx) {
    return 1;
}

LICENSE("GPL");
