/*
 * Status tests: an object for a loader newer than this one (version 48): skipped whole.
 */
#define BPFLOADER_MIN_VER 1000u
#include <bpf_helpers.h>

DEFINE_BPF_MAP(later_map, ARRAY, int, uint32_t, 1);

DEFINE_BPF_PROG("tracepoint/sched/sched_switch", AID_ROOT, AID_ROOT, later_prog)
(void *ctx) {
    return 1;
}

LICENSE("GPL");
