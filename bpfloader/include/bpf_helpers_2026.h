/*
 * bpf_helpers_2026.h: Android's 2026 object format, which bpf_helpers.h emits instead of the
 * classic one where BPFLOADER_ANDROID_2026 is defined before it is included. Layout-compatible
 * with Android's 2026 headers (bpf_map_def.h and bpf_helpers.h of its Connectivity module):
 *
 *   .android_maps   struct bpf_map_def, 192 bytes: the map's whole pin path and its owner
 *   .android_progs  struct bpf_prog_def, 180 bytes: the program's type and whole pin path
 *   .maps           each map again, as libbpf defines it (BTF: compile with -g)
 *   TYPE/NAME$VER   each program's code; its function TYPE_NAME_VER, its def TYPE_NAME_VER_def
 *
 * Before including bpf_helpers.h, an object defines
 *   BPF_OBJ_NAME            "name": the OBJ of its pins, map_OBJ_NAME and prog_OBJ_TYPE_NAME
 * and may define
 *   DEFAULT_BPF_PIN_SUBDIR  the directory of its pins under the pin root (default: the root)
 *   BPFLOADER_MIN_API, BPFLOADER_MAX_API   the Android API levels it loads on (default: any)
 *
 *   DEFINE_BPF_MAP(name, TYPE, KeyType, ValueType, max_entries)   and _RO, _GWO, _GRO, _GRW,
 *   _UGM, DEFINE_BPF_SK_STORAGE, DEFINE_BPF_RINGBUF: as in the classic format
 *   DEFINE_BPF_MAP_EXT(name, TYPE, K, V, entries, flags, uid, gid, mode, selinux, pindir,
 *                      min_kver, max_kver, min_api, max_api)
 *
 *   DEFINE_BPF_PROG(TYPE, NAME, VER, uid, gid)(args) { ... }      TYPE: Android's (below)
 *   DEFINE_OPTIONAL_BPF_PROG, DEFINE_BPF_PROG_KVER(..., min), DEFINE_BPF_PROG_KVER_RANGE(...,
 *   min, max), DEFINE_BPF_PROG_EXT(TYPE, NAME, VER, uid, gid, min_kver, max_kver, min_api,
 *   max_api, optional, selinux, pindir)
 *
 * A program's `$VER` tells its variants apart: variants of one TYPE/NAME share one pin, and the
 * first (in section order) whose kernel and API ranges hold is pinned.
 */
#pragma once

#ifndef BPF_OBJ_NAME
#error "define BPF_OBJ_NAME (the object's name in its pins) before including bpf_helpers.h"
#endif
#ifndef DEFAULT_BPF_PIN_SUBDIR
#define DEFAULT_BPF_PIN_SUBDIR ""
#endif

/* Android's API levels (api_level_full): a def applies where min <= level < max. */
#define BPFLOADER_API_S 3100
#define BPFLOADER_API_T 3300
#define BPFLOADER_API_U 3400
#define BPFLOADER_API_V 3500
#define BPFLOADER_API_25Q2 3600
#define BPFLOADER_API_25Q4 3610
#define BPFLOADER_API_26Q2 3700
#define BPFLOADER_API_27Q2 3800
#define BPFLOADER_API_MAX 0x10000
#ifndef BPFLOADER_MIN_API
#define BPFLOADER_MIN_API 0
#endif
#ifndef BPFLOADER_MAX_API
#define BPFLOADER_MAX_API BPFLOADER_API_MAX
#endif

#define BPF_DEF_CHAR_ARRAY_SIZE 70

struct bpf_map_def {
    unsigned int type; /* enum bpf_map_type */
    unsigned int key_size;
    unsigned int value_size;
    unsigned int max_entries;
    unsigned int map_flags;
    unsigned int uid;
    unsigned int gid;
    unsigned int mode;
    int min_api_level_full;
    int max_api_level_full;
    unsigned int min_kver;
    unsigned int max_kver;
    char create_location[BPF_DEF_CHAR_ARRAY_SIZE];
    char pin_location[BPF_DEF_CHAR_ARRAY_SIZE];
    unsigned int name_idx; /* the map's name: pin_location + name_idx */
};

