/*
 * One counter per cgroup hook, each program letting everything through: socket buffers in and
 * out, socket creation, bind, connect, UDP send and receive, post-bind, socket options, sysctl
 * access and TCP socket operations.
 */
#include <bpf_helpers.h>

enum slot {
    INGRESS, EGRESS, SOCK_CREATE, BIND4, POST_BIND4, CONNECT4, SENDMSG4, RECVMSG4,
    GETSOCKOPT, SETSOCKOPT, SYSCTL, SOCK_OPS, SLOTS
};

DEFINE_BPF_MAP(hits, ARRAY, uint32_t, uint64_t, SLOTS);

static __always_inline int hit(uint32_t slot) {
    uint64_t *count = bpf_hits_lookup_elem(&slot);
    if (count) __sync_fetch_and_add(count, 1);
    return 1;
}

DEFINE_BPF_PROG("ingress/count", AID_ROOT, AID_ROOT, count_ingress)(struct __sk_buff *skb) {
    return hit(INGRESS);
}
DEFINE_BPF_PROG("cgroupskb/count", AID_ROOT, AID_ROOT, count_egress)(struct __sk_buff *skb) {
    return hit(EGRESS);
}
DEFINE_BPF_PROG("cgroupsockcreate/count", AID_ROOT, AID_ROOT, count_create)(struct bpf_sock *sk) {
    return hit(SOCK_CREATE);
}
DEFINE_BPF_PROG("postbind4/count", AID_ROOT, AID_ROOT, count_post_bind)(struct bpf_sock *sk) {
    return hit(POST_BIND4);
}
DEFINE_BPF_PROG("bind4/count", AID_ROOT, AID_ROOT, count_bind)(struct bpf_sock_addr *ctx) {
    return hit(BIND4);
}
DEFINE_BPF_PROG("connect4/count", AID_ROOT, AID_ROOT, count_connect)(struct bpf_sock_addr *ctx) {
    return hit(CONNECT4);
}
DEFINE_BPF_PROG("sendmsg4/count", AID_ROOT, AID_ROOT, count_sendmsg)(struct bpf_sock_addr *ctx) {
    return hit(SENDMSG4);
}
DEFINE_BPF_PROG("recvmsg4/count", AID_ROOT, AID_ROOT, count_recvmsg)(struct bpf_sock_addr *ctx) {
    return hit(RECVMSG4);
}
DEFINE_BPF_PROG("getsockopt/count", AID_ROOT, AID_ROOT, count_getsockopt)(struct bpf_sockopt *ctx) {
    return hit(GETSOCKOPT);
}
DEFINE_BPF_PROG("setsockopt/count", AID_ROOT, AID_ROOT, count_setsockopt)(struct bpf_sockopt *ctx) {
    return hit(SETSOCKOPT);
}
DEFINE_BPF_PROG("sysctl/count", AID_ROOT, AID_ROOT, count_sysctl)(struct bpf_sysctl *ctx) {
    return hit(SYSCTL);
}
DEFINE_BPF_PROG("sockops/count", AID_ROOT, AID_ROOT, count_sock_ops)(struct bpf_sock_ops *ops) {
    return hit(SOCK_OPS);
}

LICENSE("GPL");
