/*
 * A TCP congestion control written in BPF: a `struct tcp_congestion_ops` struct_ops map
 * (tests/loader/test_struct_ops.py). Reno-like enough to carry traffic; `init` counts the
 * connections that select it in `inits`, at key VERSION, so a test tells which version of the
 * programs a connection got.
 *   CC_NAME       the algorithm's name (a string), as `setsockopt(TCP_CONGESTION)` selects it
 *   VERSION       0 or 1: the key `init` counts at
 *   LINK          in `.struct_ops.link` (registered by a link) instead of `.struct_ops`
 *   NO_UNDO_CWND  without `undo_cwnd`, which the kernel requires: registration fails
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#ifndef CC_NAME
#define CC_NAME "bpfl_cc"
#endif
#ifndef VERSION
#define VERSION 0
#endif
#ifdef LINK
#define CC_SECTION ".struct_ops.link"
#else
#define CC_SECTION ".struct_ops"
#endif

char _license[] SEC("license") = "GPL";

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u64);
} inits SEC(".maps");

static inline struct tcp_sock *as_tcp(struct sock *sk) { return (struct tcp_sock *)sk; }

SEC("struct_ops/cc_init")
void BPF_PROG(cc_init, struct sock *sk)
{
    __u32 key = VERSION;
    __u64 *count = bpf_map_lookup_elem(&inits, &key);

    if (count)
        __sync_fetch_and_add(count, 1);
}

SEC("struct_ops/cc_ssthresh")
__u32 BPF_PROG(cc_ssthresh, struct sock *sk)
{
    __u32 half = as_tcp(sk)->snd_cwnd >> 1;

    return half > 2 ? half : 2;
}

SEC("struct_ops/cc_cong_avoid")
void BPF_PROG(cc_cong_avoid, struct sock *sk, __u32 ack, __u32 acked)
{
    struct tcp_sock *tp = as_tcp(sk);

    if (tp->snd_cwnd < tp->snd_cwnd_clamp)
        tp->snd_cwnd += 1;
}

#ifndef NO_UNDO_CWND
SEC("struct_ops/cc_undo_cwnd")
__u32 BPF_PROG(cc_undo_cwnd, struct sock *sk)
{
    return as_tcp(sk)->snd_cwnd;
}
#endif

SEC(CC_SECTION)
struct tcp_congestion_ops cc = {
    .init = (void *)cc_init,
    .ssthresh = (void *)cc_ssthresh,
    .cong_avoid = (void *)cc_cong_avoid,
#ifndef NO_UNDO_CWND
    .undo_cwnd = (void *)cc_undo_cwnd,
#endif
    .name = CC_NAME,
};
