/*
 * Kernel tests: two `$` variants of one program with disjoint kernel ranges split at
 * SPLIT_KVER; exactly one passes and is pinned at the base name
 * prog_<file>_tracepoint_sched_sched_switch.
 */
#include <bpf_helpers.h>

#ifndef SPLIT_KVER
#error "build with -DSPLIT_KVER=KVER(a,b,c)"
#endif

DEFINE_BPF_PROG_KVER_RANGE("tracepoint/sched/sched_switch$before", 0, 0, sw_before, KVER_NONE,
                           SPLIT_KVER)
(void *ctx) {
    return 1;
}

DEFINE_BPF_PROG_KVER("tracepoint/sched/sched_switch$from", 0, 0, sw_from, SPLIT_KVER)
(void *ctx) {
    return 1;
}

LICENSE("GPL");
