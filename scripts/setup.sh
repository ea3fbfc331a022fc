#!/usr/bin/env bash
# Installs what building and testing tld needs on a fresh Debian machine and
# mounts bpffs. Idempotent: does nothing that is already done.
set -euo pipefail

# clang compiles the BPF programs; clang-19 the upstream-style reader, whose
# `struct X __uptr *` members need clang >= 15 (bpf/build.rs); libelf/zlib/
# pkg-config build the vendored libbpf (libbpf-sys); bpftool generates
# vmlinux.h from the kernel's BTF; cmake, ninja-build and libgtest-dev build
# and test the C++ binding (cpp/).
packages=(clang clang-19 llvm libelf-dev zlib1g-dev pkg-config bpftool make gcc g++ cmake ninja-build libgtest-dev)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "setup: cargo not found: install Rust (rustup)" >&2; exit 1; }

# The Python binding is built and tested in a venv (`python3 -m venv`); on
# Debian that needs python3-venv (ensurepip). pip then fetches maturin and
# the test tools from PyPI.
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        echo "setup: python3 with venv support is needed (Debian: apt-get install python3 python3-venv)" >&2
        exit 1
    fi
    echo "setup: installing python3 python3-venv"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq python3 python3-venv >/dev/null
    python3 -c 'import ensurepip, venv' || {
        echo "setup: $(command -v python3) still lacks venv/ensurepip (a python3 outside Debian's packages?)" >&2
        exit 1
    }
fi

# Kernel parts need BTF and a mounted BPF filesystem.
[[ -r /sys/kernel/btf/vmlinux ]] || echo "setup: warning: /sys/kernel/btf/vmlinux missing: the kernel has no BTF" >&2
if ! mountpoint -q /sys/fs/bpf; then
    if [[ $(id -u) -eq 0 ]]; then
        mount -t bpf bpf /sys/fs/bpf
        echo "setup: mounted bpffs at /sys/fs/bpf"
    else
        echo "setup: warning: bpffs is not mounted at /sys/fs/bpf (as root: mount -t bpf bpf /sys/fs/bpf)" >&2
    fi
fi
