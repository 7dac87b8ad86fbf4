/*
 * Rejected only after the verifier walked a long bounded loop: a verifier log far larger than
 * the loader's first log buffer (256 KiB), so the buffer has to grow for the log to be whole.
 */
#include <linux/bpf.h>

#define SEC(NAME) __attribute__((section(NAME), used))

SEC("tracepoint/sched/sched_switch")
int big_log(unsigned long long *ctx) {
    unsigned long long sum = 0;
    for (int i = 0; i < 3000; i++) /* bounded: the verifier follows every iteration */
        sum += ctx[1] ^ i;
    return sum + ctx[4096]; /* then an invalid bpf_context access */
}

char _license[] SEC("license") = "GPL";
