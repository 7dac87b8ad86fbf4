/*
 * libbpf-style: global data. .data, .rodata (frozen, read-only to programs), .bss, custom
 * .data.* and .rodata.* sections, static variables, a string literal; a subprogram in .text
 * reads them too. BPF_PROG_TEST_RUN checks the arithmetic: count() returns
 * 7 + 42 + 3 + 5 + 100 + 'l' (108) = 265 on its first run, 267 on the second (counter and
 * hidden count runs), and leaves .bss and .data updated.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

int counter = 7;                                  /* .data */
const volatile int limit = 42;                    /* .rodata */
int runs;                                         /* .bss */
__u64 bucket[4];                                  /* .bss */
int custom SEC(".data.custom") = 3;               /* custom data section */
const volatile int tuning SEC(".rodata.tuning") = 100; /* custom read-only section */
static int hidden = 5;                            /* static, in .data */
const char greeting[] = "hello";                  /* .rodata */

__attribute__((noinline)) int read_globals(int i)
{
    return counter + limit + custom + hidden + tuning + greeting[i & 3];
}

SEC("socket")
int count(struct __sk_buff *skb)
{
    int total = read_globals(2);

    runs++;
    counter++;
    hidden++;
    bucket[skb->len & 3] += 1;
    return total;
}

char LICENSE[] SEC("license") = "GPL";
