/*
 * Kernel tests: an object placed in a location subdirectory (source_dir/LOCATION/x.o).
 * loc_here and loc_prog pin under LOCATION; loc_there's pin_subdir sends it elsewhere.
 */
#include <bpf_helpers.h>

DEFINE_BPF_MAP_GRO(loc_here, ARRAY, int, uint32_t, 2, 1030);
DEFINE_BPF_MAP_EXT(loc_there, ARRAY, int, uint32_t, 3, 0, 1031, 1032, 0640, "", "k_elsewhere",
                   false, KVER_NONE, KVER_INF, BPFLOADER_MIN_VER, BPFLOADER_MAX_VER, 0);

DEFINE_BPF_PROG("tracepoint/sched/sched_switch", 1033, 1034, loc_prog)
(void *ctx) {
    int key = 1;
    uint32_t v = 1;
    bpf_loc_here_update_elem(&key, &v, BPF_ANY);
    bpf_loc_there_update_elem(&key, &v, BPF_ANY);
    return 1;
}

LICENSE("GPL");
