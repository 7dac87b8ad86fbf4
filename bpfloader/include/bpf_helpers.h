/*
 * bpf_helpers.h: write BPF programs for bpfloader.
 *
 * The sections and structs below are layout-compatible with Android's bpfloader, so objects
 * built with either header load with either loader. Compile with the flags from
 * `bpfloader cflags`, or with `bpfloader build prog.c`.
 *
 *   DEFINE_BPF_MAP(name, TYPE, KeyType, ValueType, max_entries)       root:root 0600
 *   DEFINE_BPF_MAP_RO / _GWO / _GRO / _GRW(..., gid)                  root:gid 0440/0620/0640/0660
 *   DEFINE_BPF_MAP_UGM(..., uid, gid, mode)                           explicit owner and mode
 *   DEFINE_BPF_SHARED_MAP_UGM(..., uid, gid, mode)                    pinned as map__NAME
 *   DEFINE_BPF_MAP_EXT(...)                                           every field
 *   DEFINE_BPF_SK_STORAGE(name, ValueType, uid, gid, mode)            per-socket storage
 *
 * Every map is also annotated with its key and value types (BPF_ANNOTATE_KV_PAIR, as Android's
 * header does): compiled with -g (`bpfloader build` does), the loader gives the kernel those
 * BTF types, which maps holding a struct bpf_spin_lock or bpf_timer and local storage need.
 *
 *   DEFINE_BPF_PROG("tracepoint/sched/sched_switch", uid, gid, func)(args) { ... }
 *   DEFINE_OPTIONAL_BPF_PROG, DEFINE_BPF_PROG_KVER(..., min), DEFINE_BPF_PROG_KVER_RANGE(..., min, max)
 *   DEFINE_BPF_PROG_EXT(...)                                          every field
 *
 *   LICENSE("GPL");  CRITICAL("why this object must load");
 *
 * Each map NAME also gets typed accessors: bpf_NAME_lookup_elem(&key),
 * bpf_NAME_update_elem(&key, &value, flags), bpf_NAME_delete_elem(&key).
 *
 * This emits Android's classic format (the `maps` and `progs` sections), which every Android
 * loader since 2021 and this one read. `#define BPFLOADER_ANDROID_2026` before including it
 * emits Android's 2026 format instead (bpf_helpers_2026.h says how): whole pin paths compiled
 * in, for objects that must pin where Android's newest loader pins.
 */
#pragma once

#include <linux/bpf.h>
#include <stdbool.h>
#include <stdint.h>

#define SECTION(NAME) __attribute__((section(NAME), used))
#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif
#ifndef __unused
#define __unused __attribute__((unused))
#endif

/* ---- versions ---------------------------------------------------------------------------- */

#define KVER_NONE 0u
#define KVER(a, b, c) (((a) << 24) + ((b) << 16) + (c))
#define KVER_INF 0xFFFFFFFFu

/* The object loads only where BPFLOADER_MIN_VER <= loader version < BPFLOADER_MAX_VER. */
#define DEFAULT_BPFLOADER_MIN_VER 0u
#define DEFAULT_BPFLOADER_MAX_VER 0x10000u
#ifndef BPFLOADER_MIN_VER
#define BPFLOADER_MIN_VER DEFAULT_BPFLOADER_MIN_VER
#endif
#ifndef BPFLOADER_MAX_VER
#define BPFLOADER_MAX_VER DEFAULT_BPFLOADER_MAX_VER
#endif

/* Android ids kept for source compatibility; on Linux pass the numeric uid/gid you mean. */
#define AID_ROOT 0
#define AID_SYSTEM 1000

/* ignore_on_* bits: a def with one of these set is skipped on that build type or arch. */
#define IGNORE_ON_ENG 0x01
#define IGNORE_ON_USER 0x02
#define IGNORE_ON_USERDEBUG 0x04
#define IGNORE_ON_ARM32 0x08
#define IGNORE_ON_AARCH64 0x10
#define IGNORE_ON_X86_32 0x20
#define IGNORE_ON_X86_64 0x40
#define IGNORE_ON_RISCV64 0x80

