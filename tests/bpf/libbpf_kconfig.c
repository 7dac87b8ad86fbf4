/*
 * libbpf-style: `__kconfig` externs of every type libbpf supports (bool, char, tristate,
 * signed and unsigned integers of 2, 4 and 8 bytes, a char array), the virtual LINUX_ ones,
 * and `__weak` externs this kernel's config lacks (0). Both loaders must build the same
 * frozen `.kconfig` map and point each ld_imm64 at the same offset in it.
 */
#include <linux/bpf.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>

extern unsigned int LINUX_KERNEL_VERSION __kconfig;
extern bool LINUX_HAS_BPF_COOKIE __kconfig;
extern bool LINUX_HAS_SYSCALL_WRAPPER __kconfig __weak;
extern bool CONFIG_BPF __kconfig;
extern char CONFIG_BPF_SYSCALL __kconfig;
extern enum libbpf_tristate CONFIG_BPF_JIT __kconfig __weak;
extern int CONFIG_HZ __kconfig;
extern short CONFIG_LOG_BUF_SHIFT __kconfig;
extern unsigned long long CONFIG_ILLEGAL_POINTER_VALUE __kconfig __weak;
extern long long CONFIG_DEFAULT_MMAP_MIN_ADDR __kconfig __weak;
extern unsigned short CONFIG_NR_CPUS __kconfig __weak;
extern char CONFIG_DEFAULT_HOSTNAME[4] __kconfig __weak; /* "(none)": truncated to 3 bytes */
extern char CONFIG_CC_VERSION_TEXT[64] __kconfig __weak;
extern bool CONFIG_BPFLOADER_NOT_A_CONFIG __kconfig __weak;
extern enum libbpf_tristate CONFIG_BPFLOADER_NOT_A_TRISTATE __kconfig __weak;
extern int CONFIG_BPFLOADER_NOT_AN_INT __kconfig __weak;

SEC("socket")
int kconfig_sum(struct __sk_buff *skb)
{
    long total = LINUX_KERNEL_VERSION + LINUX_HAS_BPF_COOKIE + LINUX_HAS_SYSCALL_WRAPPER;

    total += CONFIG_BPF + CONFIG_BPF_SYSCALL + CONFIG_BPF_JIT + CONFIG_HZ;
    total += CONFIG_LOG_BUF_SHIFT + (CONFIG_ILLEGAL_POINTER_VALUE >> 48);
    total += CONFIG_DEFAULT_MMAP_MIN_ADDR + CONFIG_NR_CPUS + CONFIG_DEFAULT_HOSTNAME[1];
    total += CONFIG_CC_VERSION_TEXT[0] + CONFIG_BPFLOADER_NOT_A_CONFIG;
    total += CONFIG_BPFLOADER_NOT_A_TRISTATE + CONFIG_BPFLOADER_NOT_AN_INT;
    return total;
}

char LICENSE[] SEC("license") = "GPL";
