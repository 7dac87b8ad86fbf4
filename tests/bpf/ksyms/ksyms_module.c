/*
 * `__ksym` externs on Debian's kernel, in the boot test's guest (tests/boot/guest/check.py,
 * check_ksyms): kfuncs of a kernel module (nf_conntrack's, which the program names through its
 * fd_array: the module's BTF fd) and a typed per-CPU variable of vmlinux (a kernel built with
 * CONFIG_KALLSYMS_ALL finds its address), read through CO-RE. Compiled on the host against
 * the host's vmlinux.h; the kfuncs' types are declared here, as their own (any struct is
 * compatible with any struct), so that no kernel's headers are needed.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct ksyms_ct_opts { /* struct bpf_ct_opts of Linux 6.1: NF_BPF_CT_OPTS_SZ is 12 */
    __s32 netns_id;
    __s32 error;
    __u8 l4proto;
    __u8 dir;
    __u8 reserved[2];
};
struct ksyms_nf_conn {
    int unused;
};

extern struct ksyms_nf_conn *bpf_skb_ct_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *tuple,
                                               __u32 tuple__sz, struct ksyms_ct_opts *opts,
                                               __u32 opts__sz) __ksym;
extern void bpf_ct_release(struct ksyms_nf_conn *ct) __ksym;
extern const struct rq runqueues __ksym;

/* The connection of an all-zero TCP tuple: none, so the kfunc says ENOENT (2). */
SEC("tc")
int ct_lookup(struct __sk_buff *skb)
{
    struct bpf_sock_tuple tuple = {};
    struct ksyms_ct_opts opts = {.netns_id = -1, .l4proto = 6};
    struct ksyms_nf_conn *ct;

    ct = bpf_skb_ct_lookup(skb, &tuple, sizeof(tuple.ipv4), &opts, sizeof(opts));
    if (ct) {
        bpf_ct_release(ct);
        return 1;
    }
    return -opts.error;
}

/* 100 + the CPU it runs on, from that CPU's runqueue. */
SEC("tc")
int this_cpu(struct __sk_buff *skb)
{
    struct rq *rq = bpf_this_cpu_ptr(&runqueues);

    return 100 + rq->cpu;
}

char LICENSE[] SEC("license") = "GPL";
