/*
 * Pure reader test: map and program defs in the older, shorter layouts (and one longer, future
 * one). Written without bpf_helpers.h, which would declare the current sizes. Compile with
 *   -DMAP_DEF_SIZE=28|32|48|116|120|124  -DPROG_DEF_SIZE=20|28|92|96
 * and optionally -DNO_SIZE_OF (no size_of_* sections), -DSIZE_OF_MAP_DEF=N / -DSIZE_OF_PROG_DEF=N
 * (declare a size other than the real one), -DLEGACY_UID=N (offset 20 of a 120-byte def),
 * -DOBJ_VER_TYPE=T (declare bpfloader_min_ver/max_ver sections of type T).
 */
#include <linux/bpf.h>

#define SECTION(NAME) __attribute__((section(NAME), used))
#define KVER(a, b, c) (((a) << 24) + ((b) << 16) + (c))

#ifndef MAP_DEF_SIZE
#define MAP_DEF_SIZE 32
#endif
#ifndef PROG_DEF_SIZE
#define PROG_DEF_SIZE 20
#endif
#ifndef SIZE_OF_MAP_DEF
#define SIZE_OF_MAP_DEF MAP_DEF_SIZE
#endif
#ifndef SIZE_OF_PROG_DEF
#define SIZE_OF_PROG_DEF PROG_DEF_SIZE
#endif
#ifndef LEGACY_UID
#if MAP_DEF_SIZE >= 120
#define LEGACY_UID 0
#else
#define LEGACY_UID 2020
#endif
#endif

struct map_def {
    unsigned int type, key_size, value_size, max_entries, map_flags;
    unsigned int uid_or_zero; /* offset 20: the uid before it moved to 116 */
    unsigned int gid;
#if MAP_DEF_SIZE >= 32
    unsigned int mode;
#endif
#if MAP_DEF_SIZE >= 48
    unsigned int bpfloader_min_ver, bpfloader_max_ver, min_kver, max_kver;
#endif
#if MAP_DEF_SIZE >= 116
    char selinux_context[32];
    char pin_subdir[32];
    unsigned char shared;
    unsigned char ignore_on;
    char pad0[2];
#endif
#if MAP_DEF_SIZE >= 120
    unsigned int uid;
#endif
#if MAP_DEF_SIZE > 120
    unsigned char future[MAP_DEF_SIZE - 120];
#endif
};
_Static_assert(sizeof(struct map_def) == MAP_DEF_SIZE, "map def size");

struct prog_def {
    unsigned int uid, gid, min_kver, max_kver;
    unsigned char optional;
    unsigned char ignore_on;
    char pad0[2];
#if PROG_DEF_SIZE >= 28
    unsigned int bpfloader_min_ver, bpfloader_max_ver;
#endif
#if PROG_DEF_SIZE >= 92
    char selinux_context[32];
    char pin_subdir[32];
#endif
#if PROG_DEF_SIZE > 92
    unsigned char future[PROG_DEF_SIZE - 92];
#endif
};
_Static_assert(sizeof(struct prog_def) == PROG_DEF_SIZE, "prog def size");

#ifndef NO_SIZE_OF
unsigned int _size_of_bpf_map_def SECTION("size_of_bpf_map_def") = SIZE_OF_MAP_DEF;
unsigned int _size_of_bpf_prog_def SECTION("size_of_bpf_prog_def") = SIZE_OF_PROG_DEF;
#endif
#ifdef OBJ_VER_TYPE
OBJ_VER_TYPE _bpfloader_min_ver SECTION("bpfloader_min_ver") = 7;
OBJ_VER_TYPE _bpfloader_max_ver SECTION("bpfloader_max_ver") = 70;
#endif

const struct map_def SECTION("maps") first_map = {
    .type = BPF_MAP_TYPE_HASH,
    .key_size = 4,
    .value_size = 8,
    .max_entries = 11,
    .map_flags = BPF_F_NO_PREALLOC,
    .uid_or_zero = LEGACY_UID,
    .gid = 2424,
#if MAP_DEF_SIZE >= 32
    .mode = 0640,
#endif
#if MAP_DEF_SIZE >= 48
    .bpfloader_min_ver = 2,
    .bpfloader_max_ver = 50,
    .min_kver = KVER(4, 9, 0),
    .max_kver = KVER(7, 0, 0),
#endif
#if MAP_DEF_SIZE >= 116
    .selinux_context = "first_ctx",
    .pin_subdir = "first_dir",
    .shared = 1,
#endif
#if MAP_DEF_SIZE >= 120
    .ignore_on = 0x40,
    .uid = 116116,
#endif
#if MAP_DEF_SIZE > 120
    .future = {0xff, 0xff, 0xff, 0xff},
#endif
};

const struct map_def SECTION("maps") second_map = {
    .type = BPF_MAP_TYPE_ARRAY,
    .key_size = 4,
    .value_size = 4,
    .max_entries = 3,
    .uid_or_zero = 0,
    .gid = 0,
#if MAP_DEF_SIZE >= 32
    .mode = 0400,
#endif
#if MAP_DEF_SIZE >= 48
    .bpfloader_min_ver = 0,
    .bpfloader_max_ver = 0x10000,
    .min_kver = 0,
    .max_kver = 0xFFFFFFFFu,
#endif
};

static void *(*lookup)(const void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;

const struct prog_def SECTION("progs") with_def_def = {
    .uid = 3030,
    .gid = 3131,
    .min_kver = KVER(4, 14, 0),
    .max_kver = KVER(6, 50, 0),
    .optional = 1,
#if PROG_DEF_SIZE >= 28
    .bpfloader_min_ver = 4,
    .bpfloader_max_ver = 40,
#endif
#if PROG_DEF_SIZE >= 92
    .ignore_on = 0x10,
    .selinux_context = "prog_ctx",
    .pin_subdir = "prog_dir",
#endif
#if PROG_DEF_SIZE > 92
    .future = {0xff, 0xff, 0xff, 0xff},
#endif
};

SECTION("tracepoint/sched/sched_switch")
int with_def(void *ctx) {
    int key = 0;
    int *second = lookup(&second_map, &key);
    if (second) return *second;
    long *first = lookup(&first_map, &key);
    return first ? *first : 0;
}

const struct prog_def SECTION("progs") other_def = {
    .uid = 0,
    .gid = 0,
    .min_kver = 0,
    .max_kver = 0xFFFFFFFFu,
#if PROG_DEF_SIZE >= 28
    .bpfloader_min_ver = 0,
    .bpfloader_max_ver = 0x10000,
#endif
};

SECTION("xdp/other")
int other(struct xdp_md *ctx) {
    return XDP_PASS;
}

char _license[] SECTION("license") = "GPL";
