// Values written through the C++ API on several std::threads, read back by
// the independent BPF reader (`tld dump --json`), plus the API's plain
// behaviour. One process: the runtime is shared by every test here.
#include <pthread.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <tld/tld.hpp>

#include "support.hpp"

namespace {

// Every test of this process shares one runtime: make room for all their keys
// (the default dynamic reserve is 64 bytes), before any thread touches its data.
const bool reserve_set = (tld::set_dynamic_reserve(512), true);

struct Tag {
    std::uint8_t bytes[16];
};

using support::gettid_;
using support::hex;

TEST(Basic, ThreadsPublishWhatTheBpfReaderSees) {
    TLD_REQUIRE_KERNEL();
    support::PinnedMap map;
    tld::attach(map.path());

    auto prio = tld::Key<std::int32_t>::get_or_create("cxx_priority");
    auto request = tld::Key<std::uint64_t>::create("cxx_request_id");
    auto tag = tld::Key<Tag>::create("cxx_tag");
    auto raw = tld::RawKey::create("cxx_raw3", 3);

    constexpr int n = 4;
    support::Barrier written(n + 1);
    support::Event checked;
    std::array<long, n> tids{};
    std::vector<std::thread> threads;
    for (int i = 0; i < n; i++) {
        threads.emplace_back([&, i] {
            tids[i] = gettid_();
            prio.set(-10 * i);
            *request.get() = 1000000000000ull + i;
            Tag t{};
            for (int b = 0; b < 16; b++) t.bytes[b] = static_cast<std::uint8_t>(i * 16 + b);
            tag.set(t);
            std::memcpy(raw.get(), "ab", 3);
            static_cast<std::uint8_t*>(raw.get())[2] = static_cast<std::uint8_t>(i);
            EXPECT_EQ(prio.load(), -10 * i);
            written.wait();
            checked.wait();  // keep the thread (and its registration) alive for the reader
        });
    }
    written.wait();

    support::Json doc = support::dump(map.path());
    for (int i = 0; i < n; i++) {
        const support::Json* t = support::dump_thread(doc, tids[i]);
        ASSERT_NE(t, nullptr) << "thread " << tids[i] << " not in tld dump";
        const support::Json& v = (*t)["values"];
        EXPECT_EQ(v["cxx_priority"]["int"].num, -10 * i);
        EXPECT_EQ(static_cast<std::uint64_t>(v["cxx_request_id"]["int"].num), 1000000000000ull + i);
        Tag expect{};
        for (int b = 0; b < 16; b++) expect.bytes[b] = static_cast<std::uint8_t>(i * 16 + b);
        EXPECT_EQ(v["cxx_tag"]["hex"].str, hex(&expect, 16));
        const std::uint8_t raw_expect[3] = {'a', 'b', static_cast<std::uint8_t>(i)};
        EXPECT_EQ(v["cxx_raw3"]["hex"].str, hex(raw_expect, 3));
    }
    // The reader's key table matches what C++ was told.
    for (const support::Json& k : doc["keys"].arr) {
        if (k["name"].str == "cxx_tag") {
            EXPECT_EQ(static_cast<size_t>(k["offset"].num), tag.offset());
            EXPECT_EQ(k["size"].num, 16);
        }
    }
    checked.set();
    for (auto& t : threads) t.join();
}

TEST(Basic, HeaderConstantsMatchTheCore) {
    tld::detail::Limits core = tld::detail::limits();
    EXPECT_EQ(tld::max_name_length, core.max_name_bytes);
    EXPECT_EQ(tld::value_alignment, core.value_align);
}

TEST(Basic, ValuesArePerThreadAndStartAtZero) {
    auto k = tld::Key<std::uint64_t>::get_or_create("cxx_per_thread");
    k.set(7);
    std::uint64_t* mine = k.get();
    EXPECT_EQ(*mine, 7u);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(mine) % tld::value_alignment, 0u);
    std::thread([&] {
        EXPECT_EQ(k.load(), 0u);
        k.set(9);
        EXPECT_NE(k.get(), mine);
    }).join();
    EXPECT_EQ(k.load(), 7u);
    EXPECT_EQ(k.get(), mine);  // stable on the thread
}

