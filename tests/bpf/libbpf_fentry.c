/*
 * libbpf-style: programs attached through a kernel function's BTF id (attach_btf_id, found in
 * /sys/kernel/btf/vmlinux). Some kernels refuse to load them at all (EPERM on the machines
 * these tests were written on, for libbpf as for bpfloader); the test compares outcomes.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("fentry/do_unlinkat") int on_unlink(unsigned long long *ctx) { return 0; }
SEC("fexit/do_unlinkat") int after_unlink(unsigned long long *ctx) { return 0; }
SEC("fmod_ret/do_unlinkat") int unlink_ret(unsigned long long *ctx) { return 0; }
SEC("lsm/file_open") int file_open_hook(unsigned long long *ctx) { return 0; }

char LICENSE[] SEC("license") = "GPL";
