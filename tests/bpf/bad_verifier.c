/*
 * Bad input: the verifier refuses the program (it reads 4 bytes past the end of a 4-byte map
 * value). The object has a map too: it is created before the program, and must not stay pinned.
 */
#include <bpf_helpers.h>

DEFINE_BPF_MAP(overread_map, ARRAY, int, int, 1);

DEFINE_BPF_PROG("tracepoint/sched/sched_switch", AID_ROOT, AID_ROOT, overread)
(void *ctx) {
    int key = 0;
    int *v = bpf_overread_map_lookup_elem(&key);
    if (!v) return 0;
    return v[1]; /* value_size is 4: offset 4 is past the end */
}

LICENSE("GPL");
