/*
 * Kernel tests (test_access): maps for a reader group (4321) and an owning user (1234), at the
 * pin root and in a pin_subdir, for children that drop root and open them.
 */
#include <bpf_helpers.h>

#define READER_GID 4321
#define OWNER_UID 1234

DEFINE_BPF_MAP_GRO(acc_gro, ARRAY, int, uint32_t, 4, READER_GID);   /* 0:4321 0640 */
DEFINE_BPF_MAP_GRW(acc_grw, ARRAY, int, uint32_t, 4, READER_GID);   /* 0:4321 0660 */
DEFINE_BPF_MAP_UGM(acc_owned, ARRAY, int, uint32_t, 4, OWNER_UID, 0, 0600);
DEFINE_BPF_MAP_EXT(acc_sub_gro, ARRAY, int, uint32_t, 4, 0, 0, READER_GID, 0640, "", "acc_sub",
                   false, KVER_NONE, KVER_INF, BPFLOADER_MIN_VER, BPFLOADER_MAX_VER, 0);

DEFINE_BPF_PROG("tracepoint/sched/sched_process_free", 0, READER_GID, acc_prog)
(void *ctx) {
    int key = 3;
    uint32_t v = 1;
    bpf_acc_gro_update_elem(&key, &v, BPF_ANY);
    bpf_acc_grw_update_elem(&key, &v, BPF_ANY);
    bpf_acc_owned_update_elem(&key, &v, BPF_ANY);
    bpf_acc_sub_gro_update_elem(&key, &v, BPF_ANY);
    return 1;
}

LICENSE("GPL");
