/*
 * Maps of every common type for the client's tests, readable by group 4321 (mode 0640), and a
 * program that counts sys_enter_getpgid calls of one process per CPU in a per-CPU array.
 */
#include <bpf_helpers.h>

#define READER_GID 4321

struct lpm_v4_key {
    uint32_t prefixlen;
    uint8_t addr[4];
};

DEFINE_BPF_MAP_GRO(hash, HASH, uint32_t, uint64_t, 4096, READER_GID);
DEFINE_BPF_MAP_GRO(array, ARRAY, uint32_t, uint64_t, 16, READER_GID);
DEFINE_BPF_MAP_GRO(percpu_hash, PERCPU_HASH, uint32_t, uint32_t, 64, READER_GID);
DEFINE_BPF_MAP_GRO(percpu_calls, PERCPU_ARRAY, uint32_t, uint64_t, 1, READER_GID);
DEFINE_BPF_MAP_GRO(lru, LRU_HASH, uint32_t, uint32_t, 64, READER_GID);
DEFINE_BPF_MAP_EXT(lpm, LPM_TRIE, struct lpm_v4_key, uint32_t, 64, BPF_F_NO_PREALLOC, AID_ROOT,
                   READER_GID, 0640, "", "", false, KVER_NONE, KVER_INF, BPFLOADER_MIN_VER,
                   BPFLOADER_MAX_VER, 0);
DEFINE_BPF_MAP(watched_tgid, ARRAY, uint32_t, uint32_t, 1);

DEFINE_BPF_PROG("tracepoint/syscalls/sys_enter_getpgid", AID_ROOT, AID_ROOT, count_getpgid)
(void *ctx) {
    uint32_t zero = 0;
    uint32_t *tgid = bpf_watched_tgid_lookup_elem(&zero);
    if (!tgid || *tgid != bpf_get_current_pid_tgid() >> 32) return 0;
    uint64_t *calls = bpf_percpu_calls_lookup_elem(&zero);
    if (calls) *calls += 1; /* this CPU's own slot: no other CPU writes it */
    return 0;
}

LICENSE("GPL");
