#!/usr/bin/env bash
# `make install` / `make uninstall`: puts tld where other projects find it by
# their ecosystem's usual route, or takes it away again.
#
#   scripts/install.sh install|uninstall
#
# Reads PREFIX, BINDIR, LIBDIR, INCLUDEDIR (absolute; LIBDIR may be a multiarch
# dir such as $PREFIX/lib/x86_64-linux-gnu), DESTDIR (a staging root prepended
# to every path written, never to paths recorded in the files) and VERSION,
# all set by the Makefile. `install` expects target/release/{libtld.so,
# libtld.a,tld} (the Makefile builds them) and builds the C++ archive with CMake.
#
# What it installs (uninstall removes exactly this):
#   BINDIR/tld                                  the tld command
#   LIBDIR/libtld.so.VERSION, libtld.so.MAJOR, libtld.so (links), libtld.a
#   LIBDIR/pkgconfig/tld.pc                     pkg-config --cflags --libs tld
#   LIBDIR/libtld_cxx.a, LIBDIR/cmake/tld/      find_package(tld) -> tld::tld
#   INCLUDEDIR/tld.h, tld_otel.h, tld.bpf.h     C (and OpenTelemetry), and BPF programs (needs libbpf's headers)
#   INCLUDEDIR/tld/                             tld/tld.hpp and cxx's headers (tld/cxxbridge/)
set -euo pipefail
cd "$(dirname "$0")/.."
# make's command-line variables (PREFIX, LIBDIR...) travel in MAKEFLAGS to any
# make that cargo runs below (vendored C builds): keep them out.
unset MAKEFLAGS MFLAGS

action=${1:?usage: scripts/install.sh install|uninstall}
for v in PREFIX BINDIR LIBDIR INCLUDEDIR VERSION; do
    [[ -n ${!v:-} ]] || { echo "install.sh: $v is not set (run it through make install / make uninstall)" >&2; exit 2; }
    [[ $v == VERSION || ${!v} == /* ]] || { echo "install.sh: $v=${!v} is not an absolute path" >&2; exit 2; }
done
DESTDIR=${DESTDIR:-}
major=${VERSION%%.*}

# A directory under PREFIX as the prefix-relative form that pkg-config and
# CMake keep relocatable; anything else stays absolute.
relative_to_prefix() {
    case $1 in
        "$PREFIX") echo . ;;
        "$PREFIX"/*) echo "${1#"$PREFIX"/}" ;;
        *) echo "$1" ;;
    esac
}

install_all() {
    local release=target/release
    for f in libtld.so libtld.a tld; do
        [[ -f $release/$f ]] || { echo "install.sh: $release/$f is missing: run make install" >&2; exit 1; }
    done
    local lib=$DESTDIR$LIBDIR inc=$DESTDIR$INCLUDEDIR bin=$DESTDIR$BINDIR
    install -d "$lib/pkgconfig" "$inc" "$bin"

    install -m 0755 "$release/libtld.so" "$lib/libtld.so.$VERSION"
    ln -sfn "libtld.so.$VERSION" "$lib/libtld.so.$major"
    ln -sfn "libtld.so.$major" "$lib/libtld.so"
    install -m 0644 "$release/libtld.a" "$lib/libtld.a"
    install -m 0644 capi/include/tld.h "$inc/tld.h"
    install -m 0644 capi/include/tld_otel.h "$inc/tld_otel.h"
    install -m 0644 bpf/tld.bpf.h "$inc/tld.bpf.h"
    install -m 0755 "$release/tld" "$bin/tld"

    local libdir_pc includedir_pc rel
    rel=$(relative_to_prefix "$LIBDIR")
    [[ $rel == /* ]] && libdir_pc=$rel || libdir_pc="\${prefix}/$rel"
    rel=$(relative_to_prefix "$INCLUDEDIR")
    [[ $rel == /* ]] && includedir_pc=$rel || includedir_pc="\${prefix}/$rel"
    sed -e "s|@PREFIX@|$PREFIX|" -e "s|@LIBDIR@|$libdir_pc|" -e "s|@INCLUDEDIR@|$includedir_pc|" \
        -e "s|@VERSION@|$VERSION|" capi/tld.pc.in >"$lib/pkgconfig/tld.pc"
    chmod 0644 "$lib/pkgconfig/tld.pc"

    # The C++ binding: CMake builds the release archive through cargo and
    # installs it with the package files (install(EXPORT), tldConfigVersion.cmake).
    local build=target/cpp-install generator=()
    command -v ninja >/dev/null && [[ ! -f $build/Makefile ]] && generator=(-G Ninja)
    # A fresh cache: GNUInstallDirs resets a cached LIBDIR to its own default
    # when the prefix changes (from /usr, lib/<multiarch> becomes lib).
    rm -f "$build/CMakeCache.txt"
    cmake -S cpp -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_INSTALL_PREFIX="$PREFIX" \
        -DCMAKE_INSTALL_LIBDIR="$(relative_to_prefix "$LIBDIR")" \
        -DCMAKE_INSTALL_INCLUDEDIR="$(relative_to_prefix "$INCLUDEDIR")" >/dev/null
    cmake --build "$build"
    DESTDIR=$DESTDIR cmake --install "$build" >/dev/null
    echo "installed tld $VERSION into ${DESTDIR}$PREFIX (libraries in ${DESTDIR}$LIBDIR)"
}

uninstall_all() {
    local lib=$DESTDIR$LIBDIR inc=$DESTDIR$INCLUDEDIR bin=$DESTDIR$BINDIR
    rm -f "$lib/libtld.so.$VERSION" "$lib/libtld.so.$major" "$lib/libtld.so" "$lib/libtld.a" \
        "$lib/libtld_cxx.a" "$lib/pkgconfig/tld.pc" "$inc/tld.h" "$inc/tld_otel.h" "$inc/tld.bpf.h" "$bin/tld"
    # These two directories are tld's own by name.
    rm -rf "$lib/cmake/tld" "$inc/tld"
    # Directories the install may have created, if nothing else lives there.
    rmdir "$lib/pkgconfig" "$lib/cmake" 2>/dev/null || true
    echo "removed tld $VERSION from ${DESTDIR}$PREFIX"
}

case $action in
    install) install_all ;;
    uninstall) uninstall_all ;;
    *) echo "install.sh: unknown action '$action' (install or uninstall)" >&2; exit 2 ;;
esac
