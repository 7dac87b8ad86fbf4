/*
 * libbpf-style: a map pinned by name (LIBBPF_PIN_BY_NAME), which bpfloader pins as a shared
 * map, map__shared_totals, used by every object that declares it. Built twice, as two
 * objects (-DSLOT=0 and -DSLOT=1), each counting in its own slot.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#ifndef SLOT
#define SLOT 0
#endif

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u64);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} shared_totals SEC(".maps");

SEC("socket")
int count_slot(struct __sk_buff *skb)
{
    __u32 key = SLOT;
    __u64 *total = bpf_map_lookup_elem(&shared_totals, &key);

    if (total)
        __sync_fetch_and_add(total, 1);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
