/*
 * libbpf-style, built as `libbpf_names.bpf.o` (libbpf-bootstrap's and bpftool gen skeleton's
 * file names): the object's name is libbpf's, `libbpf_names`, and sections whose targets hold
 * what a pin name may not (`.`, `:`, `+`) still get one. -DCOLLIDE adds a program whose
 * section only meets `uprobe/libc.so.6:malloc` once those become '_'.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, int);
    __type(value, long);
} calls SEC(".maps");

long total; /* .bss: the map the kernel calls libbpf_names.bss */

static int count(void) {
    int key = 0;
    long *v = bpf_map_lookup_elem(&calls, &key);
    if (v)
        __sync_fetch_and_add(v, 1);
    total++;
    return 0;
}

SEC("uprobe/libc.so.6:malloc") int up_malloc(void *ctx) { return count(); }
SEC("uretprobe/libc.so.6:malloc") int up_malloc_ret(void *ctx) { return count(); }
SEC("kprobe/do_sys_openat2+0x4") int openat_plus(void *ctx) { return count(); }
SEC("usdt/libc.so.6:libc:setjmp") int usdt_setjmp(void *ctx) { return count(); }
SEC("xdp") int pass(struct xdp_md *ctx) { return XDP_PASS; }
#ifdef COLLIDE
SEC("uprobe/libc_so_6_malloc") int other_malloc(void *ctx) { return 0; }
#endif

char LICENSE[] SEC("license") = "GPL";
