/*
 * The seed's first example: say hello through the trace pipe on every execve.
 * A plain SEC() program without a def: it gets the defaults (root:root, mode 0440).
 * Pinned as /sys/fs/bpf/prog_execsnoop_tracepoint_syscalls_sys_enter_execve.
 */
#include <bpf_helpers.h>

SECTION("tracepoint/syscalls/sys_enter_execve")
int bpf_prog(void *ctx) {
    char msg[] = "Hello, BPF World!\n";
    bpf_trace_printk(msg, sizeof(msg));
    return 0;
}

LICENSE("GPL");
