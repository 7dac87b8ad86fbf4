/*
 * libbpf-style, with BTF: a program the verifier refuses (it reads past the end of a map
 * value). The logged verifier output must quote the C line of the failing instruction.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} small SEC(".maps");

SEC("socket")
int overread(struct __sk_buff *skb)
{
    __u32 key = 0;
    __u32 *value = bpf_map_lookup_elem(&small, &key);

    if (!value)
        return 0;
    return value[1]; /* REJECTED HERE: one past the value */
}

char LICENSE[] SEC("license") = "GPL";
