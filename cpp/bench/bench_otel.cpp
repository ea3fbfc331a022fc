// tld::otel on span activation: set the thread's OTEP 4947 record, then
// clear it (or a Scope made and destroyed), against OTEP 4947's own writer, a
// thread_local pointer swapped to a prepared record and back to nullptr, in
// the same run: loops interleaved per repetition, medians reported
// (BENCHMARKS.md, "OpenTelemetry").
//
//   tld_cxx_otel_bench [--iterations N] [--repeat R]
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

TLD_CXX_OTEL_DEFINE_RECORD_KEY();

namespace {

using bench::keep;
using bench::median;
using bench::time_ns_per_op;

thread_local void* plain_ctx;  // OTEP 4947's variable, as an SDK would write it
alignas(8) unsigned char prepared_record[128];

}  // namespace

int main(int argc, char** argv) {
    long iterations = 2'000'000;
    int repeat = 11;
    bench::parse_options(argc, argv, iterations, repeat);
    tld::otel::SpanContext span{};
    std::memset(span.trace_id.data(), 0x4b, 16);
    std::memset(span.span_id.data(), 0x51, 8);
    span.trace_flags = 1;
    const tld::otel::AttributeKey route = tld::otel::attribute_key("http.route");
    tld::otel::set(span, {{"http.route", "/users/:id"}});  // first access: block, process context
    tld::otel::clear();

    struct Row {
        const char* name;
        std::function<void(long)> loop;
        std::vector<double> t;
    };
    std::vector<Row> rows = {
        {"C++: thread_local pointer swap (OTEP baseline)",
         [](long n) {
             for (long i = 0; i < n; i++) {
                 plain_ctx = prepared_record;
                 keep();
                 plain_ctx = nullptr;
                 keep();
             }
         },
         {}},
        {"tld::otel::set(span) + clear()",
         [&](long n) {
             for (long i = 0; i < n; i++) {
                 tld::otel::set(span);
                 tld::otel::clear();
             }
         },
         {}},
        {"set(span, {{key, \"/users/:id\"}}) + clear()",
         [&](long n) {
             for (long i = 0; i < n; i++) {
                 tld::otel::set(span, {tld::otel::KeyedAttribute{route, "/users/:id"}});
                 tld::otel::clear();
             }
         },
         {}},
        {"set(span, {{\"http.route\", ...}}) + clear()",
         [&](long n) {
             for (long i = 0; i < n; i++) {
                 tld::otel::set(span, {{"http.route", "/users/:id"}});
                 tld::otel::clear();
             }
         },
         {}},
        {"Scope(span, {{\"http.route\", ...}}) destroyed",
         [&](long n) {
             for (long i = 0; i < n; i++) {
                 tld::otel::Scope s(span, {{"http.route", "/users/:id"}});
                 keep();
             }
         },
         {}},
    };
    for (int r = 0; r < repeat; r++) {  // interleaved, so drift hits every row alike
        for (Row& row : rows) row.t.push_back(time_ns_per_op(iterations, row.loop));
    }
    if (tld::otel::current().valid || plain_ctx != nullptr) {
        std::fprintf(stderr, "bench: a span stayed active\n");
        return 1;
    }
    std::printf("iterations %ld, repetitions %d (median ns per set + clear)\n", iterations, repeat);
    for (const Row& row : rows) std::printf("%-50s %8.1f ns\n", row.name, median(row.t));
    return 0;
}
