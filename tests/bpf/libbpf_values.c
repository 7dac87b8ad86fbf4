/*
 * libbpf-style: maps with initial `values`: a prog array whose slots hold programs (tail
 * calls), an array of maps and a hash of maps with their inner map templates and slots
 * naming maps of the object. dispatch() tail-calls slot 1 and so returns 11.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct inner {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, __u64);
} inner_a SEC(".maps"), inner_b SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
    __uint(max_entries, 3);
    __type(key, __u32);
    __array(values, struct inner);
} outer_array SEC(".maps") = {
    .values = {[0] = &inner_b, [2] = &inner_a},
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
    __uint(max_entries, 8);
    __type(key, __u32);
    __array(values, struct inner);
} outer_hash SEC(".maps") = {
    .values = {[5] = &inner_a},
};

SEC("socket")
int tail_ten(struct __sk_buff *skb) { return 10; }

SEC("socket")
int tail_eleven(struct __sk_buff *skb) { return 11; }

struct {
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __uint(max_entries, 4);
    __uint(key_size, sizeof(__u32));
    __array(values, int(struct __sk_buff *));
} jump_table SEC(".maps") = {
    .values = {[0] = (void *)&tail_ten, [1] = (void *)&tail_eleven},
};

SEC("socket")
int dispatch(struct __sk_buff *skb)
{
    __u32 key = 0;

    if (bpf_map_lookup_elem(&outer_array, &key))
        skb->cb[0] = 1;
    if (bpf_map_lookup_elem(&outer_hash, &key))
        skb->cb[1] = 2;
    bpf_tail_call(skb, &jump_table, 1);
    return 99;
}

char LICENSE[] SEC("license") = "GPL";
