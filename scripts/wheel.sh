#!/usr/bin/env bash
# `make wheel`: the distributable Python artifacts of the binding, into
# target/wheels (emptied first):
#   task_local_data-V-cp310-abi3-manylinux_*.whl   CPython 3.10 and later (cargo feature abi3)
#   task_local_data-V-cp39-cp39-manylinux_*.whl    CPython 3.9, from the same sources
#   task_local_data-V.tar.gz                       the sdist (builds on its own: tests/install)
# maturin picks the manylinux tag from the glibc symbols the extension uses;
# `auditwheel show` must agree, and the extension must need nothing beyond
# glibc and libgcc_s (no libpython). The cp39 wheel needs a CPython 3.9:
# $PYTHON39, else python3.9 on PATH, else pyenv's; without one it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-target/venv}
out=target/wheels
"$venv/bin/python" -m pip install --quiet 'maturin>=1.9.4,<2' 'auditwheel>=6'

# The first candidate that runs and is 3.9 (pyenv's shims exist even when
# they cannot run the version).
python39=
for candidate in ${PYTHON39:-} "$HOME"/.pyenv/versions/3.9.*/bin/python3.9 "$(command -v python3.9 || true)"; do
    if [[ -x $candidate ]] && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 9))' 2>/dev/null; then
        python39=$candidate
        break
    fi
done
[[ -n $python39 ]] || {
    echo "wheel.sh: no CPython 3.9 for the cp39 wheel (set PYTHON39=/path/to/python3.9)" >&2
    exit 1
}

rm -rf "$out"
# The abi3 build needs no particular interpreter >= 3.10: the venv's hosts it.
"$venv/bin/maturin" build --features abi3 --interpreter "$venv/bin/python" --out "$out"
"$venv/bin/maturin" build --interpreter "$python39" --out "$out"
"$venv/bin/maturin" sdist --out "$out"

# The allowed run-time dependencies: glibc's libraries and the loader, and the
# unwinder libgcc_s, which every manylinux policy lists.
allowed='^(libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|libgcc_s\.so\.1|ld-linux-[a-z0-9_-]+\.so\.[0-9]+)$'
shopt -s nullglob
wheels=("$out"/*.whl)
((${#wheels[@]} == 2)) || { echo "wheel.sh: expected 2 wheels in $out, found ${#wheels[@]}" >&2; exit 1; }
for whl in "${wheels[@]}"; do
    report=$("$venv/bin/auditwheel" show "$whl")
    tag=$(grep -o 'manylinux_[0-9]*_[0-9]*_x86_64\|manylinux_[0-9]*_[0-9]*_aarch64' <<<"$report" | head -n 1)
    [[ -n $tag && $(basename "$whl") == *"$tag"* ]] || {
        echo "wheel.sh: $(basename "$whl") is not tagged with the manylinux policy auditwheel reports:" >&2
        echo "$report" >&2
        exit 1
    }
    tmp=$(mktemp -d)
    "$venv/bin/python" -m zipfile -e "$whl" "$tmp"
    for so in "$tmp"/tld/_tld*.so; do
        while read -r lib; do
            [[ $lib =~ $allowed ]] || { echo "wheel.sh: $(basename "$whl"): the extension needs $lib" >&2; rm -rf "$tmp"; exit 1; }
        done < <(readelf -d "$so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    done
    rm -rf "$tmp"
    echo "wheel.sh: $(basename "$whl"): $tag (auditwheel), needs only glibc and libgcc_s"
done
ls -l "$out"
