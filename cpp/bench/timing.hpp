// Shared by the C++ benchmarks: a compiler barrier that keeps each store,
// the median, a timed loop and the --iterations/--repeat options.
#ifndef TLD_CXX_BENCH_TIMING_HPP
#define TLD_CXX_BENCH_TIMING_HPP

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

namespace bench {

// Keeps each store: without it the compiler may merge a loop of stores into one.
inline void keep() { std::atomic_signal_fence(std::memory_order_seq_cst); }

inline double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// ns per iteration of one call of @p loop with @p iterations.
inline double time_ns_per_op(long iterations, const std::function<void(long)>& loop) {
    auto start = std::chrono::steady_clock::now();
    loop(iterations);
    auto end = std::chrono::steady_clock::now();
    return std::chrono::duration<double, std::nano>(end - start).count() / static_cast<double>(iterations);
}

// Reads `--iterations N` and `--repeat R`, keeping the defaults given.
inline void parse_options(int argc, char** argv, long& iterations, int& repeat) {
    for (int i = 1; i + 1 < argc; i += 2) {
        if (std::strcmp(argv[i], "--iterations") == 0) iterations = std::atol(argv[i + 1]);
        if (std::strcmp(argv[i], "--repeat") == 0) repeat = std::atoi(argv[i + 1]);
    }
}

}  // namespace bench

#endif
