/*
 * Kernel tests: a program the verifier rejects (it reads far outside a tracepoint's context),
 * next to two maps (one in a pin_subdir) and a good program. Optional with -DREJECT_OPTIONAL
 * (the object still loads), mandatory otherwise (the object fails and pins nothing);
 * -DREJECT_CRITICAL marks the object critical.
 */
#include <bpf_helpers.h>

DEFINE_BPF_MAP(rj_map, ARRAY, int, uint32_t, 1);
DEFINE_BPF_MAP_EXT(rj_sub, ARRAY, int, uint32_t, 1, 0, 0, 0, 0600, "", "k_rj_sub", false,
                   KVER_NONE, KVER_INF, BPFLOADER_MIN_VER, BPFLOADER_MAX_VER, 0);

DEFINE_BPF_PROG("tracepoint/sched/sched_switch", 0, 0, rj_good)
(void *ctx) {
    int key = 0;
    uint32_t v = 1;
    bpf_rj_map_update_elem(&key, &v, BPF_ANY);
    bpf_rj_sub_update_elem(&key, &v, BPF_ANY);
    return 1;
}

#ifdef REJECT_OPTIONAL
DEFINE_OPTIONAL_BPF_PROG("tracepoint/sched/sched_wakeup", 0, 0, rj_bad)
#else
DEFINE_BPF_PROG("tracepoint/sched/sched_wakeup", 0, 0, rj_bad)
#endif
(void *ctx) {
    return *(volatile int *)((char *)ctx + 65536);
}

#ifdef REJECT_CRITICAL
CRITICAL("kernel test: this object must load");
#endif

LICENSE("GPL");
