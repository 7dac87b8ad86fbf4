"""The kernel layer: the only code that calls bpf(2), perf_event_open(2), ioctl and mount.

Everything here takes and returns plain values and file descriptors; errors are KernelError
with the errno. ctypes releases the GIL around each call, so loads can run in parallel.
"""
