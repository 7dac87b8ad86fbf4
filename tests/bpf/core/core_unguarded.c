/*
 * A CO-RE read of a field this kernel lacks, not guarded by bpf_core_field_exists: the
 * relocation is poisoned and the verifier refuses the program at that instruction.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

struct task_struct___future {
    int field_of_a_future_kernel;
} __attribute__((preserve_access_index));

SEC("raw_tracepoint/sys_enter")
int core_unguarded(struct bpf_raw_tracepoint_args *ctx)
{
    struct task_struct___future *task = (void *)bpf_get_current_task();

    return BPF_CORE_READ(task, field_of_a_future_kernel);
}