#ifndef BPFLOADER_ANDROID_2026 /* the classic format; else bpf_helpers_2026.h, at the end */

/* ---- the defs (120 and 92 bytes; the loader also reads older, shorter layouts) ---------- */

struct bpf_map_def {
    unsigned int type; /* enum bpf_map_type */
    unsigned int key_size;
    unsigned int value_size;
    unsigned int max_entries;
    unsigned int map_flags;
    unsigned int zero; /* legacy uid slot: must be 0 (the uid lives at the end) */
    unsigned int gid;
    unsigned int mode;
    unsigned int bpfloader_min_ver;
    unsigned int bpfloader_max_ver;
    unsigned int min_kver;
    unsigned int max_kver;
    char selinux_context[32];
    char pin_subdir[32];
    bool shared;
    unsigned char ignore_on; /* IGNORE_ON_* bits */
    char pad0[2];
    unsigned int uid;
};

struct bpf_prog_def {
    unsigned int uid;
    unsigned int gid;
    unsigned int min_kver;
    unsigned int max_kver;
    bool optional;
    unsigned char ignore_on;
    char pad0[2];
    unsigned int bpfloader_min_ver;
    unsigned int bpfloader_max_ver;
    char selinux_context[32];
    char pin_subdir[32];
};

_Static_assert(sizeof(struct bpf_map_def) == 120, "bpf_map_def must be 120 bytes");
_Static_assert(sizeof(struct bpf_prog_def) == 92, "bpf_prog_def must be 92 bytes");

/* Object-wide sections the loader reads. */
unsigned int _bpfloader_min_ver SECTION("bpfloader_min_ver") = BPFLOADER_MIN_VER;
unsigned int _bpfloader_max_ver SECTION("bpfloader_max_ver") = BPFLOADER_MAX_VER;
unsigned int _size_of_bpf_map_def SECTION("size_of_bpf_map_def") = sizeof(struct bpf_map_def);
unsigned int _size_of_bpf_prog_def SECTION("size_of_bpf_prog_def") = sizeof(struct bpf_prog_def);

#endif

#define LICENSE(NAME) char _license[] SECTION("license") = (NAME)
#define CRITICAL(REASON) char _critical[] SECTION("critical") = (REASON)

/* ---- kernel helpers ---------------------------------------------------------------------- */

static void *(*bpf_map_lookup_elem_unsafe)(const void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_map_update_elem_unsafe)(const void *map, const void *key, const void *value,
                                          unsigned long long flags) = (void *)BPF_FUNC_map_update_elem;
static long (*bpf_map_delete_elem_unsafe)(const void *map, const void *key) = (void *)BPF_FUNC_map_delete_elem;
static long (*bpf_trace_printk)(const char *fmt, unsigned int fmt_size, ...) = (void *)BPF_FUNC_trace_printk;
static unsigned long long (*bpf_ktime_get_ns)(void) = (void *)BPF_FUNC_ktime_get_ns;
static unsigned long long (*bpf_ktime_get_boot_ns)(void) = (void *)BPF_FUNC_ktime_get_boot_ns;
static unsigned int (*bpf_get_smp_processor_id)(void) = (void *)BPF_FUNC_get_smp_processor_id;
static unsigned long long (*bpf_get_current_pid_tgid)(void) = (void *)BPF_FUNC_get_current_pid_tgid;
static unsigned long long (*bpf_get_current_uid_gid)(void) = (void *)BPF_FUNC_get_current_uid_gid;
static long (*bpf_get_current_comm)(void *buf, unsigned int size) = (void *)BPF_FUNC_get_current_comm;
static unsigned long long (*bpf_get_socket_cookie)(void *ctx) = (void *)BPF_FUNC_get_socket_cookie;
static unsigned int (*bpf_get_socket_uid)(struct __sk_buff *skb) = (void *)BPF_FUNC_get_socket_uid;
static long (*bpf_probe_read_kernel)(void *dst, unsigned int size, const void *src) = (void *)BPF_FUNC_probe_read_kernel;
static long (*bpf_probe_read_user)(void *dst, unsigned int size, const void *src) = (void *)BPF_FUNC_probe_read_user;
static long (*bpf_perf_event_output)(void *ctx, const void *map, unsigned long long flags, void *data,
                                     unsigned long long size) = (void *)BPF_FUNC_perf_event_output;
