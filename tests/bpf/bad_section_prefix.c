/* Bad input: a code section whose prefix names no program type. */
#include <bpf_helpers.h>

DEFINE_BPF_MAP(frob_map, ARRAY, int, int, 1);

SECTION("frobnicate/foo")
int frob(void *ctx) {
    int key = 0;
    int *v = bpf_frob_map_lookup_elem(&key);
    return v ? *v : 0;
}

LICENSE("GPL");
