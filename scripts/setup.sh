#!/usr/bin/env bash
# Installs what building and testing tld needs on a fresh Debian machine and
# mounts bpffs. Idempotent: does nothing that is already done.
set -euo pipefail

# clang compiles the BPF programs; libelf/zlib/pkg-config build the vendored
# libbpf (libbpf-sys); bpftool generates vmlinux.h from the kernel's BTF.
packages=(clang llvm libelf-dev zlib1g-dev pkg-config bpftool make gcc g++)

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