static long (*bpf_ringbuf_output)(const void *ringbuf, void *data, unsigned long long size,
                                  unsigned long long flags) = (void *)BPF_FUNC_ringbuf_output;
static long (*bpf_tail_call_unsafe)(void *ctx, const void *prog_array, unsigned int index) = (void *)BPF_FUNC_tail_call;
static long (*bpf_skb_load_bytes)(const struct __sk_buff *skb, unsigned int offset, void *to,
                                  unsigned int len) = (void *)BPF_FUNC_skb_load_bytes;
/* Bytes from the link (BPF_HDR_START_MAC) or network (BPF_HDR_START_NET) header, whatever the
 * socket type: a UDP socket's filter otherwise sees the datagram from its UDP header on. */
static long (*bpf_skb_load_bytes_relative)(const void *skb, unsigned int offset, void *to,
                                           unsigned int len, unsigned int start_header) = (void *)BPF_FUNC_skb_load_bytes_relative;

/* bpf_printk("fmt", args...): bpf_trace_printk with the format on the stack. */
#define bpf_printk(fmt, ...)                                        \
    ({                                                              \
        char ____fmt[] = fmt;                                       \
        bpf_trace_printk(____fmt, sizeof(____fmt), ##__VA_ARGS__);  \
    })

/* ---- maps -------------------------------------------------------------------------------- */

/* The key and value types of map NAME, read from the object's BTF by the loader: struct
 * ____btf_map_NAME, whose first member has the key's type and second the value's (Android's
 * annotation, byte for byte the same, so objects from either header are typed alike). */
#define BPF_ANNOTATE_KV_PAIR(name, KeyType, ValueType)                                          \
    struct ____btf_map_##name {                                                                  \
        KeyType key;                                                                             \
        ValueType value;                                                                         \
    };                                                                                           \
    struct ____btf_map_##name SECTION(".maps." #name) ____btf_map_##name = {}

/* Typed accessors of map NAME: bpf_NAME_lookup_elem(&key), bpf_NAME_update_elem(&key, &value,
 * flags), bpf_NAME_delete_elem(&key). */
#define BPF_MAP_ACCESSORS(the_map, KeyType, ValueType)                                          \
    static __always_inline __unused ValueType *bpf_##the_map##_lookup_elem(const KeyType *k) {   \
        return bpf_map_lookup_elem_unsafe(&the_map, k);                                          \
    }                                                                                            \
    static __always_inline __unused long bpf_##the_map##_update_elem(                            \
        const KeyType *k, const ValueType *v, unsigned long long f) {                            \
        return bpf_map_update_elem_unsafe(&the_map, k, v, f);                                    \
    }                                                                                            \
    static __always_inline __unused long bpf_##the_map##_delete_elem(const KeyType *k) {         \
        return bpf_map_delete_elem_unsafe(&the_map, k);                                          \
    }

#ifndef BPFLOADER_ANDROID_2026
#define DEFINE_BPF_MAP_EXT(the_map, TYPE, KeyType, ValueType, num_entries, flags, usr, grp, md, \
                           selinux, pindir, share, minkver, maxkver, minloader, maxloader,       \
                           ignore_bits)                                                          \
    const struct bpf_map_def SECTION("maps") the_map = {                                         \
        .type = BPF_MAP_TYPE_##TYPE,                                                             \
        .key_size = sizeof(KeyType),                                                             \
        .value_size = sizeof(ValueType),                                                         \
        .max_entries = (num_entries),                                                            \
        .map_flags = (flags),                                                                    \
        .zero = 0,                                                                               \
        .gid = (grp),                                                                            \
        .mode = (md),                                                                            \
        .bpfloader_min_ver = (minloader),                                                        \
        .bpfloader_max_ver = (maxloader),                                                        \
        .min_kver = (minkver),                                                                   \
        .max_kver = (maxkver),                                                                   \
        .selinux_context = selinux,                                                              \
        .pin_subdir = pindir,                                                                    \
        .shared = (share),                                                                       \
        .ignore_on = (ignore_bits),                                                              \
        .uid = (usr),                                                                            \
    };                                                                                           \
    BPF_ANNOTATE_KV_PAIR(the_map, KeyType, ValueType);                                           \
    BPF_MAP_ACCESSORS(the_map, KeyType, ValueType)

