/*
 * Kernel tests: Android-format maps that need their BTF key and value types, one per build:
 *   -DSK_STORAGE  a SK_STORAGE map (the kernel makes none without BTF)
 *   -DSPIN_LOCK   a HASH whose value holds a struct bpf_spin_lock, which the program takes
 *   -DTIMER       an ARRAY whose value holds a struct bpf_timer, which the program initialises
 * plus, in each, a plain ARRAY whose types are given too. Built with -g (and, as Android builds,
 * stripped of .BTF.ext) each loads; built without BTF each fails on one line naming the map.
 */
#include <bpf_helpers.h>

#define CLOCK_MONOTONIC 1

struct counted {
    unsigned long long packets;
    unsigned int last_len;
};

DEFINE_BPF_MAP(plain_counts, ARRAY, unsigned int, struct counted, 2);

#ifdef SK_STORAGE
DEFINE_BPF_SK_STORAGE(sock_seen, struct counted, 0, 0, 0600);

DEFINE_BPF_PROG("schedcls/storage", 0, 0, storage)(struct __sk_buff *skb) {
    struct bpf_sock *sk = skb->sk;
    if (!sk) return 0;
    sk = bpf_sk_fullsock(sk);
    if (!sk) return 0;
    struct counted *seen = bpf_sock_seen_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
    if (seen) seen->packets++;
    return 0;
}
#endif

#ifdef SPIN_LOCK
struct locked {
    struct bpf_spin_lock lock;
    unsigned long long packets;
};
DEFINE_BPF_MAP(locked_counts, HASH, unsigned int, struct locked, 16);

DEFINE_BPF_PROG("schedcls/locked", 0, 0, locked)(struct __sk_buff *skb) {
    unsigned int key = skb->protocol;
    struct locked *value = bpf_locked_counts_lookup_elem(&key);
    if (!value) return 0;
    bpf_spin_lock(&value->lock);
    value->packets++;
    bpf_spin_unlock(&value->lock);
    return 0;
}
#endif

#ifdef TIMER
struct timed {
    struct bpf_timer timer;
    unsigned long long fired;
};
DEFINE_BPF_MAP(timers, ARRAY, unsigned int, struct timed, 1);

DEFINE_BPF_PROG("schedcls/timed", 0, 0, timed)(struct __sk_buff *skb) {
    unsigned int key = 0;
    struct timed *value = bpf_timers_lookup_elem(&key);
    if (!value) return 0;
    /* Only initialised: a callback would be a bpf-to-bpf function, which Android's classic
     * format cannot hold; initialising it is what needs the map's BTF. */
    bpf_timer_init(&value->timer, &timers, CLOCK_MONOTONIC);
    return 0;
}
#endif

DEFINE_BPF_PROG("schedcls/plain", 0, 0, plain)(struct __sk_buff *skb) {
    unsigned int key = 0;
    struct counted *value = bpf_plain_counts_lookup_elem(&key);
    if (value) value->last_len = skb->len;
    return 0;
}

LICENSE("GPL");
