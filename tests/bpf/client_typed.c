/*
 * libbpf-style maps whose BTF types the client decodes (tests/client/test_client_typed.py):
 * struct keys with a char array, values with enums, bitfields, an anonymous union, nested
 * structs and arrays and a member named like a Python keyword (and a map of doubles: bpftool
 * cannot print floats, and reads `samples` for the test); a program on
 * sys_enter_getpgid writes one element per call of the watched process, keyed by its pid and
 * comm, so that the client reads what the kernel wrote.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

enum state { IDLE = 0, RUNNING = 1, STOPPED = 7 };

struct task_key {
    __u32 pid;
    char comm[16];
};

typedef struct {
    __u16 a;
    __u16 b;
} pair_t;

struct sample {
    __u64 count;
    enum state state;
    __s16 delta;
    unsigned int low : 3;
    unsigned int mid : 12;
    int neg : 5;
    _Bool flag;
    __u8 addr[4];
    char name[8];
    union {
        __u32 as_u32;
        __u8 as_bytes[4];
    };
    pair_t pair;
    __u32 matrix[2][3];
    int from;
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 64);
    __type(key, struct task_key);
    __type(value, struct sample);
} samples SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, enum state);
} states SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, double);
} ratios SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} watched SEC(".maps");

SEC("tp/syscalls/sys_enter_getpgid")
int record_getpgid(void *ctx)
{
    __u32 zero = 0;
    __u32 *tgid = bpf_map_lookup_elem(&watched, &zero);
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (!tgid || *tgid != pid)
        return 0;
    struct task_key key = {.pid = pid};
    bpf_get_current_comm(key.comm, sizeof(key.comm));
    struct sample *found = bpf_map_lookup_elem(&samples, &key);
    if (found) {
        __sync_fetch_and_add(&found->count, 1);
        return 0;
    }
    struct sample value = {
        .count = 1,
        .state = STOPPED,
        .delta = -2,
        .low = 5,
        .mid = 4000,
        .neg = -3,
        .flag = 1,
        .addr = {10, 0, 0, 1},
        .name = "kernel",
        .as_u32 = 0x04030201,
        .pair = {.a = 7, .b = 9},
        .matrix = {{1, 2, 3}, {4, 5, 6}},
        .from = -1,
    };
    bpf_map_update_elem(&samples, &key, &value, BPF_NOEXIST);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
