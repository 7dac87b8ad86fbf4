/*
 * libbpf-style: bpf-to-bpf calls. Subprograms in .text, global (checked by the verifier on
 * their own, from their BTF) and static, calling one another; a callback passed by address
 * (bpf_loop); two programs that share subprograms (each gets its own copy appended).
 * BPF_PROG_TEST_RUN checks the results: measure() returns 9 + 8 + 10 = 27.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

static __attribute__((noinline)) int square(int x)
{
    return x * x;
}

__attribute__((noinline)) int add_twice(int x)
{
    return square(1) * x + x;
}

static int add_index(__u32 index, void *ctx)
{
    *(int *)ctx += index;
    return 0;
}

static __attribute__((noinline)) int sum_below(int n)
{
    int sum = 0;

    bpf_loop(n, add_index, &sum, 0);
    return sum;
}

SEC("socket")
int measure(struct __sk_buff *skb)
{
    return square(3) + add_twice(4) + sum_below(5);
}

SEC("xdp")
int pass_if_square(struct xdp_md *ctx)
{
    return square(2) == 4 ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
