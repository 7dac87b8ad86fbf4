/*
 * rusage_exec: run a command and report how it ran; the benchmark's launcher.
 *
 *     rusage_exec RESULT_FILE PROGRAM [ARG...]
 *
 * writes "EXIT_STATUS WALL_S USER_S SYS_S MAXRSS_KB\n" to RESULT_FILE: the command's exit
 * status (128 + signal if killed), its wall time from fork to reaping, and its rusage from
 * wait4. Standard input and outputs are the launcher's own.
 *
 * Why not fork from the benchmark itself: a process's peak RSS (ru_maxrss) keeps the
 * high-water mark of the memory it had before execve, and a child forked or vforked (as
 * posix_spawn does) from the benchmark's Python process starts with the benchmark's memory,
 * tens of MB. Forked from this small process, the command starts from about 1 MB.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double seconds(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: rusage_exec RESULT_FILE PROGRAM [ARG...]\n");
        return 2;
    }
    FILE *out = fopen(argv[1], "we"); /* close-on-exec: the command does not inherit it */
    if (out == NULL) {
        perror(argv[1]);
        return 2;
    }
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 2;
    }
    if (pid == 0) {
        execvp(argv[2], argv + 2);
        perror(argv[2]);
        _exit(127);
    }
    int status;
    struct rusage usage;
    if (wait4(pid, &status, 0, &usage) < 0) {
        perror("wait4");
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    double wall = (double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) / 1e9;
    fprintf(out, "%d %.9f %.6f %.6f %ld\n", code, wall, seconds(usage.ru_utime),
            seconds(usage.ru_stime), usage.ru_maxrss);
    return fclose(out) == 0 ? 0 : 2;
}
