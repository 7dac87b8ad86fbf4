/*
 * One source, two builds, as Android's Connectivity module builds dscpPolicy.o and
 * dscpPolicy@funcs.o: plain, everything inlined; with -DBPF_USE_FUNCS, a subprogram of its
 * own in .text and a bpf_for_each_map_elem callback. Both pin the same paths
 * (tests/loader/test_android_2026.py: one of the two loads, by Android's rule).
 */
#define BPFLOADER_ANDROID_2026
#define BPF_OBJ_NAME "twin"
#define DEFAULT_BPF_PIN_SUBDIR "tethering"
#include <bpf_helpers.h>

#ifdef BPF_USE_FUNCS
#define PROCEDURE static __attribute__((noinline))
#else
#define PROCEDURE static __always_inline
#endif

static long (*bpf_for_each_map_elem)(void *map, void *callback, void *ctx,
                                     unsigned long long flags) = (void *)BPF_FUNC_for_each_map_elem;

DEFINE_BPF_MAP_GRW(totals, ARRAY, uint32_t, uint64_t, 4, 1073)

PROCEDURE int add(uint32_t key, uint64_t amount)
{
    uint64_t *value = bpf_totals_lookup_elem(&key);

    if (value)
        __sync_fetch_and_add(value, amount);
    return 0;
}

#ifdef BPF_USE_FUNCS
static long sum_one(void *map, uint32_t *key, uint64_t *value, uint64_t *sum)
{
    *sum += *value;
    return 0;
}
#endif

DEFINE_BPF_PROG(skfilter, tally, 5_4, AID_ROOT, 1073)(struct __sk_buff *skb)
{
    uint64_t sum = 0;

    add(0, skb->len);
#ifdef BPF_USE_FUNCS
    bpf_for_each_map_elem(&totals, sum_one, &sum, 0);
    add(1, sum);
#endif
    return 0;
}

LICENSE("Apache 2.0");
