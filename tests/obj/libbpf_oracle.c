/*
 * libbpf as the oracle of relocation: open OBJECT (with bpf_object_open_opts.btf_custom_path
 * = TARGET for CO-RE, unless TARGET is "-": the running kernel's BTF), load it (libbpf 1.1
 * has no load-less relocation: bpf_object__prepare came later), and print each program's
 * instructions as libbpf relocated them: `NAME HEX` a line. libbpf relocates every program
 * before loading any, so a kernel that refuses one still leaves the relocated instructions:
 * they are printed then too, and the exit code is 3.
 */
#include <stdio.h>
#include <string.h>
#include <bpf/libbpf.h>

int main(int argc, char **argv)
{
    struct bpf_object *obj;
    struct bpf_program *prog;
    int refused;

    if (argc != 3) {
        fprintf(stderr, "usage: %s OBJECT TARGET_BTF|-\n", argv[0]);
        return 2;
    }
    LIBBPF_OPTS(bpf_object_open_opts, opts,
                .btf_custom_path = strcmp(argv[2], "-") ? argv[2] : NULL);
    obj = bpf_object__open_file(argv[1], &opts);
    if (!obj) {
        fprintf(stderr, "cannot open %s\n", argv[1]);
        return 1;
    }
    refused = bpf_object__load(obj) != 0;
    bpf_object__for_each_program(prog, obj) {
        const unsigned char *bytes = (const void *)bpf_program__insns(prog);
        size_t size = bpf_program__insn_cnt(prog) * sizeof(struct bpf_insn);

        printf("%s ", bpf_program__name(prog));
        for (size_t i = 0; i < size; i++)
            printf("%02x", bytes[i]);
        printf("\n");
    }
    bpf_object__close(obj);
    return refused ? 3 : 0;
}