struct bpf_prog_def {
    unsigned int type;        /* enum bpf_prog_type */
    unsigned int attach_type; /* enum bpf_attach_type */
    unsigned int uid;
    unsigned int gid;
    unsigned int min_kver;
    unsigned int max_kver;
    bool optional;
    char pad0[3];
    int min_api_level_full;
    int max_api_level_full;
    char create_location[BPF_DEF_CHAR_ARRAY_SIZE];
    char pin_location[BPF_DEF_CHAR_ARRAY_SIZE];
    unsigned int name_idx; /* the program's name, TYPE_NAME: pin_location + name_idx */
};

_Static_assert(sizeof(struct bpf_map_def) == 192, "bpf_map_def must be 192 bytes");
_Static_assert(sizeof(struct bpf_prog_def) == 180, "bpf_prog_def must be 180 bytes");

/* Android's program TYPEs: the program type and expected attach type of each. */
#define BPF_PROG_TYPE_bind4 BPF_PROG_TYPE_CGROUP_SOCK_ADDR
#define BPF_PROG_ATTACH_TYPE_bind4 BPF_CGROUP_INET4_BIND
#define BPF_PROG_TYPE_bind6 BPF_PROG_TYPE_CGROUP_SOCK_ADDR
#define BPF_PROG_ATTACH_TYPE_bind6 BPF_CGROUP_INET6_BIND
#define BPF_PROG_TYPE_cgroupsock BPF_PROG_TYPE_CGROUP_SOCK
#define BPF_PROG_ATTACH_TYPE_cgroupsock BPF_CGROUP_INET_SOCK_CREATE
#define BPF_PROG_TYPE_cgroupsockcreate BPF_PROG_TYPE_CGROUP_SOCK
#define BPF_PROG_ATTACH_TYPE_cgroupsockcreate BPF_CGROUP_INET_SOCK_CREATE
#define BPF_PROG_TYPE_cgroupsockrelease BPF_PROG_TYPE_CGROUP_SOCK
#define BPF_PROG_ATTACH_TYPE_cgroupsockrelease BPF_CGROUP_INET_SOCK_RELEASE
#define BPF_PROG_TYPE_connect4 BPF_PROG_TYPE_CGROUP_SOCK_ADDR
#define BPF_PROG_ATTACH_TYPE_connect4 BPF_CGROUP_INET4_CONNECT
#define BPF_PROG_TYPE_connect6 BPF_PROG_TYPE_CGROUP_SOCK_ADDR
#define BPF_PROG_ATTACH_TYPE_connect6 BPF_CGROUP_INET6_CONNECT
#define BPF_PROG_TYPE_egress BPF_PROG_TYPE_CGROUP_SKB
#define BPF_PROG_ATTACH_TYPE_egress BPF_CGROUP_INET_EGRESS
#define BPF_PROG_TYPE_ingress BPF_PROG_TYPE_CGROUP_SKB
#define BPF_PROG_ATTACH_TYPE_ingress BPF_CGROUP_INET_INGRESS
#define BPF_PROG_TYPE_getsockopt BPF_PROG_TYPE_CGROUP_SOCKOPT
#define BPF_PROG_ATTACH_TYPE_getsockopt BPF_CGROUP_GETSOCKOPT
#define BPF_PROG_TYPE_setsockopt BPF_PROG_TYPE_CGROUP_SOCKOPT
#define BPF_PROG_ATTACH_TYPE_setsockopt BPF_CGROUP_SETSOCKOPT
#define BPF_PROG_TYPE_postbind4 BPF_PROG_TYPE_CGROUP_SOCK
#define BPF_PROG_ATTACH_TYPE_postbind4 BPF_CGROUP_INET4_POST_BIND
#define BPF_PROG_TYPE_postbind6 BPF_PROG_TYPE_CGROUP_SOCK
#define BPF_PROG_ATTACH_TYPE_postbind6 BPF_CGROUP_INET6_POST_BIND
#define BPF_PROG_TYPE_recvmsg4 BPF_PROG_TYPE_CGROUP_SOCK_ADDR
#define BPF_PROG_ATTACH_TYPE_recvmsg4 BPF_CGROUP_UDP4_RECVMSG
#define BPF_PROG_TYPE_recvmsg6 BPF_PROG_TYPE_CGROUP_SOCK_ADDR
#define BPF_PROG_ATTACH_TYPE_recvmsg6 BPF_CGROUP_UDP6_RECVMSG
#define BPF_PROG_TYPE_sendmsg4 BPF_PROG_TYPE_CGROUP_SOCK_ADDR
#define BPF_PROG_ATTACH_TYPE_sendmsg4 BPF_CGROUP_UDP4_SENDMSG
#define BPF_PROG_TYPE_sendmsg6 BPF_PROG_TYPE_CGROUP_SOCK_ADDR
#define BPF_PROG_ATTACH_TYPE_sendmsg6 BPF_CGROUP_UDP6_SENDMSG
#define BPF_PROG_TYPE_schedact BPF_PROG_TYPE_SCHED_ACT
#define BPF_PROG_ATTACH_TYPE_schedact 0
#define BPF_PROG_TYPE_schedcls BPF_PROG_TYPE_SCHED_CLS
#define BPF_PROG_ATTACH_TYPE_schedcls 0
#define BPF_PROG_TYPE_skfilter BPF_PROG_TYPE_SOCKET_FILTER
#define BPF_PROG_ATTACH_TYPE_skfilter 0
#define BPF_PROG_TYPE_sockops BPF_PROG_TYPE_SOCK_OPS
#define BPF_PROG_ATTACH_TYPE_sockops BPF_CGROUP_SOCK_OPS
#define BPF_PROG_TYPE_sysctl BPF_PROG_TYPE_CGROUP_SYSCTL
#define BPF_PROG_ATTACH_TYPE_sysctl BPF_CGROUP_SYSCTL
#define BPF_PROG_TYPE_xdp BPF_PROG_TYPE_XDP
#define BPF_PROG_ATTACH_TYPE_xdp 0

