/* Bad input: the program uses a map that no section of the object defines (an extern). */
#include <bpf_helpers.h>

DEFINE_BPF_MAP(known_map, ARRAY, int, int, 1);
extern const struct bpf_map_def missing_map;

DEFINE_BPF_PROG("tracepoint/sched/sched_switch", AID_ROOT, AID_ROOT, uses_missing)
(void *ctx) {
    int key = 0;
    int *known = bpf_known_map_lookup_elem(&key);
    int *missing = bpf_map_lookup_elem_unsafe(&missing_map, &key);
    return (known ? *known : 0) + (missing ? *missing : 0);
}

LICENSE("GPL");
