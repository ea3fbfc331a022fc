#!/usr/bin/env bash
# Builds the mixed-language artifacts into target/mixed (after `make build`):
#   target/mixed/cxx/libmixed_cxx.so   C++ binding (CMake, tld::tld), symbols of the core kept local
#   target/mixed/libmixed_go.so        Go binding, -buildmode=c-shared, libtld.a kept local
#   target/mixed/gohost                Go program on the Go binding that dlopens libmixed_cxx.so
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}
out=$PWD/target/mixed
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S tests/mixed -B "$out/cxx" "${generator[@]}" -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$out/cxx"
cd tests/mixed/go
export CGO_ENABLED=1
"$GO" vet ./...
# Go's build cache does not see libtld.a change (it hashes cgo flags, not the
# archive they name): the archive's hash in the link flags makes it relink.
stamp="-X main.libtldStamp=$(sha256sum ../../../target/debug/libtld.a | cut -c1-16)"
"$GO" build -buildmode=c-shared -ldflags="$stamp -extldflags=-Wl,--exclude-libs,ALL" -o "$out/libmixed_go.so" ./golib
"$GO" build -ldflags="$stamp" -o "$out/gohost" ./gohost
