/*
 * Programs for Program.test_run (BPF_PROG_TEST_RUN), each answering from the packet it is given:
 * two socket filters (the UDP destination port, the length they see), an XDP program that
 * bounces UDP datagrams to the echo port back out (source and destination MACs swapped, TTL
 * decremented, IPv4 checksum updated) and passes everything else untouched, an XDP program that
 * makes the packet longer, and a tracepoint program, of a type the kernel cannot test-run.
 */
#include <bpf_helpers.h>

#define ETH_HLEN 14
#define IP_HLEN 20 /* the tests send no IP options */
#define UDP_HLEN 8
#define ECHO_PORT 7

/* Not in bpf_helpers.h: only this test grows a packet. */
static long (*bpf_xdp_adjust_head)(struct xdp_md *ctx, int delta) = (void *)BPF_FUNC_xdp_adjust_head;

DEFINE_BPF_MAP(runs, ARRAY, uint32_t, uint64_t, 1);

/* A socket filter sees the packet from its IP header on. */
DEFINE_BPF_PROG("skfilter/udp_dport", AID_ROOT, AID_ROOT, filter_udp_dport)
(struct __sk_buff *skb) {
    uint8_t ip[IP_HLEN + UDP_HLEN];
    if (bpf_skb_load_bytes(skb, 0, ip, sizeof(ip))) return 0;
    if ((ip[0] >> 4) != 4 || ip[9] != 17) return 0;
    return (ip[IP_HLEN + 2] << 8) | ip[IP_HLEN + 3];
}

DEFINE_BPF_PROG("skfilter/length", AID_ROOT, AID_ROOT, filter_length)(struct __sk_buff *skb) {
    return skb->len;
}

DEFINE_BPF_PROG("xdp/bounce_echo", AID_ROOT, AID_ROOT, xdp_bounce_echo)(struct xdp_md *ctx) {
    uint8_t *frame = (uint8_t *)(long)ctx->data;
    if (frame + ETH_HLEN + IP_HLEN + UDP_HLEN > (uint8_t *)(long)ctx->data_end) return XDP_PASS;
    uint8_t *ip = frame + ETH_HLEN;
    if (frame[12] != 0x08 || frame[13] != 0x00 || ip[0] != 0x45 || ip[9] != 17) return XDP_PASS;
    uint8_t *udp = ip + IP_HLEN;
    if (((udp[2] << 8) | udp[3]) != ECHO_PORT) return XDP_PASS;
    if (ip[8] <= 1) return XDP_DROP;

    for (int i = 0; i < 6; i++) {
        uint8_t byte = frame[i];
        frame[i] = frame[6 + i];
        frame[6 + i] = byte;
    }
    /* TTL is the high byte of the header's fifth 16-bit word: one less there is 0x0100 more
     * in the one's complement checksum (RFC 1624), with the carry folded back in. */
    ip[8] -= 1;
    uint32_t check = ((ip[10] << 8) | ip[11]) + 0x0100;
    check = (check & 0xffff) + (check >> 16);
    ip[10] = check >> 8;
    ip[11] = check & 0xff;
    return XDP_TX;
}

/* Puts a 4-byte tag in front of the frame, so that the packet out is longer than the packet in;
 * counts its runs. */
DEFINE_BPF_PROG("xdp/push_tag", AID_ROOT, AID_ROOT, xdp_push_tag)(struct xdp_md *ctx) {
    uint32_t zero = 0;
    uint64_t *runs = bpf_runs_lookup_elem(&zero);
    if (runs) __sync_fetch_and_add(runs, 1);
    if (bpf_xdp_adjust_head(ctx, -4)) return XDP_ABORTED;
    uint8_t *tag = (uint8_t *)(long)ctx->data;
    if (tag + 4 > (uint8_t *)(long)ctx->data_end) return XDP_ABORTED;
    tag[0] = 'T';
    tag[1] = 'A';
    tag[2] = 'G';
    tag[3] = '!';
    return XDP_PASS;
}

DEFINE_BPF_PROG("tracepoint/syscalls/sys_enter_getppid", AID_ROOT, AID_ROOT, on_getppid)
(void *ctx) {
    return 0;
}

LICENSE("GPL");
