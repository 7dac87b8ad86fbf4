/*
 * Rejected by the verifier, with a log of several KB: a chain of stack writes, then a read
 * past the end of the tracepoint context. No maps, so the log is the same on every load
 * (no map ids in it) and can be compared byte for byte with another loader's.
 */
#include <linux/bpf.h>

#define SEC(NAME) __attribute__((section(NAME), used))

SEC("tracepoint/sched/sched_switch")
int rejected(unsigned long long *ctx) {
    volatile unsigned long long scratch[32];
#pragma unroll
    for (int i = 0; i < 32; i++)
        scratch[i] = ctx[1] + i;
    return scratch[3] + ctx[4096]; /* ctx is far smaller: invalid bpf_context access */
}

char _license[] SEC("license") = "GPL";
