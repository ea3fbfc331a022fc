// `tld::Key<T>::get()` + store on an initialized thread against a plain C++
// thread_local write, in the same run: a timed loop per repetition, the
// three loops interleaved; reported are the median of the repetitions and the
// median of the per-repetition ratios (each tld loop against the plain loop
// timed just before it), which a shared, noisy machine disturbs least
// (BENCHMARKS.md, "C++").
//
//   tld_cxx_bench [--iterations N] [--repeat R]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <tld/tld.hpp>

#include "timing.hpp"

namespace {

using bench::keep;
using bench::median;
using bench::time_ns_per_op;

thread_local std::uint64_t plain_value;

// The C benchmark's reference (tests/c/bench_hot_path.c): a thread_local
// pointer plus an offset read from memory, as a key's offset is.
thread_local std::uint8_t* plain_base;
volatile std::uint16_t plain_offset = 0;

}  // namespace

// A load-time key (TLD_CXX_DEFINE_KEY): get() takes the same inlined path.
TLD_CXX_DEFINE_KEY(bench_static, std::uint64_t, "bench_static");

int main(int argc, char** argv) {
    long iterations = 2'000'000;
    int repeat = 101;
    bench::parse_options(argc, argv, iterations, repeat);

    auto key = tld::Key<std::uint64_t>::get_or_create("bench_value");
    key.set(1);  // initialize this thread: allocate its block

    // std::function keeps each loop out of line (one indirect call per
    // repetition, not per iteration).
    auto plain = [](long n) {
        for (long i = 0; i < n; i++) {
            plain_value = static_cast<std::uint64_t>(i);
            keep();
        }
    };
    std::uint64_t based_area[2] = {};
    plain_base = reinterpret_cast<std::uint8_t*>(based_area);
    auto based = [](long n) {
        for (long i = 0; i < n; i++) {
            *reinterpret_cast<std::uint64_t*>(plain_base + plain_offset) = static_cast<std::uint64_t>(i);
            keep();
        }
    };
    auto tld_get = [key](long n) {
        for (long i = 0; i < n; i++) {
            *key.get() = static_cast<std::uint64_t>(i);
            keep();
        }
    };
    auto tld_set = [key](long n) {
        for (long i = 0; i < n; i++) {
            key.set(static_cast<std::uint64_t>(i));
        }
    };
    auto tld_static = [](long n) {
        for (long i = 0; i < n; i++) {
            *bench_static.get() = static_cast<std::uint64_t>(i);
            keep();
        }
    };

    std::vector<double> t_plain, t_based, t_get, t_set, t_static;
    for (int r = 0; r < repeat; r++) {  // interleaved, so drift hits all four alike
        t_plain.push_back(time_ns_per_op(iterations, plain));
        t_based.push_back(time_ns_per_op(iterations, based));
        t_get.push_back(time_ns_per_op(iterations, tld_get));
        t_set.push_back(time_ns_per_op(iterations, tld_set));
        t_static.push_back(time_ns_per_op(iterations, tld_static));
    }
    if (key.load() != static_cast<std::uint64_t>(iterations - 1) ||
        bench_static.load() != static_cast<std::uint64_t>(iterations - 1) ||
        plain_value != static_cast<std::uint64_t>(iterations - 1)) {
        std::fprintf(stderr, "bench: lost a store\n");
        return 1;
    }
    std::vector<double> r_get, r_set, r_static, r_based, r_get_based;
    for (int r = 0; r < repeat; r++) {
        r_get.push_back(t_get[r] / t_plain[r]);
        r_set.push_back(t_set[r] / t_plain[r]);
        r_static.push_back(t_static[r] / t_plain[r]);
        r_based.push_back(t_based[r] / t_plain[r]);
        r_get_based.push_back(t_get[r] / t_based[r]);
    }
    double p = median(t_plain), b = median(t_based), g = median(t_get), s = median(t_set);
    std::printf("iterations %ld, repetitions %d (median ns/op; median of the per-repetition ratios)\n", iterations,
                repeat);
    std::printf("%-46s %8.3f ns\n", "plain C++ thread_local write", p);
    std::printf("%-46s %8.3f ns  (%.2fx)\n", "thread_local pointer + offset store", b, median(r_based));
    std::printf("%-46s %8.3f ns  (%.2fx; %.2fx of pointer + offset)\n", "tld::Key<uint64_t>::get() + store", g,
                median(r_get), median(r_get_based));
    std::printf("%-46s %8.3f ns  (%.2fx)\n", "tld::Key<uint64_t>::set()", s, median(r_set));
    std::printf("%-46s %8.3f ns  (%.2fx)\n", "TLD_CXX_DEFINE_KEY key: get() + store", median(t_static),
                median(r_static));
    return 0;
}
