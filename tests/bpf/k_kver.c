/*
 * Kernel tests: kernel-version gates placed exactly around the running kernel, whose version
 * the test passes as RUN_KVER (KVER(major, minor, patch) of uname -r). Ranges are
 * min <= running < max: the *_in defs pass, the *_out defs are gated out.
 */
#include <bpf_helpers.h>

#ifndef RUN_KVER
#error "build with -DRUN_KVER=KVER(a,b,c) of the running kernel"
#endif

DEFINE_BPF_MAP_KVER_UGM(m_from_now_in, ARRAY, int, uint32_t, 1, RUN_KVER, KVER_INF, 0, 0, 0600);
DEFINE_BPF_MAP_KVER_UGM(m_until_next_in, ARRAY, int, uint32_t, 1, KVER(4, 0, 0), RUN_KVER + 1,
                        0, 0, 0600);
DEFINE_BPF_MAP_KVER_UGM(m_from_next_out, ARRAY, int, uint32_t, 1, RUN_KVER + 1, KVER_INF, 0, 0,
                        0600);
DEFINE_BPF_MAP_KVER_UGM(m_until_now_out, ARRAY, int, uint32_t, 1, KVER_NONE, RUN_KVER, 0, 0,
                        0600);

DEFINE_BPF_PROG_KVER("tracepoint/sched/sched_switch", 0, 0, kv_from_now_in, RUN_KVER)
(void *ctx) {
    int key = 0;
    uint32_t v = 1;
    bpf_m_from_now_in_update_elem(&key, &v, BPF_ANY);
    bpf_m_until_next_in_update_elem(&key, &v, BPF_ANY);
    return 1;
}

DEFINE_BPF_PROG_KVER_RANGE("tracepoint/sched/sched_wakeup", 0, 0, kv_until_now_out, KVER_NONE,
                           RUN_KVER)
(void *ctx) {
    return 1;
}

DEFINE_BPF_PROG_KVER("tracepoint/sched/sched_process_exit", 0, 0, kv_from_next_out, RUN_KVER + 1)
(void *ctx) {
    return 1;
}

/* Passes its own gates but uses a gated-out map: an optional program is skipped for it. */
DEFINE_OPTIONAL_BPF_PROG("tracepoint/sched/sched_process_fork", 0, 0, kv_uses_gated_map)
(void *ctx) {
    int key = 0;
    uint32_t v = 1;
    bpf_m_from_next_out_update_elem(&key, &v, BPF_ANY);
    return 1;
}

LICENSE("GPL");
