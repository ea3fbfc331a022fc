// tld::otel: OpenTelemetry thread context records written through the C++
// API on several std::threads, read back by the independent BPF reader
// (`tld dump --json`), and through the exported TLS symbol
// otel_thread_ctx_v1 (dlsym: present only because tld::tld's link options
// export it). One process: every test shares the runtime and the record key.
#include <dlfcn.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <tld/tld.hpp>

#include "support.hpp"

// 64 bytes: the whole record fits what `tld dump` shows of a value (64 bytes),
// so the reader's bytes are compared in full. 36 bytes of attributes.
TLD_CXX_OTEL_DEFINE_RECORD_KEY(64);

namespace {

constexpr std::size_t record_size = 64;

using support::gettid_;
using support::hex;

tld::otel::SpanContext span_of(int i, std::uint8_t flags = 1) {
    tld::otel::SpanContext s{};
    for (int b = 0; b < 16; b++) s.trace_id[b] = static_cast<std::uint8_t>(0xa0 + i + b);
    for (int b = 0; b < 8; b++) s.span_id[b] = static_cast<std::uint8_t>(0x10 * (i + 1) + b);
    s.trace_flags = flags;
    return s;
}

/// The record OTEP 4947 lays out, built here independently of the binding:
/// ids, valid, flags, attrs-data-size (host order), entries; zero after.
std::string expected_record(const tld::otel::SpanContext& s, bool valid,
                            const std::vector<std::pair<std::uint8_t, std::string>>& attrs) {
    std::vector<std::uint8_t> r(record_size, 0);
    std::memcpy(r.data(), s.trace_id.data(), 16);
    std::memcpy(r.data() + 16, s.span_id.data(), 8);
    r[24] = valid ? 1 : 0;
    r[25] = s.trace_flags;
    std::size_t at = 28;
    for (const auto& [k, v] : attrs) {
        r[at] = k;
        r[at + 1] = static_cast<std::uint8_t>(v.size());
        std::memcpy(r.data() + at + 2, v.data(), v.size());
        at += 2 + v.size();
    }
    std::uint16_t size = static_cast<std::uint16_t>(at - 28);
    std::memcpy(r.data() + 26, &size, 2);
    return hex(r.data(), r.size());
}

/// What BPF reads of thread @p tid's record, as hex ("" if it does not see it).
std::string bpf_record(const support::Json& doc, long tid) {
    const support::Json* t = support::dump_thread(doc, tid);
    if (t == nullptr) {
        return "";
    }
    const support::Json& v = (*t)["values"]["otel.thread_ctx_v1"];
    EXPECT_FALSE(v["truncated"].b) << "the record is larger than what tld dump shows";
    return v["hex"].str;
}

/// The calling thread's otel_thread_ctx_v1, found as OTEP 4947 readers do:
/// by name in the dynamic symbol table.
void* tls_pointer() {
    void* slot = ::dlsym(RTLD_DEFAULT, "otel_thread_ctx_v1");
    if (slot == nullptr) {
        ADD_FAILURE() << "otel_thread_ctx_v1 is not in .dynsym: tld::tld did not export it";
        return nullptr;
    }
    return *static_cast<void**>(slot);
}

void* record_address() { return tld::otel::record_key().get(); }

TEST(Otel, ConstantsMatchTheRecordKey) {
    tld::RawKey k = tld::otel::record_key();
    EXPECT_EQ(k.size(), record_size);
    EXPECT_EQ(tld::RawKey::find(tld::otel::record_key_name).offset(), k.offset());
    // The size is fixed now that the key exists.
    try {
        tld::otel::set_record_size(128);
        FAIL() << "set_record_size after the key exists";
    } catch (const tld::Error& e) {
        EXPECT_EQ(e.code().value(), EBUSY);
        EXPECT_NE(e.message().find("otel.thread_ctx_v1"), std::string::npos) << e.message();
    }
    std::error_code ec;
    tld::otel::set_record_size(record_size, ec);  // the size it has: fine
    EXPECT_FALSE(ec);
}

TEST(Otel, ThreadsPublishWhatBpfAndTheTlsSymbolSee) {
    TLD_REQUIRE_KERNEL();
    support::PinnedMap map;
    tld::attach(map.path());
    const std::uint8_t route = tld::otel::attribute_key("http.route").index();
    const std::uint8_t method = tld::otel::attribute_key("http.method").index();
    EXPECT_NE(route, method);

    constexpr int n = 4;
    support::Barrier written(n + 1), cleared(n + 1);
    support::Event checked, checked_cleared;
    std::array<long, n> tids{};
    std::array<std::string, n> routes;
    std::vector<std::thread> threads;
    for (int i = 0; i < n; i++) {
        routes[i] = "/users/" + std::to_string(i);
        threads.emplace_back([&, i] {
            tids[i] = gettid_();
            tld::otel::SpanContext s = span_of(i);
            if (i % 2 == 0) {
                tld::otel::set(s, {{"http.route", routes[i]}, {"http.method", "GET"}});
            } else {
                // By registered key: the same record.
                tld::otel::set(s, {tld::otel::KeyedAttribute{tld::otel::AttributeKey(route), routes[i]},
                                   tld::otel::KeyedAttribute{tld::otel::AttributeKey(method), "GET"}});
            }
            tld::otel::Record r = tld::otel::current();
            EXPECT_TRUE(r.valid);
            EXPECT_EQ(r.span, s);
            EXPECT_EQ(r.attributes.size(), 2u);  // no ASSERT here: the barriers below must be reached
            if (!r.attributes.empty()) {
                EXPECT_EQ(r.attributes[0], std::make_pair(route, routes[i]));
            }
            EXPECT_EQ(tls_pointer(), record_address()) << "thread " << i;
            written.wait();
            checked.wait();
            tld::otel::clear();
            EXPECT_FALSE(tld::otel::current().valid);
            EXPECT_EQ(tls_pointer(), nullptr);
            cleared.wait();
            checked_cleared.wait();  // alive (and registered) while the reader reads
        });
    }
    written.wait();
    support::Json doc = support::dump(map.path());
    for (int i = 0; i < n; i++) {
        EXPECT_EQ(bpf_record(doc, tids[i]),
                  expected_record(span_of(i), true, {{route, routes[i]}, {method, "GET"}}))
            << "thread " << i;
    }
    checked.set();
    cleared.wait();
    doc = support::dump(map.path());
    for (int i = 0; i < n; i++) {
        std::string h = bpf_record(doc, tids[i]);
        ASSERT_EQ(h.size(), record_size * 2) << "thread " << i;
        EXPECT_EQ(h.substr(24 * 2, 2), "00") << "valid after clear, thread " << i;
    }
    checked_cleared.set();
    for (auto& t : threads) t.join();
}

TEST(Otel, NestedScopesRestoreWhatWasThere) {
    TLD_REQUIRE_KERNEL();
    support::PinnedMap map;
    tld::attach(map.path());
    const std::uint8_t route = tld::otel::attribute_key("http.route").index();
    const std::uint8_t db = tld::otel::attribute_key("db.system").index();

    std::thread([&] {
        const long tid = gettid_();
        auto seen = [&] { return bpf_record(support::dump(map.path()), tid); };
        tld::otel::SpanContext parent = span_of(7), child = span_of(8, 0);
        EXPECT_FALSE(tld::otel::current().valid);
        {
            tld::otel::Scope outer(parent, {{"http.route", "/orders"}});
            EXPECT_TRUE(outer.active());
            EXPECT_EQ(seen(), expected_record(parent, true, {{route, "/orders"}}));
            {
                tld::otel::Scope inner(child, {{"db.system", "postgresql"}});
                EXPECT_EQ(seen(), expected_record(child, true, {{db, "postgresql"}}));
                EXPECT_EQ(tls_pointer(), record_address());
                EXPECT_EQ(tld::otel::current().span, child);
            }
            EXPECT_EQ(seen(), expected_record(parent, true, {{route, "/orders"}}));
            EXPECT_EQ(tld::otel::current().span, parent);
            EXPECT_EQ(tls_pointer(), record_address());
            {
                // A scope over a cleared record puts the cleared record back.
                tld::otel::clear();
                tld::otel::Scope again(child);
                EXPECT_TRUE(tld::otel::current().valid);
            }
            EXPECT_FALSE(tld::otel::current().valid);
            EXPECT_EQ(tls_pointer(), nullptr);
            tld::otel::set(parent, {{"http.route", "/orders"}});
        }
        // Before the outer scope the thread had no context: none again.
        std::string h = seen();
        ASSERT_EQ(h.size(), record_size * 2);
        EXPECT_EQ(h.substr(24 * 2, 2), "00");
        EXPECT_FALSE(tld::otel::current().valid);
        EXPECT_EQ(tls_pointer(), nullptr);
    }).join();
}

TEST(Otel, RefusedRecordsChangeNothing) {
    tld::otel::SpanContext s = span_of(3);
    tld::otel::set(s, {{"http.route", "/kept"}});
    auto expect_errno = [](int want, auto&& f, const char* what) {
        try {
            f();
            ADD_FAILURE() << what << ": no error";
        } catch (const tld::Error& e) {
            EXPECT_EQ(e.code().value(), want) << what << ": " << e.what();
            EXPECT_FALSE(e.message().empty()) << what;
        }
    };
    tld::otel::SpanContext half = s;
    half.span_id = {};
    expect_errno(EINVAL, [&] { tld::otel::set(half); }, "a trace id without a span id");
    tld::otel::SpanContext flags_only{};
    flags_only.trace_flags = 1;
    expect_errno(EINVAL, [&] { tld::otel::set(flags_only); }, "flags without ids");
    std::string long_value(256, 'v');
    expect_errno(E2BIG, [&] { tld::otel::set(s, {{"http.route", long_value}}); }, "a 256-byte value");
    std::string fits_255(255, 'v');  // a valid value, but 64-byte records hold 36 bytes of attributes
    expect_errno(E2BIG, [&] { tld::otel::set(s, {{"http.route", fits_255}}); }, "attributes over the record");
    std::vector<tld::otel::Attribute> many(40, tld::otel::Attribute{"http.route", "x"});  // the heap path
    expect_errno(E2BIG, [&] { tld::otel::set(s, many); }, "40 attributes");
    expect_errno(EINVAL, [&] { tld::otel::set(s, {{"", "x"}}); }, "an empty name");
    expect_errno(EINVAL, [&] { tld::otel::set(s, {{"http.route", std::string_view("\xff", 1)}}); }, "non-UTF-8");
    expect_errno(EINVAL, [&] { tld::otel::attribute_key(std::string(128, 'k')); }, "a 128-byte name");
    expect_errno(EINVAL, [&] { tld::otel::set(s, {tld::otel::KeyedAttribute{tld::otel::AttributeKey(250), "x"}}); },
                 "an unregistered index");
    expect_errno(E2BIG, [&] { tld::otel::Scope sc(s, {{"http.route", long_value}}); }, "a scope");
    // The record is still the one set first.
    tld::otel::Record r = tld::otel::current();
    EXPECT_TRUE(r.valid);
    EXPECT_EQ(r.span, s);
    ASSERT_EQ(r.attributes.size(), 1u);
    EXPECT_EQ(r.attributes[0].second, "/kept");

    // The error_code forms.
    std::error_code ec;
    tld::otel::set(s, {{"http.route", long_value}}, ec);
    EXPECT_EQ(ec.value(), E2BIG);
    EXPECT_NE(tld::last_error_message().find("255"), std::string::npos) << tld::last_error_message();
    {
        tld::otel::Scope sc(half, ec);
        EXPECT_EQ(ec.value(), EINVAL);
        EXPECT_FALSE(sc.active());
    }
    EXPECT_EQ(tld::otel::current().span, s);  // an inactive scope restored nothing
    tld::otel::clear(ec);
    EXPECT_FALSE(ec);
    EXPECT_FALSE(tld::otel::current(ec).valid);
}

TEST(Otel, ProcessContextCarriesTheResourceAndKeyMap) {
    tld::otel::publish_process_context({{"service.name", "cxx-test"}, {"process.pid", static_cast<int>(::getpid())},
                                        {"sampled", true}, {"ratio", 0.25}});
    const void* ctx = tld::otel::process_context();
    ASSERT_NE(ctx, nullptr);
    EXPECT_EQ(std::memcmp(ctx, "OTEL_CTX", 8), 0);
    std::uint32_t version = 0;
    std::memcpy(&version, static_cast<const char*>(ctx) + 8, 4);
    EXPECT_EQ(version, 2u);
    // The payload names the service and the key map (protobuf strings are stored verbatim).
    std::uint32_t size = 0;
    std::memcpy(&size, static_cast<const char*>(ctx) + 12, 4);
    std::string payload(static_cast<const char*>(ctx) + 32, size);
    EXPECT_NE(payload.find("cxx-test"), std::string::npos);
    EXPECT_NE(payload.find("threadlocal.attribute_key_map"), std::string::npos);
    EXPECT_NE(payload.find("tld_uptr_v1"), std::string::npos);
    // Found the way OTEP 4719 readers find it.
    std::ifstream maps("/proc/self/maps");
    std::string line, found;
    while (std::getline(maps, line)) {
        if (line.find("OTEL_CTX") != std::string::npos) found = line;
    }
    EXPECT_FALSE(found.empty()) << "no OTEL_CTX mapping in /proc/self/maps";
    std::error_code ec;
    tld::otel::publish_process_context({{"threadlocal.x", "no"}}, ec);
    EXPECT_EQ(ec.value(), EINVAL);
    tld::otel::publish_process_context({{"a", 1}, {"a", 2}}, ec);
    EXPECT_EQ(ec.value(), EINVAL);
}

}  // namespace
