/*
 * The seed's example: on every context switch, remember the pid that runs next, per CPU.
 * Pinned as /sys/fs/bpf/prog_myschedtp_tracepoint_sched_sched_switch and
 * /sys/fs/bpf/map_myschedtp_cpu_pid_map; the map is readable by one group (SCHED_READER_GID).
 */
#include <bpf_helpers.h>

#ifndef SCHED_READER_GID
#define SCHED_READER_GID 4 /* Debian's "adm": the group that reads system logs */
#endif

DEFINE_BPF_MAP_GRO(cpu_pid_map, ARRAY, int, uint32_t, 1024, SCHED_READER_GID);

struct switch_args {
    unsigned long long ignore;
    char prev_comm[16];
    int prev_pid;
    int prev_prio;
    long long prev_state;
    char next_comm[16];
    int next_pid;
    int next_prio;
};

DEFINE_BPF_PROG("tracepoint/sched/sched_switch", AID_ROOT, SCHED_READER_GID, tp_sched_switch)
(struct switch_args *args) {
    int key = bpf_get_smp_processor_id();
    uint32_t val = args->next_pid;
    bpf_cpu_pid_map_update_elem(&key, &val, BPF_ANY);
    return 1; /* 1: do not block other consumers (simpleperf) of this event */
}

LICENSE("GPL");
