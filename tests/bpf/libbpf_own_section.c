/*
 * libbpf-style: a static function in its program's own section, called without relocation
 * (the compiler resolved the call). libbpf 1.1 refuses this; bpfloader links it like a
 * function in .text. first() returns 3 * 2 + 1 = 7, second() 5 * 2 + 1 = 11.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("socket") static __attribute__((noinline)) int twice_plus_one(int x)
{
    return x * 2 + 1;
}

SEC("socket") int first(struct __sk_buff *skb)
{
    return twice_plus_one(skb->len > 1000 ? 0 : 3);
}

SEC("socket") int second(struct __sk_buff *skb)
{
    return twice_plus_one(skb->len > 1000 ? 0 : 5);
}

char LICENSE[] SEC("license") = "GPL";
