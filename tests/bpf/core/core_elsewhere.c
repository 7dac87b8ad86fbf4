/*
 * CO-RE relocations against a target BTF of our own (tests/bpf/core/core_target.c), where the
 * fields sit elsewhere, change size and signedness, enumerators change value or go: relocated
 * by bpfloader and by libbpf (tests/obj/libbpf_oracle.c, btf_custom_path), the instructions
 * compared (tests/loader/test_core_oracle.py). Reads are bpf_probe_read_kernel (BPF_CORE_READ),
 * which the verifier takes at any offset, so that libbpf can load what it relocated.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 32);
    __type(key, __u32);
    __type(value, __u64);
} out SEC(".maps");

static __always_inline void put(__u32 key, __u64 value)
{
    bpf_map_update_elem(&out, &key, &value, BPF_ANY);
}

struct core_inner {
    int a;
    long b;
} __attribute__((preserve_access_index));

struct core_item {
    int first;
    struct core_inner *inner;
    unsigned int flag_a : 3;
    int flag_b : 5;
    short small;
    int array[4];
    union {
        int u_int;
        char u_char;
    };
    struct core_inner embedded;
} __attribute__((preserve_access_index));

/* A flavor: a field the target has, and one it does not. */
struct core_item___v2 {
    long only_in_v2;
    int renamed_away;
} __attribute__((preserve_access_index));

enum core_state {
    CORE_IDLE = 0,
    CORE_BUSY = 1,
    CORE_GONE = 2,
};

typedef struct core_item core_item_t;

static __always_inline void fields(struct core_item *item)
{
    struct core_item___v2 *v2 = (void *)item;

    put(0, BPF_CORE_READ(item, first));
    put(1, BPF_CORE_READ(item, inner, b));
    put(2, BPF_CORE_READ_BITFIELD_PROBED(item, flag_a));
    put(3, BPF_CORE_READ_BITFIELD_PROBED(item, flag_b));
    put(4, BPF_CORE_READ(item, array[2]));
    put(5, BPF_CORE_READ(item, u_int));
    put(6, bpf_core_field_size(item->small));
    put(7, __builtin_preserve_field_info(item->small, BPF_FIELD_SIGNED));
    put(8, BPF_CORE_READ(item, embedded.a));
    put(9, bpf_core_field_exists(v2->only_in_v2));
    put(10, bpf_core_field_exists(v2->renamed_away));
    if (bpf_core_field_exists(v2->renamed_away))
        put(11, BPF_CORE_READ(v2, renamed_away));
    put(12, BPF_CORE_READ(v2, only_in_v2));
    put(13, bpf_core_field_size(item->array));
    put(14, bpf_core_field_offset(item->embedded.b));
}

static __always_inline void types(void)
{
    put(15, bpf_core_type_exists(struct core_item___v2));
    put(16, bpf_core_type_size(core_item_t));
    put(17, bpf_core_type_id_kernel(struct core_item));
    put(18, bpf_core_type_id_local(struct core_inner));
    put(19, bpf_core_enum_value(enum core_state, CORE_BUSY));
    put(20, bpf_core_enum_value_exists(enum core_state, CORE_GONE));
    if (bpf_core_enum_value_exists(enum core_state, CORE_GONE))
        put(21, bpf_core_enum_value(enum core_state, CORE_GONE));
    put(22, bpf_core_type_size(struct core_inner));
}

static __attribute__((noinline)) int in_a_subprogram(unsigned long address)
{
    struct core_item *item = (void *)address;

    return BPF_CORE_READ(item, inner, a);
}

SEC("raw_tracepoint/sys_enter")
int elsewhere_one(struct bpf_raw_tracepoint_args *ctx)
{
    fields((void *)ctx->args[0]);
    types();
    return in_a_subprogram(ctx->args[0]);
}

SEC("raw_tracepoint/sys_exit")
int elsewhere_two(struct bpf_raw_tracepoint_args *ctx)
{
    struct core_item *item = (void *)ctx->args[1];

    put(23, BPF_CORE_READ(item, embedded.b));
    return in_a_subprogram(ctx->args[1]);
}
