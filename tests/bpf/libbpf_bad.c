/*
 * libbpf-style objects that must be refused, one per -D flag:
 *   BAD_MAP_TYPE   a .maps entry of an unknown map type
 *   BAD_FIELD      a .maps entry with a field libbpf does not know
 *   BAD_PINNING    pinning = 2 (libbpf's LIBBPF_PIN_BY_NAME is 1; nothing else is defined)
 *   EXTERN         a `__ksym` extern variable the kernel lacks, not `__weak`
 *   KCONFIG_MISSING a `__kconfig` extern no kernel config has, not `__weak`
 *   CORE           a CO-RE field access (preserve_access_index)
 *   NO_TARGET      a fentry program that names no kernel function
 *   UNKNOWN_SEC    a program in a section libbpf does not know
 * Without flags it is a good object: the tests patch its bytes into bad ones.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
#ifdef BAD_MAP_TYPE
    __uint(type, 99);
#else
    __uint(type, BPF_MAP_TYPE_ARRAY);
#endif
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
#ifdef BAD_FIELD
    __uint(colour, 3);
#endif
#ifdef BAD_PINNING
    __uint(pinning, 2);
#endif
} things SEC(".maps");

#ifdef EXTERN
extern int bpfloader_no_such_variable __ksym;
#endif
#ifdef KCONFIG_MISSING
extern int CONFIG_BPFLOADER_MISSING __kconfig;
#endif

#ifdef CORE
struct task_like {
    int pid;
} __attribute__((preserve_access_index));
#endif

int seen;

SEC("socket")
int use(struct __sk_buff *skb)
{
    __u32 key = 0;
    __u32 *value = bpf_map_lookup_elem(&things, &key);

    if (value)
        seen = *value;
#ifdef EXTERN
    seen += bpfloader_no_such_variable;
#endif
#ifdef KCONFIG_MISSING
    seen += CONFIG_BPFLOADER_MISSING;
#endif
#ifdef CORE
    seen += ((struct task_like *)(long)skb->cb[0])->pid;
#endif
    return 0;
}

#ifdef NO_TARGET
SEC("fentry") int no_target(unsigned long long *ctx) { return 0; }
#endif

#ifdef UNKNOWN_SEC
SEC("no_such_kind/x") int unknown(void *ctx) { return 0; }
#endif

char LICENSE[] SEC("license") = "GPL";
