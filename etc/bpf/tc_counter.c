/*
 * Traffic counter on an interface (tc, clsact qdisc): counts every packet and its bytes, and
 * passes it on.
 *
 *   bpfloader attach /sys/fs/bpf/prog_tc_counter_schedcls_count tc:veth0:ingress
 *   bpfloader map dump /sys/fs/bpf/map_tc_counter_tc_traffic --key-type u32 --value-type u64
 * Keys: 0 packets, 1 bytes.
 */
#include <bpf_helpers.h>

#define TC_ACT_OK 0

DEFINE_BPF_MAP_GRO(tc_traffic, ARRAY, uint32_t, uint64_t, 2, 4 /* adm may read */);

DEFINE_BPF_PROG("schedcls/count", AID_ROOT, 4, tc_count)(struct __sk_buff *skb) {
    uint32_t packets_key = 0, bytes_key = 1;
    uint64_t *packets = bpf_tc_traffic_lookup_elem(&packets_key);
    uint64_t *bytes = bpf_tc_traffic_lookup_elem(&bytes_key);
    if (packets) __sync_fetch_and_add(packets, 1);
    if (bytes) __sync_fetch_and_add(bytes, skb->len);
    return TC_ACT_OK;
}

LICENSE("GPL");
