/* Bad input: a map def whose pin_subdir climbs out of the pin root. */
#include <bpf_helpers.h>

DEFINE_BPF_MAP_EXT(escaping_map, ARRAY, int, int, 1, 0, AID_ROOT, AID_ROOT, 0600, "",
                   "../escape", false, KVER_NONE, KVER_INF, BPFLOADER_MIN_VER,
                   BPFLOADER_MAX_VER, 0);

DEFINE_BPF_PROG("tracepoint/sched/sched_switch", AID_ROOT, AID_ROOT, escaper)
(void *ctx) {
    int key = 0;
    int *v = bpf_escaping_map_lookup_elem(&key);
    return v ? *v : 0;
}

LICENSE("GPL");
