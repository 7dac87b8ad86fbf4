/*
 * Socket filter: attached to a socket, counts the packets it receives by IP protocol (the
 * map's key is the protocol number: 6 TCP, 17 UDP, 1 ICMP) and keeps them all. Attach it to
 * a packet socket (AF_PACKET) to see every packet of an interface, or to your own socket
 * with bpfloader.client: Program.open(PIN).attach_socket(sock).
 *
 *   bpfloader map dump /sys/fs/bpf/map_socket_filter_packets_by_protocol --key-type u32 --value-type u64
 */
#include <bpf_helpers.h>

DEFINE_BPF_MAP_GRO(packets_by_protocol, HASH, uint32_t, uint64_t, 256, 4 /* adm may read */);

DEFINE_BPF_PROG("skfilter/count_protocols", AID_ROOT, 4, count_protocols)(struct __sk_buff *skb) {
    uint32_t protocol = 0;
    if (skb->protocol == __builtin_bswap16(0x0800)) { /* ETH_P_IP, network byte order */
        uint8_t ip_protocol;
        if (bpf_skb_load_bytes_relative(skb, 9, &ip_protocol, 1, BPF_HDR_START_NET) == 0)
            protocol = ip_protocol;
    }
    uint64_t one = 1;
    uint64_t *count = bpf_packets_by_protocol_lookup_elem(&protocol);
    if (count)
        __sync_fetch_and_add(count, 1);
    else
        bpf_packets_by_protocol_update_elem(&protocol, &one, BPF_NOEXIST);
    return skb->len; /* keep the whole packet */
}

LICENSE("GPL");