#define DEFINE_BPF_MAP_KVER_UGM(the_map, TYPE, K, V, n, minkver, maxkver, usr, grp, md)          \
    DEFINE_BPF_MAP_EXT(the_map, TYPE, K, V, n, 0, usr, grp, md, "", "", false, minkver, maxkver,  \
                       BPFLOADER_MIN_VER, BPFLOADER_MAX_VER, 0)
#define DEFINE_BPF_SHARED_MAP_UGM(the_map, TYPE, K, V, n, usr, grp, md)                          \
    DEFINE_BPF_MAP_EXT(the_map, TYPE, K, V, n, 0, usr, grp, md, "", "", true, KVER_NONE,          \
                       KVER_INF, BPFLOADER_MIN_VER, BPFLOADER_MAX_VER, 0)
#endif

/* Both formats: each layout defines DEFINE_BPF_MAP_KVER_UGM; these wrappers expand through it. */
#define DEFINE_BPF_MAP_UGM(the_map, TYPE, K, V, n, usr, grp, md) \
    DEFINE_BPF_MAP_KVER_UGM(the_map, TYPE, K, V, n, KVER_NONE, KVER_INF, usr, grp, md)
#define DEFINE_BPF_MAP(the_map, TYPE, K, V, n) \
    DEFINE_BPF_MAP_UGM(the_map, TYPE, K, V, n, AID_ROOT, AID_ROOT, 0600)
#define DEFINE_BPF_MAP_RO(the_map, TYPE, K, V, n, gid) \
    DEFINE_BPF_MAP_UGM(the_map, TYPE, K, V, n, AID_ROOT, gid, 0440)
#define DEFINE_BPF_MAP_GWO(the_map, TYPE, K, V, n, gid) \
    DEFINE_BPF_MAP_UGM(the_map, TYPE, K, V, n, AID_ROOT, gid, 0620)
#define DEFINE_BPF_MAP_GRO(the_map, TYPE, K, V, n, gid) \
    DEFINE_BPF_MAP_UGM(the_map, TYPE, K, V, n, AID_ROOT, gid, 0640)
#define DEFINE_BPF_MAP_GRW(the_map, TYPE, K, V, n, gid) \
    DEFINE_BPF_MAP_UGM(the_map, TYPE, K, V, n, AID_ROOT, gid, 0660)

/* ---- local storage, spin locks, timers ----------------------------------------------------- */

static void *(*bpf_sk_storage_get)(const void *map, void *sk, void *value,
                                   unsigned long long flags) = (void *)BPF_FUNC_sk_storage_get;
static long (*bpf_sk_storage_delete)(const void *map, void *sk) = (void *)BPF_FUNC_sk_storage_delete;
static struct bpf_sock *(*bpf_sk_fullsock)(struct bpf_sock *sk) = (void *)BPF_FUNC_sk_fullsock;
static long (*bpf_spin_lock)(struct bpf_spin_lock *lock) = (void *)BPF_FUNC_spin_lock;
static long (*bpf_spin_unlock)(struct bpf_spin_lock *lock) = (void *)BPF_FUNC_spin_unlock;
static long (*bpf_timer_init)(struct bpf_timer *timer, const void *map,
                              unsigned long long flags) = (void *)BPF_FUNC_timer_init;
static long (*bpf_timer_set_callback)(struct bpf_timer *timer, void *callback) = (void *)BPF_FUNC_timer_set_callback;
static long (*bpf_timer_start)(struct bpf_timer *timer, unsigned long long nsecs,
                               unsigned long long flags) = (void *)BPF_FUNC_timer_start;
