/*
 * The boot test's kprobe example: count calls of the getpid syscall on x86_64. The host kernel
 * has no kprobes (the program loads but cannot attach there); the boot VM's kernel has them,
 * and its checker attaches the pinned program and calls getpid().
 */
#include <bpf_helpers.h>

DEFINE_BPF_MAP_GRO(getpid_calls, ARRAY, int, uint64_t, 1, 4 /* adm */);

DEFINE_BPF_PROG("kprobe/__x64_sys_getpid", AID_ROOT, 4 /* adm */, count_getpid)
(void *ctx) {
    int key = 0;
    uint64_t *count = bpf_getpid_calls_lookup_elem(&key);
    if (count) __sync_fetch_and_add(count, 1);
    return 0;
}

LICENSE("GPL");
