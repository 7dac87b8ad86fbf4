/*
 * Bad input: two mandatory programs sharing a map (pinned in its own pin_subdir); the first
 * loads, the second is refused by the verifier. All or nothing: neither the first program's
 * pin, nor the map, nor the map's directory may remain.
 */
#include <bpf_helpers.h>

DEFINE_BPF_MAP_EXT(shared_count, ARRAY, int, int, 1, 0, AID_ROOT, AID_ROOT, 0600, "",
                   "second_prog_dir", false, KVER_NONE, KVER_INF, BPFLOADER_MIN_VER,
                   BPFLOADER_MAX_VER, 0);

DEFINE_BPF_PROG("tracepoint/sched/sched_switch", AID_ROOT, AID_ROOT, first_ok)
(void *ctx) {
    int key = 0;
    int *v = bpf_shared_count_lookup_elem(&key);
    if (v) __sync_fetch_and_add(v, 1);
    return 1;
}

DEFINE_BPF_PROG("tracepoint/sched/sched_wakeup", AID_ROOT, AID_ROOT, second_bad)
(void *ctx) {
    int key = 0;
    int *v = bpf_shared_count_lookup_elem(&key);
    if (!v) return 0;
    return v[1]; /* value_size is 4: offset 4 is past the end */
}

LICENSE("GPL");