/* libbpf's way of declaring a map in .maps, with its types in the BTF. */
#ifndef __uint
#define __uint(name, val) int(*name)[val]
#endif
#ifndef __type
#define __type(name, val) typeof(val) *name
#endif

#define BPF_PIN_LOCATION(pindir, kind) "/sys/fs/bpf/" pindir "/" kind "_" BPF_OBJ_NAME "_"
/* Where Android pins first to give the pin its SELinux context: "" for none. */
#define BPF_CREATE_LOCATION(selinux) \
    __builtin_choose_expr(sizeof(selinux) == 1, "", "/sys/fs/bpf/" selinux "/tmp")

#define DEFINE_BPF_MAP_DEF_2026(the_map, TYPE, key_bytes, value_bytes, num_entries, mapflags, \
                                usr, grp, md, selinux, pindir, minkver, maxkver, minapi, maxapi) \
    const struct bpf_map_def SECTION(".android_maps") the_map##_def = {                          \
        .type = BPF_MAP_TYPE_##TYPE,                                                             \
        .key_size = (key_bytes),                                                                 \
        .value_size = (value_bytes),                                                             \
        .max_entries = (num_entries),                                                            \
        .map_flags = (mapflags),                                                                 \
        .uid = (usr),                                                                            \
        .gid = (grp),                                                                            \
        .mode = (md),                                                                            \
        .min_api_level_full = (minapi),                                                          \
        .max_api_level_full = (maxapi),                                                          \
        .min_kver = (minkver),                                                                   \
        .max_kver = (maxkver),                                                                   \
        .create_location = BPF_CREATE_LOCATION(selinux),                                         \
        .pin_location = BPF_PIN_LOCATION(pindir, "map") #the_map,                                \
        .name_idx = sizeof(BPF_PIN_LOCATION(pindir, "map")) - 1,                                 \
    }

