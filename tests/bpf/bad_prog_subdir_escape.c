/* Bad input: a program def whose pin_subdir climbs out of the pin root (past a real dir). */
#include <bpf_helpers.h>

DEFINE_BPF_MAP(stay_map, ARRAY, int, int, 1);

DEFINE_BPF_PROG_EXT("tracepoint/sched/sched_switch", AID_ROOT, AID_ROOT, climber, KVER_NONE,
                    KVER_INF, BPFLOADER_MIN_VER, BPFLOADER_MAX_VER, false, "",
                    "inside/../../escape", 0)
(void *ctx) {
    int key = 0;
    int *v = bpf_stay_map_lookup_elem(&key);
    return v ? *v : 0;
}

LICENSE("GPL");
