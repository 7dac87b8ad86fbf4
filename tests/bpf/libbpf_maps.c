/*
 * libbpf-style: BTF-defined maps of many types, every one used by the program so that the
 * differential test finds them all through the program's map ids.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct flow {
    __u32 saddr;
    __u32 daddr;
    __u16 sport;
    __u16 dport;
};

struct lpm_key {
    __u32 prefixlen;
    __u8 addr[4];
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 64);
    __type(key, struct flow);
    __type(value, __u64);
} flows SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 8);
    __uint(key_size, sizeof(__u32));
    __uint(value_size, 24);
} sized SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, __u64);
} per_cpu SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 128);
    __uint(map_flags, BPF_F_NO_COMMON_LRU);
    __type(key, __u64);
    __type(value, __u32);
} lru SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, 16);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct lpm_key);
    __type(value, __u32);
} prefixes SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 4096);
} events SEC(".maps");

/* No max_entries: one slot per possible CPU, as libbpf does. */
struct {
    __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
    __uint(key_size, sizeof(int));
    __uint(value_size, sizeof(int));
} perf_out SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_QUEUE);
    __uint(max_entries, 10);
    __type(value, __u32);
} queue SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_BLOOM_FILTER);
    __uint(max_entries, 100);
    __uint(map_extra, 3);
    __type(value, __u64);
} seen SEC(".maps");

SEC("tp/sched/sched_switch")
int use_maps(void *ctx)
{
    struct flow f = {};
    struct lpm_key k = {.prefixlen = 32};
    __u32 zero = 0, *p;
    __u64 one = 1, *v;

    v = bpf_map_lookup_elem(&flows, &f);
    if (v)
        __sync_fetch_and_add(v, 1);
    p = bpf_map_lookup_elem(&sized, &zero);
    if (p)
        *p += 1;
    v = bpf_map_lookup_elem(&per_cpu, &zero);
    if (v)
        *v += 1;
    bpf_map_update_elem(&lru, &one, &zero, BPF_ANY);
    p = bpf_map_lookup_elem(&prefixes, &k);
    if (p)
        zero = *p;
    bpf_ringbuf_output(&events, &zero, sizeof(zero), 0);
    bpf_perf_event_output(ctx, &perf_out, BPF_F_CURRENT_CPU, &zero, sizeof(zero));
    bpf_map_push_elem(&queue, &zero, BPF_ANY);
    bpf_map_push_elem(&seen, &one, BPF_ANY);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
