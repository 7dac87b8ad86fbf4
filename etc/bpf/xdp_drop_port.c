/*
 * XDP: drop IPv4 UDP datagrams to one port (9, "discard", unless built with -DDROP_PORT=N)
 * before the network stack sees them; count what was dropped and what passed.
 *
 *   bpfloader attach /sys/fs/bpf/prog_xdp_drop_port_xdp_drop_udp_port xdp:veth0
 *   bpfloader map dump /sys/fs/bpf/map_xdp_drop_port_xdp_verdicts --key-type u32 --value-type u64
 * Keys: 0 passed (UDP to other ports), 1 dropped.
 */
#include <bpf_helpers.h>

#ifndef DROP_PORT
#define DROP_PORT 9
#endif
#define ETH_HLEN 14

DEFINE_BPF_MAP_GRO(xdp_verdicts, ARRAY, uint32_t, uint64_t, 2, 4 /* adm may read */);

DEFINE_BPF_PROG("xdp/drop_udp_port", AID_ROOT, 4, xdp_drop_udp_port)(struct xdp_md *ctx) {
    const uint8_t *frame = (const uint8_t *)(long)ctx->data;
    const uint8_t *end = (const uint8_t *)(long)ctx->data_end;
    if (frame + ETH_HLEN + 20 > end) return XDP_PASS;
    if (frame[12] != 0x08 || frame[13] != 0x00) return XDP_PASS; /* not IPv4 */
    const uint8_t *ip = frame + ETH_HLEN;
    if (ip[9] != 17) return XDP_PASS; /* not UDP */
    const uint8_t *udp = ip + (ip[0] & 0x0F) * 4;
    if (udp + 8 > end) return XDP_PASS;
    uint32_t key = ((udp[2] << 8) | udp[3]) == DROP_PORT;
    uint64_t *count = bpf_xdp_verdicts_lookup_elem(&key);
    if (count) __sync_fetch_and_add(count, 1);
    return key ? XDP_DROP : XDP_PASS;
}

LICENSE("GPL");