TEST(Basic, GetOrCreateSharesFindLooksUp) {
    auto a = tld::Key<std::int16_t>::get_or_create("cxx_shared");
    auto b = tld::Key<std::int16_t>::get_or_create("cxx_shared");
    EXPECT_EQ(a, b);
    EXPECT_EQ(tld::Key<std::int16_t>::find("cxx_shared"), a);
    tld::RawKey r = tld::RawKey::find("cxx_shared");
    EXPECT_EQ(r.size(), 2u);
    EXPECT_EQ(r.offset(), a.offset());
    EXPECT_EQ(r.get(), static_cast<void*>(a.get()));
    a.set(-3);
    EXPECT_EQ(b.load(), -3);

    try {
        tld::Key<std::int32_t>::find("cxx_shared");
        FAIL() << "find with another size succeeded";
    } catch (const tld::Error& e) {
        EXPECT_EQ(e.code().value(), EEXIST);
        EXPECT_NE(e.message().find("cxx_shared"), std::string::npos) << e.what();
    }
    try {
        tld::Key<std::int32_t>::find("cxx_nothing_here");
        FAIL() << "find of a missing key succeeded";
    } catch (const tld::Error& e) {
        EXPECT_EQ(e.code(), std::errc::no_such_file_or_directory);
    }
}

TEST(Basic, ErrorCodeOverloadsDoNotThrow) {
    std::error_code ec;
    auto k = tld::Key<std::uint32_t>::create("cxx_ec", ec);
    ASSERT_FALSE(ec) << ec.message();
    ASSERT_TRUE(k.valid());
    auto again = tld::Key<std::uint32_t>::create("cxx_ec", ec);
    EXPECT_EQ(ec.value(), EEXIST);
    EXPECT_FALSE(again.valid());
    EXPECT_NE(tld::last_error_message().find("cxx_ec"), std::string::npos);
    k.set(5, ec);
    EXPECT_FALSE(ec);
    EXPECT_EQ(k.load(ec), 5u);
    EXPECT_EQ(again.get(ec), nullptr);
    EXPECT_EQ(ec.value(), EINVAL);
}

TEST(Basic, AttachErrors) {
    try {
        tld::attach("/sys/fs/bpf/tld-cxx-no-such-dir/tld_data_map");
        FAIL() << "attach of a missing pin succeeded";
    } catch (const tld::Error& e) {
        EXPECT_EQ(e.code().value(), ENOENT);
        EXPECT_NE(e.message().find("tld-cxx-no-such-dir"), std::string::npos) << e.what();
    }
    std::error_code ec;
    tld::attach("/proc/self/status", ec);
    EXPECT_EQ(ec.value(), EINVAL) << tld::last_error_message();
    tld::attach_fd(-1, ec);
    EXPECT_EQ(ec.value(), EINVAL);
    try {
        tld::attach_fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        FAIL() << "attach_fd of /dev/null succeeded";
    } catch (const tld::Error& e) {
        EXPECT_EQ(e.code().value(), EINVAL) << e.what();
    }
}

TEST(Basic, AttachFdAcceptsAPinnedMap) {
    TLD_REQUIRE_KERNEL();
    support::PinnedMap map;
    // An fd of the pinned map, as a program that created the map itself would hold.
    union {
        std::uint64_t pathname;
        std::uint8_t pad[128];
    } attr{};
    attr.pathname = reinterpret_cast<std::uintptr_t>(map.path().c_str());
    int fd = static_cast<int>(::syscall(SYS_bpf, 7 /* BPF_OBJ_GET */, &attr, sizeof attr));
    ASSERT_GE(fd, 0) << std::strerror(errno);
    tld::attach_fd(fd);
    ::close(fd);  // the runtime keeps its own duplicate
    auto k = tld::Key<std::uint32_t>::get_or_create("cxx_via_fd");
    long tid = 0;
    support::Event set, done;
    std::thread t([&] {
        tid = gettid_();
        k.set(0xabcd);
        set.set();
        done.wait();
    });
    set.wait();
    support::Json doc = support::dump(map.path());
    const support::Json* th = support::dump_thread(doc, tid);
    ASSERT_NE(th, nullptr);
    EXPECT_EQ((*th)["values"]["cxx_via_fd"]["int"].num, 0xabcd);
    done.set();
    t.join();
}

