/*
 * Kernel tests: maps whose flags the kernel reports otherwise than they were declared, reused
 * on a second load, on a reload, and when another object shares them.
 *   tx_ports     DEVMAP: the kernel adds BPF_F_RDONLY_PROG to every device map
 *   tx_ports_h   DEVMAP_HASH: likewise
 *   ro_fd_map    HASH declared BPF_F_RDONLY: a flag of the fd, which the kernel drops
 *   wo_fd_map    HASH declared BPF_F_WRONLY: likewise
 *   shared_tx    a shared DEVMAP (map__shared_tx), which a second build of this file (another
 *                file name) reuses
 * -DVERSION=N changes the program's code, so a reload replaces it and keeps the maps.
 */
#include <bpf_helpers.h>

#ifndef VERSION
#define VERSION 1
#endif

DEFINE_BPF_MAP(tx_ports, DEVMAP, unsigned int, unsigned int, 4);
DEFINE_BPF_MAP(tx_ports_h, DEVMAP_HASH, unsigned int, unsigned int, 4);
DEFINE_BPF_MAP_EXT(ro_fd_map, HASH, unsigned int, unsigned int, 4, BPF_F_RDONLY, 0, 0, 0600, "",
                   "", false, KVER_NONE, KVER_INF, BPFLOADER_MIN_VER, BPFLOADER_MAX_VER, 0)
DEFINE_BPF_MAP_EXT(wo_fd_map, HASH, unsigned int, unsigned int, 4, BPF_F_WRONLY, 0, 0, 0600, "",
                   "", false, KVER_NONE, KVER_INF, BPFLOADER_MIN_VER, BPFLOADER_MAX_VER, 0)
DEFINE_BPF_SHARED_MAP_UGM(shared_tx, DEVMAP, unsigned int, unsigned int, 4, 0, 0, 0600);

static long (*bpf_redirect_map)(const void *map, unsigned long long key,
                                unsigned long long flags) = (void *)BPF_FUNC_redirect_map;

DEFINE_BPF_PROG("xdp/redirect", 0, 0, redirect)(struct xdp_md *ctx) {
    unsigned int key = ctx->ingress_ifindex & 3;
    unsigned int *seen = bpf_ro_fd_map_lookup_elem(&key);
    unsigned int *count = bpf_wo_fd_map_lookup_elem(&key);
    if (seen && count && *seen == VERSION) return XDP_PASS;
    if (key == 1) return bpf_redirect_map(&tx_ports_h, key, XDP_PASS);
    if (key == 2) return bpf_redirect_map(&shared_tx, key, XDP_PASS);
    return bpf_redirect_map(&tx_ports, key, XDP_PASS);
}

LICENSE("GPL");
