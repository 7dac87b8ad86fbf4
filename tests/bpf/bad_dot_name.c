/* Bad input: the section would pin as ..._sched.switch, and bpffs refuses any name with '.'. */
#include <bpf_helpers.h>

DEFINE_BPF_MAP(dot_map, ARRAY, int, int, 1);

DEFINE_BPF_PROG("tracepoint/sched/sched.switch", AID_ROOT, AID_ROOT, dotted)
(void *ctx) {
    int key = 0;
    int *v = bpf_dot_map_lookup_elem(&key);
    return v ? *v : 0;
}

LICENSE("GPL");