// A thread whose data pointer the binding has cached registers with a map
// attached afterwards on its next access.
TEST(Basic, MapAttachedLaterSeesACachedThread) {
    TLD_REQUIRE_KERNEL();
    auto k = tld::Key<std::uint32_t>::get_or_create("cxx_late_map");
    long tid = 0;
    support::Event first, attached, second, done;
    std::thread t([&] {
        tid = gettid_();
        k.set(1);  // cached now
        first.set();
        attached.wait();
        k.set(2);  // the counter moved: registers with the new map
        second.set();
        done.wait();
    });
    first.wait();
    support::PinnedMap map;
    tld::attach(map.path());
    attached.set();
    second.wait();
    support::Json doc = support::dump(map.path());
    const support::Json* th = support::dump_thread(doc, tid);
    ASSERT_NE(th, nullptr) << "the thread did not register with the map attached later";
    EXPECT_EQ((*th)["values"]["cxx_late_map"]["int"].num, 2);
    done.set();
    t.join();
}

// DESIGN §8.4: the consumer pins a new map at the path; refresh() moves the
// thread to it with no call from the thread.
TEST(Basic, RefreshFollowsAReplacedPin) {
    TLD_REQUIRE_KERNEL();
    support::PinnedMap map;
    tld::attach(map.path());
    auto k = tld::Key<std::uint32_t>::get_or_create("cxx_refreshed");
    long tid = 0;
    support::Event ready, done;
    std::thread t([&] {
        tid = gettid_();
        k.set(41);
        ready.set();
        done.wait();
    });
    ready.wait();
    std::string out;
    ASSERT_EQ(support::run(support::cli() + " unpin --path " + map.path() + " 2>&1", &out), 0) << out;
    ASSERT_EQ(support::run(support::cli() + " pin --path " + map.path() + " 2>&1", &out), 0) << out;
    tld::refresh();
    support::Json doc = support::dump(map.path());
    const support::Json* th = support::dump_thread(doc, tid);
    ASSERT_NE(th, nullptr) << "the thread was not moved to the new map";
    EXPECT_EQ((*th)["values"]["cxx_refreshed"]["int"].num, 41);
    done.set();
    t.join();
}

}  // namespace

// A fork child inherits the parent's cached pointer: the fork handler
// re-registered the child's task with the same block, so the cached pointer
// keeps working and BPF sees the child's own value.
TEST(Basic, ForkChildRefreshesItsCache) {
    TLD_REQUIRE_KERNEL();
    support::PinnedMap map;
    tld::attach(map.path());
    auto k = tld::Key<std::uint64_t>::get_or_create("cxx_fork");
    k.set(5);  // the parent's pointer is cached now
    pid_t child = ::fork();
    ASSERT_GE(child, 0) << std::strerror(errno);
    if (child == 0) {
        // No gtest assertions here: exit codes say what went wrong.
        if (k.load() != 5) ::_exit(2);  // the block is the parent's copy
        *k.get() = 7;
        support::Json doc = support::dump(map.path());
        const support::Json* th = support::dump_thread(doc, ::getpid());
        if (th == nullptr) ::_exit(3);  // the child is not registered
        ::_exit((*th)["values"]["cxx_fork"]["int"].num == 7 ? 0 : 4);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "2: the child lost its value, 3: BPF does not see the child, 4: another value";
    EXPECT_EQ(k.load(), 5u);
    support::Json doc = support::dump(map.path());
    const support::Json* th = support::dump_thread(doc, gettid_());
    ASSERT_NE(th, nullptr);
    EXPECT_EQ((*th)["values"]["cxx_fork"]["int"].num, 5);
}