#define DEFINE_BPF_MAP_EXT(the_map, TYPE, KeyType, ValueType, num_entries, mapflags, usr, grp,  \
                           md, selinux, pindir, minkver, maxkver, minapi, maxapi)                \
    struct {                                                                                     \
        __uint(type, BPF_MAP_TYPE_##TYPE);                                                       \
        __uint(map_flags, mapflags);                                                             \
        __type(key, KeyType);                                                                    \
        __type(value, ValueType);                                                                \
        __uint(max_entries, num_entries);                                                        \
    } the_map SECTION(".maps");                                                                  \
    DEFINE_BPF_MAP_DEF_2026(the_map, TYPE, sizeof(KeyType), sizeof(ValueType), num_entries,      \
                            mapflags, usr, grp, md, selinux, pindir, minkver, maxkver, minapi,   \
                            maxapi);                                                             \
    BPF_ANNOTATE_KV_PAIR(the_map, KeyType, ValueType);                                           \
    BPF_MAP_ACCESSORS(the_map, KeyType, ValueType)

#define DEFINE_BPF_MAP_KVER_UGM(the_map, TYPE, K, V, n, minkver, maxkver, usr, grp, md)          \
    DEFINE_BPF_MAP_EXT(the_map, TYPE, K, V, n, 0, usr, grp, md, "", DEFAULT_BPF_PIN_SUBDIR,      \
                       minkver, maxkver, BPFLOADER_MIN_API, BPFLOADER_MAX_API)

#define DEFINE_BPF_SK_STORAGE(the_map, ValueType, usr, grp, md)                                  \
    DEFINE_BPF_MAP_EXT(the_map, SK_STORAGE, int, ValueType, 0, BPF_F_NO_PREALLOC, usr, grp, md,  \
                       "", DEFAULT_BPF_PIN_SUBDIR, KVER_NONE, KVER_INF, BPFLOADER_MIN_API,       \
                       BPFLOADER_MAX_API)                                                        \
    BPF_SK_STORAGE_ACCESSORS(the_map, ValueType)

#define DEFINE_BPF_RINGBUF(the_map, ValueType, size_bytes, usr, grp, md)                          \
    struct {                                                                                     \
        __uint(type, BPF_MAP_TYPE_RINGBUF);                                                      \
        __uint(max_entries, size_bytes);                                                         \
    } the_map SECTION(".maps");                                                                  \
    DEFINE_BPF_MAP_DEF_2026(the_map, RINGBUF, 0, 0, size_bytes, 0, usr, grp, md, "",             \
                            DEFAULT_BPF_PIN_SUBDIR, KVER_NONE, KVER_INF, BPFLOADER_MIN_API,      \
                            BPFLOADER_MAX_API);                                                  \
    BPF_RINGBUF_ACCESSORS(the_map, ValueType, size_bytes)

#define DEFINE_BPF_PROG_EXT(TYPE, NAME, VER, prog_uid, prog_gid, min_kv, max_kv, min_api,         \
                            max_api, opt, selinux, pindir)                                       \
    const struct bpf_prog_def SECTION(".android_progs") TYPE##_##NAME##_##VER##_def = {          \
        .type = BPF_PROG_TYPE_##TYPE,                                                            \
        .attach_type = BPF_PROG_ATTACH_TYPE_##TYPE,                                              \
        .uid = (prog_uid),                                                                       \
        .gid = (prog_gid),                                                                       \
        .min_kver = (min_kv),                                                                    \
        .max_kver = (max_kv),                                                                    \
        .optional = (opt),                                                                       \
        .min_api_level_full = (min_api),                                                         \
        .max_api_level_full = (max_api),                                                         \
        .create_location = BPF_CREATE_LOCATION(selinux),                                         \
        .pin_location = BPF_PIN_LOCATION(pindir, "prog") #TYPE "_" #NAME,                        \
        .name_idx = sizeof(BPF_PIN_LOCATION(pindir, "prog")) - 1,                                \
    };                                                                                           \
    SECTION(#TYPE "/" #NAME "$" #VER) int TYPE##_##NAME##_##VER

#define DEFINE_BPF_PROG_KVER_RANGE_OPT(TYPE, NAME, VER, uid, gid, min_kv, max_kv, opt)           \
    DEFINE_BPF_PROG_EXT(TYPE, NAME, VER, uid, gid, min_kv, max_kv, BPFLOADER_MIN_API,            \
                        BPFLOADER_MAX_API, opt, "", DEFAULT_BPF_PIN_SUBDIR)
#define DEFINE_BPF_PROG_KVER_RANGE(TYPE, NAME, VER, uid, gid, min_kv, max_kv) \
    DEFINE_BPF_PROG_KVER_RANGE_OPT(TYPE, NAME, VER, uid, gid, min_kv, max_kv, false)
#define DEFINE_BPF_PROG_KVER(TYPE, NAME, VER, uid, gid, min_kv) \
    DEFINE_BPF_PROG_KVER_RANGE(TYPE, NAME, VER, uid, gid, min_kv, KVER_INF)
#define DEFINE_BPF_PROG(TYPE, NAME, VER, uid, gid) \
    DEFINE_BPF_PROG_KVER(TYPE, NAME, VER, uid, gid, KVER_NONE)
#define DEFINE_OPTIONAL_BPF_PROG(TYPE, NAME, VER, uid, gid) \
    DEFINE_BPF_PROG_KVER_RANGE_OPT(TYPE, NAME, VER, uid, gid, KVER_NONE, KVER_INF, true)
