/*
 * `__ksym` externs this kernel resolves and loads: a typeless symbol (`_text`, from
 * /proc/kallsyms), a kfunc of vmlinux called from a program and from a subprogram, and
 * `bpf_ksym_exists` of it (a BTF id load of a FUNC); and `__weak` ones it lacks, each guarded:
 * a typeless symbol (its address 0), a typed variable (0) and a kfunc (its call dead code).
 * Loaded by bpftool (libbpf) and by bpfloader, the kernel must hold the same programs, BTF
 * and maps; run, `results` holds what each extern came to (tests/loader/test_ksyms_load.py).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#ifndef bpf_ksym_exists
#define bpf_ksym_exists(sym) (!!(sym))
#endif

extern const void _text __ksym;
extern const void bpfloader_no_such_symbol __ksym __weak;
extern const struct rq bpfloader_no_such_variable __ksym __weak;
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;
extern void bpfloader_no_such_kfunc(struct __sk_buff *skb) __ksym __weak;

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 8);
    __type(key, __u32);
    __type(value, __u64);
} results SEC(".maps");

static __always_inline void put(__u32 key, __u64 value)
{
    bpf_map_update_elem(&results, &key, &value, 0);
}

__attribute__((noinline)) int skb_len(struct __sk_buff *skb)
{
    struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);

    return kskb->len;
}

SEC("tc")
int ksyms_tc(struct __sk_buff *skb)
{
    put(0, (__u64)&_text);
    put(1, (__u64)&bpfloader_no_such_symbol);
    put(2, bpf_ksym_exists(&bpfloader_no_such_variable));
    put(3, bpf_ksym_exists(bpfloader_no_such_kfunc));
    put(4, bpf_ksym_exists(bpf_cast_to_kern_ctx));
    if (bpf_ksym_exists(bpfloader_no_such_kfunc))
        bpfloader_no_such_kfunc(skb);
    put(5, skb_len(skb));
    return 0;
}

SEC("xdp")
int ksyms_xdp(struct xdp_md *ctx)
{
    struct xdp_buff *xdp = bpf_cast_to_kern_ctx(ctx);

    put(6, xdp->data_end - xdp->data);
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