static long (*bpf_timer_cancel)(struct bpf_timer *timer) = (void *)BPF_FUNC_timer_cancel;

/*
 * DEFINE_BPF_SK_STORAGE(name, ValueType, uid, gid, mode): a BPF_MAP_TYPE_SK_STORAGE holding one
 * ValueType per socket (the kernel makes it only with BTF types: compile with -g). Accessors:
 * bpf_NAME_get(sk, init, flags) -> ValueType * (BPF_SK_STORAGE_GET_F_CREATE makes one from
 * `init`, or zeroes when NULL), bpf_NAME_delete(sk). The other local storages (INODE_STORAGE,
 * TASK_STORAGE, CGRP_STORAGE) are DEFINE_BPF_MAP_EXT maps the same way: key int, 0 entries,
 * flags BPF_F_NO_PREALLOC.
 */
#define BPF_SK_STORAGE_ACCESSORS(the_map, ValueType)                                            \
    static __always_inline __unused ValueType *bpf_##the_map##_get(void *sk, ValueType *init,    \
                                                                   unsigned long long flags) {   \
        return bpf_sk_storage_get(&the_map, sk, init, flags);                                    \
    }                                                                                            \
    static __always_inline __unused long bpf_##the_map##_delete(void *sk) {                      \
        return bpf_sk_storage_delete(&the_map, sk);                                              \
    }
#ifndef BPFLOADER_ANDROID_2026
#define DEFINE_BPF_SK_STORAGE(the_map, ValueType, usr, grp, md)                                  \
    DEFINE_BPF_MAP_EXT(the_map, SK_STORAGE, int, ValueType, 0, BPF_F_NO_PREALLOC, usr, grp, md,  \
                       "", "", false, KVER_NONE, KVER_INF, BPFLOADER_MIN_VER, BPFLOADER_MAX_VER, \
                       0)                                                                        \
    BPF_SK_STORAGE_ACCESSORS(the_map, ValueType)
#endif

/* ---- programs ---------------------------------------------------------------------------- */

#ifndef BPFLOADER_ANDROID_2026
#define DEFINE_BPF_PROG_EXT(SECTION_NAME, prog_uid, prog_gid, the_prog, min_kv, max_kv,          \
                            min_loader, max_loader, opt, selinux, pindir, ignore_bits)           \
    const struct bpf_prog_def SECTION("progs") the_prog##_def = {                                \
        .uid = (prog_uid),                                                                       \
        .gid = (prog_gid),                                                                       \
        .min_kver = (min_kv),                                                                    \
        .max_kver = (max_kv),                                                                    \
        .optional = (opt),                                                                       \
        .ignore_on = (ignore_bits),                                                              \
        .bpfloader_min_ver = (min_loader),                                                       \
        .bpfloader_max_ver = (max_loader),                                                       \
        .selinux_context = selinux,                                                              \
        .pin_subdir = pindir,                                                                    \
    };                                                                                           \
    SECTION(SECTION_NAME) int the_prog

#define DEFINE_BPF_PROG_KVER_RANGE_OPT(SECTION_NAME, uid, gid, the_prog, min_kv, max_kv, opt)    \
    DEFINE_BPF_PROG_EXT(SECTION_NAME, uid, gid, the_prog, min_kv, max_kv, BPFLOADER_MIN_VER,     \
                        BPFLOADER_MAX_VER, opt, "", "", 0)
#define DEFINE_BPF_PROG_KVER_RANGE(SECTION_NAME, uid, gid, the_prog, min_kv, max_kv) \
    DEFINE_BPF_PROG_KVER_RANGE_OPT(SECTION_NAME, uid, gid, the_prog, min_kv, max_kv, false)
#define DEFINE_BPF_PROG_KVER(SECTION_NAME, uid, gid, the_prog, min_kv) \
    DEFINE_BPF_PROG_KVER_RANGE(SECTION_NAME, uid, gid, the_prog, min_kv, KVER_INF)
