/*
 * Per-cgroup packet counter: attach to a cgroup v2 directory and count the packets and bytes
 * its processes receive (ingress) and send (egress). Every packet passes.
 *
 *   bpfloader attach /sys/fs/bpf/prog_cgroup_counter_cgroupskb_ingress cgroup:/sys/fs/cgroup/app:ingress --pin /sys/fs/bpf/link_app_in
 *   bpfloader map dump /sys/fs/bpf/map_cgroup_counter_cgroup_traffic --key-type u32 --value-type u64
 * Keys: 0 ingress packets, 1 ingress bytes, 2 egress packets, 3 egress bytes.
 */
#include <bpf_helpers.h>

DEFINE_BPF_MAP_GRO(cgroup_traffic, ARRAY, uint32_t, uint64_t, 4, 4 /* adm may read */);

static __always_inline int count(struct __sk_buff *skb, uint32_t packets_key) {
    uint32_t bytes_key = packets_key + 1;
    uint64_t *packets = bpf_cgroup_traffic_lookup_elem(&packets_key);
    uint64_t *bytes = bpf_cgroup_traffic_lookup_elem(&bytes_key);
    if (packets) __sync_fetch_and_add(packets, 1);
    if (bytes) __sync_fetch_and_add(bytes, skb->len);
    return 1; /* 1: let the packet through */
}

DEFINE_BPF_PROG("cgroupskb/ingress", AID_ROOT, 4, count_ingress)(struct __sk_buff *skb) {
    return count(skb, 0);
}

DEFINE_BPF_PROG("cgroupskb/egress", AID_ROOT, 4, count_egress)(struct __sk_buff *skb) {
    return count(skb, 2);
}

LICENSE("GPL");
