# bpfloader in a container image: clang and our header to compile BPF C, the loader to load
# objects into the host's /sys/fs/bpf, and the examples (/usr/share/bpfloader/examples).
#
#   docker build -t bpfloader .
#   docker run --rm -v "$PWD:/work" bpfloader build prog.c -o out
#   docker run --rm --privileged -v /sys/fs/bpf:/sys/fs/bpf -v /etc/bpf:/etc/bpf:ro \
#       -v /run/bpfloader:/run/bpfloader bpfloader load
#
# Kubernetes: docs/kubernetes.md runs the same image as a DaemonSet.
FROM debian:bookworm-slim

# clang and llvm compile BPF C; libc6-dev and linux-libc-dev hold the headers bpf_helpers.h
# includes; the package has no dependencies (bpfloader speaks the journal's protocol itself,
# when the host's journald socket is mounted); make and pip (with Debian's setuptools) install it.
# Versions are Debian bookworm's own: pinning them would break on its next point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        clang llvm libc6-dev linux-libc-dev make python3 python3-pip \
    && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml setup.py LICENSE README.md Makefile /src/
COPY scripts/install /src/scripts/install
COPY systemd /src/systemd
COPY bpfloader /src/bpfloader
COPY etc/bpf /usr/share/bpfloader/examples
RUN make -C /src install PREFIX=/usr/local \
    && bpfloader build /usr/share/bpfloader/examples/*.c -o /usr/share/bpfloader/examples \
    && rm -rf /src

WORKDIR /work
ENTRYPOINT ["bpfloader"]
CMD ["--help"]
