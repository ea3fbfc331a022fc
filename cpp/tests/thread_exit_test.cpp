// A thread that exits leaves nothing behind: its block is released (the C
// ABI's tld_live_blocks(), read through a copy of libtld.so, agrees) and the
// BPF reader no longer shows it.
#include <sys/syscall.h>
#include <unistd.h>

#include <pthread.h>

#include <atomic>
#include <thread>

#include <tld/tld.hpp>

#include "support.hpp"

namespace {

using support::gettid_;

TEST(ThreadExit, ReleasesBlockAndRegistration) {
    TLD_REQUIRE_KERNEL();
    support::PinnedMap map;
    support::CLibrary c("libtld-thread-exit");
    tld::attach(map.path());
    auto k = tld::Key<std::uint32_t>::get_or_create("exit_value");
    k.set(1);  // the main thread stays registered: the reader needs the process to use tld
    const int baseline = c.live_blocks();
    EXPECT_EQ(baseline, static_cast<int>(tld::runtime_stats().live_blocks));

    long tid = 0;
    support::Event set, go;
    std::thread t([&] {
        tid = gettid_();
        k.set(77);
        set.set();
        go.wait();
    });
    set.wait();
    EXPECT_EQ(c.live_blocks(), baseline + 1);
    support::Json before = support::dump(map.path());
    const support::Json* th = support::dump_thread(before, tid);
    ASSERT_NE(th, nullptr);
    EXPECT_EQ((*th)["values"]["exit_value"]["int"].num, 77);

    go.set();
    t.join();
    EXPECT_EQ(c.live_blocks(), baseline);
    EXPECT_EQ(tld::runtime_stats().live_blocks, static_cast<size_t>(baseline));
    support::Json after = support::dump(map.path());
    EXPECT_EQ(support::dump_thread(after, tid), nullptr) << "the exited thread is still registered";
    EXPECT_NE(support::dump_thread(after, gettid_()), nullptr);
}

TEST(ThreadExit, ManyShortThreadsLeakNothing) {
    support::CLibrary c("libtld-many-threads");
    auto k = tld::Key<std::uint64_t>::get_or_create("exit_many");
    const int baseline = c.live_blocks();
    for (int round = 0; round < 20; round++) {
        std::thread threads[4];
        for (auto& t : threads) {
            t = std::thread([&] { k.set(round); });
        }
        for (auto& t : threads) t.join();
    }
    EXPECT_EQ(c.live_blocks(), baseline);
}

// A pthread key destructor that runs after the runtime released the
// thread's block (keys are destroyed in creation order; the runtime's key is
// older) must not be handed the released block through the C++ cache.
pthread_key_t late_key;
tld::Key<std::uint64_t> late_value;
std::atomic<std::uint64_t*> late_pointer{nullptr};
std::atomic<std::uint64_t> late_loaded{~0ull};

void late_destructor(void*) {
    late_loaded = late_value.load();  // the released block held 5; a fresh one holds 0
    late_pointer = late_value.get();
}

TEST(ThreadExit, LateDestructorDoesNotSeeTheReleasedBlock) {
    support::CLibrary c("libtld-late-destructor");
    late_value = tld::Key<std::uint64_t>::get_or_create("exit_late");
    ASSERT_EQ(::pthread_key_create(&late_key, late_destructor), 0);
    const int baseline = c.live_blocks();
    std::uint64_t* before = nullptr;
    std::thread([&] {
        late_value.set(5);
        before = late_value.get();
        ::pthread_setspecific(late_key, &late_key);
    }).join();
    EXPECT_EQ(late_loaded.load(), 0u);
    EXPECT_NE(late_pointer.load(), nullptr);
    EXPECT_EQ(c.live_blocks(), baseline) << "the destructor's block was not released";
    (void)before;
    ::pthread_key_delete(late_key);
}

TEST(ThreadExit, FreeThreadBlockGivesAFreshZeroedBlock) {
    auto k = tld::Key<std::uint64_t>::get_or_create("exit_free");
    std::thread([&] {
        k.set(123);
        const size_t live = tld::runtime_stats().live_blocks;
        tld::free_thread_block();
        EXPECT_EQ(tld::runtime_stats().live_blocks, live - 1);
        EXPECT_EQ(k.load(), 0u);  // a new block
        EXPECT_EQ(tld::runtime_stats().live_blocks, live);
    }).join();
}

}  // namespace
