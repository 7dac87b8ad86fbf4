/*
 * Kernel tests (test_permission_matrix): one map per mode the examples use, all owned by
 * uid 40001 and group 40100, two control maps whose modes grant less to the owner (0066) or
 * to the group (0606) than to the classes after it, and two programs with the same owner (programs always pin
 * 0440). VERSION changes only the programs' code, so a reload between versions replaces
 * the programs (rename-exchange) and keeps the maps.
 */
#include <bpf_helpers.h>

#ifndef VERSION
#define VERSION 1
#endif

#define OWNER_UID 40001
#define OWNER_GID 40100

DEFINE_BPF_MAP_UGM(pm_0600, ARRAY, int, uint32_t, 4, OWNER_UID, OWNER_GID, 0600);
DEFINE_BPF_MAP_UGM(pm_0440, ARRAY, int, uint32_t, 4, OWNER_UID, OWNER_GID, 0440);
DEFINE_BPF_MAP_UGM(pm_0640, ARRAY, int, uint32_t, 4, OWNER_UID, OWNER_GID, 0640);
DEFINE_BPF_MAP_UGM(pm_0660, ARRAY, int, uint32_t, 4, OWNER_UID, OWNER_GID, 0660);
DEFINE_BPF_MAP_UGM(pm_0620, ARRAY, int, uint32_t, 4, OWNER_UID, OWNER_GID, 0620);
DEFINE_BPF_MAP_UGM(pm_0066, ARRAY, int, uint32_t, 4, OWNER_UID, OWNER_GID, 0066);
DEFINE_BPF_MAP_UGM(pm_0606, ARRAY, int, uint32_t, 4, OWNER_UID, OWNER_GID, 0606);

DEFINE_BPF_PROG("tracepoint/sched/sched_switch", OWNER_UID, OWNER_GID, pm_switch)
(void *ctx) {
    int key = 0;
    uint32_t v = VERSION;
    bpf_pm_0600_update_elem(&key, &v, BPF_ANY);
    bpf_pm_0440_update_elem(&key, &v, BPF_ANY);
    bpf_pm_0640_update_elem(&key, &v, BPF_ANY);
    return 1;
}

DEFINE_BPF_PROG("tracepoint/sched/sched_wakeup", OWNER_UID, OWNER_GID, pm_wakeup)
(void *ctx) {
    int key = 1;
    uint32_t v = VERSION * 10;
    bpf_pm_0660_update_elem(&key, &v, BPF_ANY);
    bpf_pm_0620_update_elem(&key, &v, BPF_ANY);
    bpf_pm_0066_update_elem(&key, &v, BPF_ANY);
    bpf_pm_0606_update_elem(&key, &v, BPF_ANY);
    return 1;
}

LICENSE("GPL");
