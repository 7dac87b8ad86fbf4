/*
 * One `__ksym` extern this kernel cannot give, per -D: each object fails on one line naming
 * the extern (tests/loader/test_ksyms_load.py).
 *   MISSING_TYPELESS  not in /proc/kallsyms, not __weak
 *   MISSING_VARIABLE  not a VAR of the kernel's BTF, not __weak
 *   MISSING_KFUNC     not a FUNC of the kernel's BTF, not __weak
 *   WRONG_PROTO       a kfunc declared with other parameters than the kernel's
 *   WRONG_TYPE        a variable declared with another kind of type than the kernel's (CO-RE
 *                     compatibility: any struct is compatible with any struct)
 *   UNGUARDED_WEAK    a __weak kfunc the kernel lacks, called where the verifier reaches it
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#if defined(MISSING_TYPELESS)
extern const void bpfloader_no_such_symbol __ksym;
#define USE() ((long)&bpfloader_no_such_symbol & 0xff)
#elif defined(MISSING_VARIABLE)
extern const struct rq bpfloader_no_such_variable __ksym;
#define USE() ((long)&bpfloader_no_such_variable & 0xff)
#elif defined(MISSING_KFUNC)
extern void *bpfloader_no_such_kfunc(void *obj) __ksym;
#define USE() ((long)bpfloader_no_such_kfunc(skb))
#elif defined(WRONG_PROTO)
extern void *bpf_cast_to_kern_ctx(void *obj, int extra) __ksym;
#define USE() ((long)bpf_cast_to_kern_ctx(skb, 1))
#elif defined(WRONG_TYPE)
extern const int runqueues __ksym; /* the kernel's is a struct rq */
#define USE() ((long)&runqueues & 0xff)
#elif defined(UNGUARDED_WEAK)
extern void *bpfloader_no_such_kfunc(void *obj) __ksym __weak;
#define USE() ((long)bpfloader_no_such_kfunc(skb))
#endif

SEC("tc")
int ksyms_bad(struct __sk_buff *skb)
{
    return USE() != 0;
}

char LICENSE[] SEC("license") = "GPL";
