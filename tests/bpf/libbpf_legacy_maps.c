/*
 * libbpf before 1.0: maps declared as `struct bpf_map_def` in a `maps` section (libbpf's
 * 20-byte layout; -DDEF_WORDS=N for another header's N-word layout, its extra words 0 unless
 * -DNONZERO_EXTRA). -DBTF_MAPS declares the same maps in `.maps` instead, for libbpf 1.x
 * (bpftool) to load as the oracle: the kernel must then hold the same maps and code.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#ifndef DEF_WORDS
#define DEF_WORDS 5
#endif
#ifdef NONZERO_EXTRA
#define EXTRA 7
#else
#define EXTRA 0
#endif

#ifdef BTF_MAPS
#define MAP(name, t, k, v, n, f)                                                               \
    struct {                                                                                   \
        __uint(type, t);                                                                       \
        __uint(key_size, k);                                                                   \
        __uint(value_size, v);                                                                 \
        __uint(max_entries, n);                                                                \
        __uint(map_flags, f);                                                                  \
    } name SEC(".maps");
#else
struct legacy_map_def {
    unsigned int words[DEF_WORDS]; /* type, key_size, value_size, max_entries, map_flags, ... */
};
#if DEF_WORDS > 5
#define MAP(name, t, k, v, n, f)                                                               \
    struct legacy_map_def name SEC("maps") = {{t, k, v, n, f, [DEF_WORDS - 1] = EXTRA}};
#else
#define MAP(name, t, k, v, n, f) struct legacy_map_def name SEC("maps") = {{t, k, v, n, f}};
#endif
#endif

MAP(counts, BPF_MAP_TYPE_HASH, 4, 8, 64, BPF_F_NO_PREALLOC)
MAP(slots, BPF_MAP_TYPE_ARRAY, 4, 4, 2, 0)
MAP(events, BPF_MAP_TYPE_PERF_EVENT_ARRAY, 4, 4, 0, 0) /* 0: one slot per possible CPU */

SEC("socket")
int count_packets(struct __sk_buff *skb) {
    __u32 key = skb->protocol;
    __u64 one = 1, *v = bpf_map_lookup_elem(&counts, &key);
    if (v)
        __sync_fetch_and_add(v, 1);
    else
        bpf_map_update_elem(&counts, &key, &one, BPF_ANY);
    __u32 zero = 0;
    __u32 *slot = bpf_map_lookup_elem(&slots, &zero);
    if (slot)
        *slot = skb->len;
    return 0;
}

SEC("kprobe/do_unlinkat")
int unlinks(void *ctx) {
    __u64 now = bpf_ktime_get_ns();
    bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &now, sizeof(now));
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
