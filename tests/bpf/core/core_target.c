/*
 * Not a program: a target BTF for tests/bpf/core/core_elsewhere.c (its .BTF, once compiled with
 * -g), standing for another kernel: every field moved, some resized or re-signed, a bitfield
 * wider, an enumerator gone and the others renumbered, a flavor's field absent.
 */
struct core_inner {
    long pad;
    long b;
    int a;
};

struct core_item {
    long pad[3];
    unsigned long long spare : 7;
    unsigned int flag_a : 6;
    int flag_b : 9;
    int first;
    struct core_inner *inner;
    unsigned int small;
    int array[8];
    union {
        char u_char;
        int u_int;
    };
    long only_in_v2;
    struct core_inner embedded;
};

enum core_state {
    CORE_IDLE = 10,
    CORE_BUSY = 11,
};

typedef struct core_item core_item_t;

core_item_t target_item;
enum core_state target_state;
