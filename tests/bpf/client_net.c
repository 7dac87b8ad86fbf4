/*
 * Packet programs for the network attachment tests, each counting the IPv4 UDP packets it sees
 * and dropping those to one port: XDP drops port 7777, a tc classifier port 7778, and a socket
 * filter drops datagrams whose payload starts with 'D'.
 */
#include <bpf_helpers.h>

#define ETH_HLEN 14
#define IP_HLEN 20 /* the tests send no IP options */
#define UDP_HLEN 8
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

enum slot { XDP_SEEN, XDP_DROPPED, TC_SEEN, TC_DROPPED, FILTER_SEEN, FILTER_DROPPED, SLOTS };

DEFINE_BPF_MAP(hits, ARRAY, uint32_t, uint64_t, SLOTS);

static __always_inline void hit(uint32_t slot) {
    uint64_t *count = bpf_hits_lookup_elem(&slot);
    if (count) __sync_fetch_and_add(count, 1);
}

/* The UDP destination port of an Ethernet frame holding IPv4 UDP, or 0. */
static __always_inline int udp_port(const uint8_t *frame) {
    if (frame[12] != 0x08 || frame[13] != 0x00 || frame[ETH_HLEN + 9] != 17) return 0;
    return (frame[ETH_HLEN + IP_HLEN + 2] << 8) | frame[ETH_HLEN + IP_HLEN + 3];
}

DEFINE_BPF_PROG("xdp/drop_7777", AID_ROOT, AID_ROOT, xdp_drop_7777)(struct xdp_md *ctx) {
    const uint8_t *frame = (const uint8_t *)(long)ctx->data;
    if (frame + ETH_HLEN + IP_HLEN + UDP_HLEN > (const uint8_t *)(long)ctx->data_end)
        return XDP_PASS;
    int port = udp_port(frame);
    if (!port) return XDP_PASS;
    hit(XDP_SEEN);
    if (port != 7777) return XDP_PASS;
    hit(XDP_DROPPED);
    return XDP_DROP;
}

DEFINE_BPF_PROG("schedcls/drop_7778", AID_ROOT, AID_ROOT, tc_drop_7778)(struct __sk_buff *skb) {
    uint8_t frame[ETH_HLEN + IP_HLEN + UDP_HLEN];
    if (bpf_skb_load_bytes(skb, 0, frame, sizeof(frame))) return TC_ACT_OK;
    int port = udp_port(frame);
    if (!port) return TC_ACT_OK;
    hit(TC_SEEN);
    if (port != 7778) return TC_ACT_OK;
    hit(TC_DROPPED);
    return TC_ACT_SHOT;
}

DEFINE_BPF_PROG("schedact/pass", AID_ROOT, AID_ROOT, tc_action_pass)(struct __sk_buff *skb) {
    return TC_ACT_OK;
}

/* A UDP socket's filter sees the datagram from its UDP header on. */
DEFINE_BPF_PROG("skfilter/drop_d", AID_ROOT, AID_ROOT, filter_drop_d)(struct __sk_buff *skb) {
    uint8_t first;
    if (bpf_skb_load_bytes(skb, UDP_HLEN, &first, 1)) return skb->len;
    hit(FILTER_SEEN);
    if (first != 'D') return skb->len;
    hit(FILTER_DROPPED);
    return 0;
}

LICENSE("GPL");
