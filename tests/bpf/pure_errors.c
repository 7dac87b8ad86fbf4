/*
 * Pure reader test: objects the reader must refuse, one per flag:
 *   -DNO_LICENSE        no "license" section
 *   -DUNKNOWN_PREFIX    a code section named "bogus/thing"
 *   -DEXTERN_MAP        a program using a map that no section defines (an undefined symbol)
 *   -DTEXT_CALL=        a bpf-to-bpf call into a noinline global function in .text
 *   -DTEXT_CALL=static  the same call into a static function (relocated against .text itself)
 *   -DMAKE_CRITICAL     CRITICAL(...), so that a failure is a critical one
 * Without flags it is a valid object (whose bytes tests patch).
 */
#include <bpf_helpers.h>

DEFINE_BPF_MAP(good_map, ARRAY, int, int, 4);
DEFINE_BPF_MAP(other_map, HASH, int, long, 4);

#ifdef EXTERN_MAP
extern const struct bpf_map_def missing_map;
#endif

#ifdef TEXT_CALL
TEXT_CALL __attribute__((noinline)) int helper_in_text(int x) {
    return x * 3 + 1;
}
#endif

DEFINE_BPF_PROG("tracepoint/sched/sched_switch", 0, 0, prog_main)
(void *ctx) {
    int key = 0;
    int *v = bpf_good_map_lookup_elem(&key);
    if (v) return *v;
    long *o = bpf_other_map_lookup_elem(&key);
#ifdef EXTERN_MAP
    int *m = bpf_map_lookup_elem_unsafe(&missing_map, &key);
    if (m) return *m;
#endif
#ifdef TEXT_CALL
    return helper_in_text(o ? (int)*o : 2);
#else
    return o ? (int)*o : 0;
#endif
}

#ifdef UNKNOWN_PREFIX
SECTION("bogus/thing")
int bogus(void *ctx) {
    return 0;
}
#endif

#ifndef NO_LICENSE
LICENSE("GPL");
#endif
#ifdef MAKE_CRITICAL
CRITICAL("pure errors test");
#endif
