/*
 * CO-RE relocations in subprograms: a global (its argument a scalar, as the verifier checks it alone) and a static function
 * of .text, called by two
 * programs each (each gets its own copy appended, relocated where the linker placed it), and
 * a relocation that is poisoned but guarded in the subprogram.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

struct task_struct___gone {
    int field_gone_from_this_kernel;
} __attribute__((preserve_access_index));

static __attribute__((noinline)) int task_pid(struct task_struct *task)
{
    struct task_struct___gone *gone = (void *)task;

    if (bpf_core_field_exists(gone->field_gone_from_this_kernel))
        return BPF_CORE_READ(gone, field_gone_from_this_kernel);
    return BPF_CORE_READ(task, pid) + bpf_core_type_size(struct nsproxy);
}

__attribute__((noinline)) int parent_tgid(unsigned long address)
{
    struct task_struct *task = (void *)address;

    return BPF_CORE_READ(task, real_parent, tgid) + task_pid(task);
}

SEC("raw_tracepoint/sys_enter")
int core_sub_one(struct bpf_raw_tracepoint_args *ctx)
{
    struct task_struct *task = (void *)bpf_get_current_task();

    return parent_tgid((unsigned long)task) + task_pid(task) > 0;
}

SEC("raw_tracepoint/sys_exit")
int core_sub_two(struct bpf_raw_tracepoint_args *ctx)
{
    struct task_struct *task = (void *)bpf_get_current_task();

    return task_pid(task) + bpf_core_field_size(task->comm) > 0;
}