#define DEFINE_BPF_PROG(SECTION_NAME, uid, gid, the_prog) \
    DEFINE_BPF_PROG_KVER(SECTION_NAME, uid, gid, the_prog, KVER_NONE)
#define DEFINE_OPTIONAL_BPF_PROG(SECTION_NAME, uid, gid, the_prog) \
    DEFINE_BPF_PROG_KVER_RANGE_OPT(SECTION_NAME, uid, gid, the_prog, KVER_NONE, KVER_INF, true)
#define DEFINE_OPTIONAL_BPF_PROG_KVER(SECTION_NAME, uid, gid, the_prog, min_kv) \
    DEFINE_BPF_PROG_KVER_RANGE_OPT(SECTION_NAME, uid, gid, the_prog, min_kv, KVER_INF, true)
#endif

/* ---- more kernel helpers: ring buffers --------------------------------------------------- */

static void *(*bpf_ringbuf_reserve)(const void *ringbuf, unsigned long long size,
                                    unsigned long long flags) = (void *)BPF_FUNC_ringbuf_reserve;
static void (*bpf_ringbuf_submit)(void *data, unsigned long long flags) = (void *)BPF_FUNC_ringbuf_submit;
static void (*bpf_ringbuf_discard)(void *data, unsigned long long flags) = (void *)BPF_FUNC_ringbuf_discard;

/*
 * DEFINE_BPF_RINGBUF(name, ValueType, size_bytes, uid, gid, mode): a BPF_MAP_TYPE_RINGBUF of
 * size_bytes (a power of two, at least a page), read with bpfloader.client.RingBuffer. Typed
 * accessors: bpf_NAME_output(&v), bpf_NAME_reserve() -> ValueType * (or NULL when full),
 * bpf_NAME_submit(v), bpf_NAME_discard(v). The consumer needs read-write access to the pin.
 */
#define BPF_RINGBUF_ACCESSORS(the_map, ValueType, size_bytes)                                  \
    _Static_assert((size_bytes) >= 4096, "a ring buffer holds at least 4096 bytes");            \
    _Static_assert(((size_bytes) & ((size_bytes) - 1)) == 0, "a ring buffer's size: 2^n bytes"); \
    static __always_inline __unused long bpf_##the_map##_output(const ValueType *v) {            \
        return bpf_ringbuf_output(&the_map, (void *)v, sizeof(*v), 0);                           \
    }                                                                                            \
    static __always_inline __unused ValueType *bpf_##the_map##_reserve(void) {                   \
        return bpf_ringbuf_reserve(&the_map, sizeof(ValueType), 0);                              \
    }                                                                                            \
    static __always_inline __unused void bpf_##the_map##_submit(ValueType *v) {                  \
        bpf_ringbuf_submit(v, 0);                                                                \
    }                                                                                            \
    static __always_inline __unused void bpf_##the_map##_discard(ValueType *v) {                 \
        bpf_ringbuf_discard(v, 0);                                                               \
    }
#ifndef BPFLOADER_ANDROID_2026
#define DEFINE_BPF_RINGBUF(the_map, ValueType, size_bytes, usr, grp, md)                          \
    const struct bpf_map_def SECTION("maps") the_map = {                                         \
        .type = BPF_MAP_TYPE_RINGBUF,                                                            \
        .key_size = 0,                                                                           \
        .value_size = 0,                                                                         \
        .max_entries = (size_bytes),                                                             \
        .gid = (grp),                                                                            \
        .mode = (md),                                                                            \
        .bpfloader_min_ver = BPFLOADER_MIN_VER,                                                  \
        .bpfloader_max_ver = BPFLOADER_MAX_VER,                                                  \
        .min_kver = KVER_NONE,                                                                   \
        .max_kver = KVER_INF,                                                                    \
        .uid = (usr),                                                                            \
    };                                                                                           \
    BPF_RINGBUF_ACCESSORS(the_map, ValueType, size_bytes)
#else
#include "bpf_helpers_2026.h"
#endif
