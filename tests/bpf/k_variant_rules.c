/*
 * Kernel tests of Android's rule for `$` variants: code sections are taken in section-header
 * order, and of the variants passing their gates the first one is pinned.
 *
 *   order$new / order$old  both pass; -DOLD_FIRST puts order$old first in the file (clang emits
 *                          sections in the order they are defined), and the first one wins
 *   middle$a/$b/$c         only $b passes (kernel ranges below and above any real kernel)
 *   loader$future / $now   $future asks for a loader version above ours
 *   build$no_ud / $any     $no_ud is ignored on userdebug builds (--build-type userdebug)
 *   fallback$opt / $plain  $opt is optional and the verifier refuses it: $plain takes the pin
 *   optok$opt / $plain     $opt is optional and loads: $plain finds the pin taken
 *
 * Each program returns a distinct number, so a test run (BPF_PROG_TEST_RUN) tells them apart
 * as well as their names do.
 */
#include <bpf_helpers.h>

#define LOADER_ABOVE_OURS 0x1000

#define SKF(section, fn, value)                                                              \
    DEFINE_BPF_PROG(section, 0, 0, fn)                                                       \
    (struct __sk_buff * skb) {                                                               \
        return value;                                                                        \
    }

#ifdef OLD_FIRST
SKF("skfilter/order$old", order_old, 1)
#endif
DEFINE_BPF_PROG_KVER("skfilter/order$new", 0, 0, order_new, KVER(4, 14, 0))
(struct __sk_buff *skb) {
    return 2;
}
#ifndef OLD_FIRST
SKF("skfilter/order$old", order_old, 1)
#endif

DEFINE_BPF_PROG_KVER_RANGE("skfilter/middle$a", 0, 0, middle_a, KVER_NONE, KVER(4, 0, 0))
(struct __sk_buff *skb) {
    return 10;
}
SKF("skfilter/middle$b", middle_b, 11)
DEFINE_BPF_PROG_KVER("skfilter/middle$c", 0, 0, middle_c, KVER(200, 0, 0))
(struct __sk_buff *skb) {
    return 12;
}

DEFINE_BPF_PROG_EXT("skfilter/loader$future", 0, 0, loader_future, KVER_NONE, KVER_INF,
                    LOADER_ABOVE_OURS, 0x10000, false, "", "", 0)
(struct __sk_buff *skb) {
    return 20;
}
SKF("skfilter/loader$now", loader_now, 21)

DEFINE_BPF_PROG_EXT("skfilter/build$no_ud", 0, 0, build_no_ud, KVER_NONE, KVER_INF,
                    BPFLOADER_MIN_VER, BPFLOADER_MAX_VER, false, "", "", IGNORE_ON_USERDEBUG)
(struct __sk_buff *skb) {
    return 30;
}
SKF("skfilter/build$any", build_any, 31)

DEFINE_OPTIONAL_BPF_PROG("skfilter/fallback$opt", 0, 0, fallback_opt)
(struct __sk_buff *skb) {
    /* An out-of-bounds read of the stack: the verifier refuses it. */
    volatile char buf[4] = {};
    return buf[skb->len & 0xff];
}
SKF("skfilter/fallback$plain", fallback_plain, 41)

DEFINE_OPTIONAL_BPF_PROG("skfilter/optok$opt", 0, 0, optok_opt)
(struct __sk_buff *skb) {
    return 50;
}
SKF("skfilter/optok$plain", optok_plain, 51)

LICENSE("GPL");
