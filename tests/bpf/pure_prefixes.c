/* Pure reader test: one program without a def in a section of every prefix of the table. */
#include <bpf_helpers.h>

#define PROG(SEC_NAME, FUNC) \
    SECTION(SEC_NAME) int FUNC(void *ctx) { return 1; }

PROG("kprobe/do_unlinkat", p_kprobe)
PROG("kretprobe/do_unlinkat", p_kretprobe)
PROG("uprobe/usr/bin/true", p_uprobe)
PROG("uretprobe/usr/bin/true", p_uretprobe)
PROG("tracepoint/sched/sched_switch", p_tracepoint)
PROG("perf_event/cpu_clock", p_perf_event)
PROG("skfilter/allow", p_skfilter)
PROG("schedcls/ingress/tether", p_schedcls)
PROG("schedact/act", p_schedact)
PROG("xdp/pass", p_xdp)
PROG("cgroupskb/count", p_cgroupskb)
PROG("ingress/count", p_ingress)
PROG("egress/count", p_egress)
PROG("cgroupsock/inet", p_cgroupsock)
PROG("cgroupsockcreate/inet", p_cgroupsockcreate)
PROG("cgroupsockrelease/inet", p_cgroupsockrelease)
PROG("postbind4/p", p_postbind4)
PROG("postbind6/p", p_postbind6)
PROG("bind4/b", p_bind4)
PROG("bind6/b", p_bind6)
PROG("connect4/c", p_connect4)
PROG("connect6/c", p_connect6)
PROG("recvmsg4/r", p_recvmsg4)
PROG("recvmsg6/r", p_recvmsg6)
PROG("sendmsg4/s", p_sendmsg4)
PROG("sendmsg6/s", p_sendmsg6)
PROG("getsockopt/g", p_getsockopt)
PROG("setsockopt/s", p_setsockopt)
PROG("sockops/update", p_sockops)
PROG("sysctl", p_sysctl)

LICENSE("GPL");
