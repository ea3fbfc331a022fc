// libmixed_cxx.so: the C++ participant of the mixed-language tests and demo.
// Its own copy of the core (tld::tld, symbols kept local); a C ABI for
// Python (ctypes) and the Go host (dlopen). Every entry acts on the calling
// thread: the value lands on that thread's kernel task.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>

#include <sys/syscall.h>
#include <unistd.h>

#include <tld/tld.hpp>

#define MIXED_EXPORT extern "C" __attribute__((visibility("default")))

namespace {
long tid() { return static_cast<long>(::syscall(SYS_gettid)); }
}  // namespace

/// Attaches the map pinned at path ("" or NULL: $TLD_MAP_PATH). 0 or -errno.
MIXED_EXPORT int mixed_cxx_attach(const char* path) {
    std::error_code ec;
    tld::attach(path ? std::string_view(path) : std::string_view(), ec);
    return ec ? -ec.value() : 0;
}

/// The metadata page of the runtime this copy uses (creating or joining it).
MIXED_EXPORT std::size_t mixed_cxx_metadata_page() {
    std::error_code ec;
    return tld::runtime_stats(ec).meta_page;
}

/// Gets or creates the 8-byte key `name` and stores v in the calling thread's
/// value. Returns the thread's id (gettid), or -errno.
MIXED_EXPORT long mixed_cxx_set(const char* name, std::int64_t v) {
    std::error_code ec;
    auto key = tld::Key<std::int64_t>::get_or_create(name, ec);
    if (ec)
        return -ec.value();
    std::int64_t* p = key.get(ec);
    if (ec || !p)
        return ec ? -ec.value() : -1;
    *p = v;
    return tid();
}

/// Gets or creates the 8-byte key `name` (no thread data touched). Its
/// offset, or -errno.
MIXED_EXPORT long mixed_cxx_key(const char* name) {
    std::error_code ec;
    auto key = tld::Key<std::int64_t>::get_or_create(name, ec);
    return ec ? -ec.value() : static_cast<long>(key.offset());
}

/// The calling thread's value of the 8-byte key `name` in *out. 0 or -errno.
MIXED_EXPORT int mixed_cxx_get(const char* name, std::int64_t* out) {
    std::error_code ec;
    auto key = tld::Key<std::int64_t>::find(name, ec);
    if (ec)
        return -ec.value();
    std::int64_t* p = key.get(ec);
    if (ec || !p)
        return ec ? -ec.value() : -1;
    *out = *p;
    return 0;
}

namespace {
std::atomic<long> worker_tid{0};
}

/// Demo: starts a detached std::thread "cxx-worker" that publishes
/// cxx.queue_depth (changing every 200 ms) and the common key "priority" for
/// `seconds` seconds. Returns its tid once its values are published, or -errno.
MIXED_EXPORT long mixed_cxx_start_worker(int seconds) {
    worker_tid = 0;
    std::thread([seconds] {
        pthread_setname_np(pthread_self(), "cxx-worker");
        std::error_code ec;
        auto depth = tld::Key<std::int64_t>::get_or_create("cxx.queue_depth", ec);
        auto prio = tld::Key<std::int64_t>::get_or_create("priority", ec);
        if (ec) {
            worker_tid = -ec.value();
            return;
        }
        depth.set(0);
        prio.set(2);
        worker_tid = tid();
        auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
        for (std::int64_t i = 1; std::chrono::steady_clock::now() < end; i++) {
            depth.set((i * 7) % 50, ec);
            prio.set(i % 4, ec);
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
    }).detach();
    while (worker_tid == 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return worker_tid;
}

// OpenTelemetry (tld::otel) for the OpenTelemetry scenario (otel_app.py).
namespace {
tld::otel::SpanContext span_of(const std::uint8_t* trace, const std::uint8_t* span, int flags) {
    tld::otel::SpanContext s{};
    std::copy(trace, trace + 16, s.trace_id.begin());
    std::copy(span, span + 8, s.span_id.begin());
    s.trace_flags = static_cast<std::uint8_t>(flags);
    return s;
}

std::mutex otel_mu;
std::condition_variable otel_cv;
int otel_phase = 0;  // 0: publish, 1: clear, 2: exit (the workers' command)
int otel_done = 0;   // workers that finished the current phase
}  // namespace

/// Creates the record key otel.thread_ctx_v1 (before any thread touches tld
/// data). Its size, or -errno.
MIXED_EXPORT long mixed_cxx_otel_record_key() {
    std::error_code ec;
    auto key = tld::otel::record_key(ec);
    return ec ? -ec.value() : static_cast<long>(key.size());
}

/// Publishes the calling thread's record: trace (16 bytes), span (8),
/// flags, attributes lang=`lang` and `lang`.worker=`worker`. The tid, or -errno.
MIXED_EXPORT long mixed_cxx_otel_set(const std::uint8_t* trace, const std::uint8_t* span, int flags,
                                     const char* lang, const char* worker) {
    std::error_code ec;
    std::string name = std::string(lang) + ".worker";
    tld::otel::set(span_of(trace, span, flags), {{"lang", lang}, {name, worker}}, ec);
    return ec ? -ec.value() : tid();
}

/// Clears the calling thread's record. 0 or -errno.
MIXED_EXPORT int mixed_cxx_otel_clear() {
    std::error_code ec;
    tld::otel::clear(ec);
    return ec ? -ec.value() : 0;
}

/// Starts a std::thread that publishes as mixed_cxx_otel_set and waits for
/// mixed_cxx_otel_workers(1) (clear) and (2) (exit). Its tid once published,
/// or -errno (the thread then exits).
MIXED_EXPORT long mixed_cxx_otel_worker(const std::uint8_t* trace, const std::uint8_t* span, int flags,
                                        const char* lang, const char* worker) {
    std::atomic<long> got{0};
    std::string l(lang), w(worker);
    auto s = span_of(trace, span, flags);
    std::thread([&got, s, l, w] {
        std::error_code ec;
        std::string name = l + ".worker";
        tld::otel::set(s, {{"lang", l}, {name, w}}, ec);
        got = ec ? -ec.value() : tid();
        if (ec)
            return;
        std::unique_lock<std::mutex> lk(otel_mu);
        otel_cv.wait(lk, [] { return otel_phase >= 1; });
        lk.unlock();
        tld::otel::clear(ec);
        lk.lock();
        otel_done++;
        otel_cv.notify_all();
        otel_cv.wait(lk, [] { return otel_phase >= 2; });
    }).detach();
    while (got == 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return got;
}

/// Tells the workers to clear (phase 1: returns once `n` workers cleared)
/// or to exit (phase 2). 0.
MIXED_EXPORT int mixed_cxx_otel_workers(int phase, int n) {
    std::unique_lock<std::mutex> lk(otel_mu);
    otel_phase = phase;
    otel_cv.notify_all();
    if (phase == 1)
        otel_cv.wait(lk, [n] { return otel_done >= n; });
    return 0;
}
