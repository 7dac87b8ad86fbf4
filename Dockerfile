# bpfloader in a container image: clang and our header to compile BPF C, the loader to load
# objects into the host's /sys/fs/bpf, and the examples (/usr/share/bpfloader/examples).
#
#   docker build -t bpfloader .
#   docker run --rm -v "$PWD:/work" bpfloader build prog.c -o out
#   docker run --rm --privileged -v /sys/fs/bpf:/sys/fs/bpf -v /etc/bpf:/etc/bpf:ro \
#       -v /run/bpfloader:/run/bpfloader bpfloader load
#
# The build fetches nothing but the base image and, from Debian, the packages below that the base
# lacks. From a local base that already holds them it needs no network at all (the tests build it
# so, tests/packaging/container_image.py):
#   buildah build --isolation=chroot --pull=never --build-arg BASE=localhost/my-bookworm -t bpfloader .
#
# Kubernetes: docs/kubernetes.md runs the same image as a DaemonSet.
ARG BASE=debian:bookworm-slim
# hadolint ignore=DL3006
FROM ${BASE}

# Debian bookworm's own packages (versions are the suite's: pinning them would break on its next
# point release): clang and llvm compile BPF C; libc6-dev and linux-libc-dev hold the headers
# bpf_helpers.h includes; python3 runs the loader (it needs no other package: it speaks the
# journal's protocol itself); make, pip, setuptools and wheel install it, from /src, offline.
ARG PACKAGES="clang llvm libc6-dev linux-libc-dev make python3 python3-pip python3-setuptools \
python3-wheel"
# Only the packages the base lacks are installed: a base that has them all needs no network.
# hadolint ignore=DL3008,SC2086
RUN missing=""; \
    for package in $PACKAGES; do \
        status=$(dpkg-query -W -f '${db:Status-Status}' "$package" 2>/dev/null || true); \
        [ "$status" = installed ] || missing="$missing $package"; \
    done; \
    if [ -n "$missing" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends $missing \
        && rm -rf /var/lib/apt/lists/*; \
    fi

COPY pyproject.toml setup.py LICENSE README.md Makefile /src/
COPY scripts/install scripts/install-system-files /src/scripts/
COPY systemd /src/systemd
COPY share /src/share
COPY bpfloader /src/bpfloader
COPY etc/bpf /usr/share/bpfloader/examples
# pip builds the package with Debian's setuptools and fetches nothing: PIP_NO_INDEX=1 is
# --no-index, and PIP_NO_BUILD_ISOLATION=0 is --no-build-isolation (pip reads that variable's
# value inverted: 0 turns build isolation off).
RUN PIP_NO_INDEX=1 PIP_NO_BUILD_ISOLATION=0 make -C /src install PREFIX=/usr/local \
    && bpfloader build /usr/share/bpfloader/examples/*.c -o /usr/share/bpfloader/examples \
    && rm -rf /src

WORKDIR /work
ENTRYPOINT ["bpfloader"]
CMD ["--help"]
