/*
 * libbpf-style: one program per libbpf section name this loader maps to a program type, and
 * two programs in one section (`xdp`: its pins take the function's name). The tracing
 * programs that attach through kernel BTF and that this machine's kernel lets load are here
 * (tp_btf/, iter/); fentry/, fexit/, fmod_ret/ and lsm/ are in libbpf_fentry.c.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define PROG(section, name, ctx_type, ret) \
    SEC(section) int name(ctx_type *ctx) { return ret; }

PROG("socket", sock_filter, struct __sk_buff, 0)
PROG("xdp", xdp_first, struct xdp_md, XDP_PASS)
PROG("xdp", xdp_second, struct xdp_md, XDP_DROP)
PROG("tc", tc_prog, struct __sk_buff, 0)
PROG("classifier", classifier_prog, struct __sk_buff, 0)
PROG("action", action_prog, struct __sk_buff, 0)
PROG("tp/sched/sched_switch", tp_short, void, 0)
PROG("tracepoint/sched/sched_wakeup", tp_long, void, 0)
PROG("raw_tp/sched_switch", raw_tp_short, void, 0)
PROG("raw_tracepoint/sched_wakeup", raw_tp_long, void, 0)
PROG("kprobe/do_unlinkat", kprobe_prog, void, 0)
PROG("kretprobe/do_unlinkat", kretprobe_prog, void, 0)
PROG("uprobe", uprobe_prog, void, 0)
PROG("uretprobe", uretprobe_prog, void, 0)
PROG("perf_event", perf_prog, void, 0)
PROG("cgroup_skb/ingress", skb_ingress, struct __sk_buff, 1)
PROG("cgroup_skb/egress", skb_egress, struct __sk_buff, 1)
PROG("cgroup/sock_create", sock_create, struct bpf_sock, 1)
PROG("cgroup/sock_release", sock_release, struct bpf_sock, 1)
PROG("cgroup/bind4", bind4, struct bpf_sock_addr, 1)
PROG("cgroup/connect4", connect4, struct bpf_sock_addr, 1)
PROG("cgroup/connect6", connect6, struct bpf_sock_addr, 1)
PROG("cgroup/sendmsg4", sendmsg4, struct bpf_sock_addr, 1)
PROG("cgroup/recvmsg4", recvmsg4, struct bpf_sock_addr, 1)
PROG("cgroup/getsockopt", getsockopt_prog, struct bpf_sockopt, 1)
PROG("cgroup/setsockopt", setsockopt_prog, struct bpf_sockopt, 1)
PROG("cgroup/sysctl", sysctl_prog, struct bpf_sysctl, 1)
PROG("cgroup/dev", dev_prog, struct bpf_cgroup_dev_ctx, 1)
PROG("sockops", sockops_prog, struct bpf_sock_ops, 1)
PROG("sk_skb/stream_parser", skb_parser, struct __sk_buff, 0)
PROG("sk_skb/stream_verdict", skb_verdict, struct __sk_buff, SK_PASS)
PROG("sk_msg", msg_verdict, struct sk_msg_md, SK_PASS)
PROG("sk_lookup", lookup_prog, struct bpf_sk_lookup, SK_PASS)
PROG("flow_dissector", dissector, struct __sk_buff, BPF_OK)
PROG("lwt_in", lwt_in_prog, struct __sk_buff, BPF_OK)
PROG("lwt_xmit", lwt_xmit_prog, struct __sk_buff, BPF_OK)
PROG("tp_btf/sched_switch", tp_btf_prog, unsigned long long, 0)
PROG("iter/task", iter_prog, void, 0)

char LICENSE[] SEC("license") = "GPL";
