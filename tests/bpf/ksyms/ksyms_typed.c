/*
 * Typed `__ksym` variables (per-CPU ones, the only variables a kernel's BTF describes): the
 * ld_imm64 of each becomes a BTF id load. A kernel built without CONFIG_KALLSYMS_ALL cannot
 * find their addresses and refuses the program (`ldimm64 failed to find the address for
 * kernel symbol`) under either loader: the relocated instructions are compared instead, and
 * the refusal must be explained (tests/loader/test_ksyms_load.py).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

extern const struct rq runqueues __ksym;
extern const int bpf_prog_active __ksym;

SEC("tc")
int ksyms_typed(struct __sk_buff *skb)
{
    struct rq *rq = bpf_this_cpu_ptr(&runqueues);
    int *active = bpf_per_cpu_ptr(&bpf_prog_active, 0);

    return rq->cpu + (active ? *active : 0);
}

char LICENSE[] SEC("license") = "GPL";
