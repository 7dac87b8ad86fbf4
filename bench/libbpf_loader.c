/*
 * libbpf_loader: the benchmark's strongest peer, a one-process loader written against libbpf.
 *
 *     libbpf_loader [-j THREADS] PIN_ROOT OBJECT...
 *
 * What a user who cares about speed would write instead of bpfloader: every OBJECT opened,
 * loaded and pinned by libbpf in this one process, THREADS objects at a time (default 1; each
 * thread takes the next object not yet taken). A map is pinned as PIN_ROOT/map_STEM_NAME and a
 * program as PIN_ROOT/prog_STEM_NAME (STEM: the object's file name without ".o"; the names
 * libbpf gives, internal maps such as ".rodata" included, with '.' made '_' since bpffs
 * refuses it), one pin per map and program as bpfloader makes. Once every object is done, the
 * process exits: its descriptors close, the pins keep what they hold.
 *
 * Exit status 0 if every object loaded and pinned, 1 otherwise; one line on stderr per object
 * that failed ("OBJECT: what: errno"). libbpf's own messages are kept quiet except warnings.
 */
#define _GNU_SOURCE
#include <bpf/libbpf.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *pin_root;
static char **objects;
static int object_count;
static atomic_int next_object;
static atomic_int failures;

static int print_warnings(enum libbpf_print_level level, const char *fmt, va_list args)
{
    return level == LIBBPF_WARN ? vfprintf(stderr, fmt, args) : 0;
}

/* PIN_ROOT/KIND_STEM_NAME into BUF, '.' replaced (bpffs refuses it in names). */
static int pin_path(char *buf, size_t size, const char *kind, const char *stem, const char *name)
{
    int n = snprintf(buf, size, "%s/%s_%s_%s", pin_root, kind, stem, name);
    if (n < 0 || (size_t)n >= size)
        return -ENAMETOOLONG;
    for (char *c = buf + strlen(pin_root) + 1; *c; c++)
        if (*c == '.')
            *c = '_';
    return 0;
}

static int fail(const char *path, const char *what, int err)
{
    fprintf(stderr, "%s: %s: %s\n", path, what, strerror(err < 0 ? -err : err));
    atomic_fetch_add(&failures, 1);
    return -1;
}

static int load_one(const char *path)
{
    char stem[256], pin[4096];
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(stem, sizeof(stem), "%s", base);
    char *dot = strrchr(stem, '.');
    if (dot)
        *dot = '\0';

    struct bpf_object *obj = bpf_object__open_file(path, NULL);
    int err = libbpf_get_error(obj);
    if (err)
        return fail(path, "open", err);
    err = bpf_object__load(obj);
    if (err) {
        bpf_object__close(obj);
        return fail(path, "load", err);
    }
    struct bpf_map *map;
    bpf_object__for_each_map(map, obj)
    {
        err = pin_path(pin, sizeof(pin), "map", stem, bpf_map__name(map));
        if (!err)
            err = bpf_map__pin(map, pin);
        if (err) {
            bpf_object__close(obj);
            return fail(path, "pin map", err);
        }
    }
    struct bpf_program *prog;
    bpf_object__for_each_program(prog, obj)
    {
        err = pin_path(pin, sizeof(pin), "prog", stem, bpf_program__name(prog));
        if (!err)
            err = bpf_program__pin(prog, pin);
        if (err) {
            bpf_object__close(obj);
            return fail(path, "pin program", err);
        }
    }
    bpf_object__close(obj);
    return 0;
}

static void *worker(void *unused)
{
    (void)unused;
    for (;;) {
        int i = atomic_fetch_add(&next_object, 1);
        if (i >= object_count)
            return NULL;
        load_one(objects[i]);
    }
}

int main(int argc, char **argv)
{
    int threads = 1, opt;
    while ((opt = getopt(argc, argv, "j:")) != -1) {
        if (opt != 'j' || (threads = atoi(optarg)) < 1) {
            fprintf(stderr, "usage: libbpf_loader [-j THREADS] PIN_ROOT OBJECT...\n");
            return 2;
        }
    }
    if (argc - optind < 2) {
        fprintf(stderr, "usage: libbpf_loader [-j THREADS] PIN_ROOT OBJECT...\n");
        return 2;
    }
    libbpf_set_print(print_warnings);
    pin_root = argv[optind];
    objects = argv + optind + 1;
    object_count = argc - optind - 1;
    if (threads > object_count)
        threads = object_count;

    pthread_t ids[threads];
    for (int t = 1; t < threads; t++)
        if (pthread_create(&ids[t], NULL, worker, NULL) != 0) {
            fprintf(stderr, "libbpf_loader: cannot start a thread\n");
            return 1;
        }
    worker(NULL); /* the main thread is the first worker */
    for (int t = 1; t < threads; t++)
        pthread_join(ids[t], NULL);
    return atomic_load(&failures) ? 1 : 0;
}
