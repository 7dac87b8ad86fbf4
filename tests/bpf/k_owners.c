/*
 * Kernel tests (test_load_pins, test_bpftool): one map per map macro, each with its own
 * owner and mode, a map and a program with a pin_subdir, and programs with their own uid/gid.
 */
#include <bpf_helpers.h>

DEFINE_BPF_MAP(m_plain, ARRAY, int, uint32_t, 4);                      /* 0:0 0600 */
DEFINE_BPF_MAP_RO(m_ro, HASH, uint32_t, uint64_t, 16, 1001);             /* 0:1001 0440 */
DEFINE_BPF_MAP_GWO(m_gwo, ARRAY, int, uint16_t, 8, 1002);                /* 0:1002 0620 */
DEFINE_BPF_MAP_GRO(m_gro, PERCPU_ARRAY, int, uint64_t, 2, 1003);         /* 0:1003 0640 */
DEFINE_BPF_MAP_GRW(m_grw, HASH, uint64_t, uint32_t, 32, 1004);           /* 0:1004 0660 */
DEFINE_BPF_MAP_UGM(m_ugm, LRU_HASH, uint32_t, uint32_t, 64, 1005, 1006, 0604);
/* pin_subdir (two levels) overrides the location; type, sizes and flags spelled out. */
DEFINE_BPF_MAP_EXT(m_sub, HASH, uint32_t, uint8_t, 10, BPF_F_NO_PREALLOC, 1009, 1010, 0664, "",
                   "k_sub/deeper", false, KVER_NONE, KVER_INF, BPFLOADER_MIN_VER,
                   BPFLOADER_MAX_VER, 0);

DEFINE_BPF_PROG("tracepoint/sched/sched_switch", 1007, 1008, tp_owned_switch)
(void *ctx) {
    int key = 0;
    uint32_t one = 1;
    uint64_t big = 2;
    uint16_t small = 3;
    uint32_t u32key = 4;
    uint64_t u64key = 5;
    bpf_m_plain_update_elem(&key, &one, BPF_ANY);
    bpf_m_ro_update_elem(&u32key, &big, BPF_ANY);
    bpf_m_gwo_update_elem(&key, &small, BPF_ANY);
    bpf_m_gro_update_elem(&key, &big, BPF_ANY);
    bpf_m_grw_update_elem(&u64key, &one, BPF_ANY);
    bpf_m_ugm_update_elem(&u32key, &one, BPF_ANY);
    return 1;
}

DEFINE_BPF_PROG_EXT("tracepoint/sched/sched_wakeup", 1011, 1012, tp_owned_wakeup, KVER_NONE,
                    KVER_INF, BPFLOADER_MIN_VER, BPFLOADER_MAX_VER, false, "", "k_progsub", 0)
(void *ctx) {
    uint32_t key = 7;
    uint8_t val = 8;
    bpf_m_sub_update_elem(&key, &val, BPF_ANY);
    return 1;
}

LICENSE("GPL");
