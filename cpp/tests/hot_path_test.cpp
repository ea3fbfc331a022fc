// The inlined get() of Key, RawKey and StaticKey tests one sign for two
// things: an empty key and an empty thread cache (tld.hpp, "A key's hot-path
// word"). Every case that must leave the fast path does, on a thread whose
// cache is warm, and every key lands at its offset, lowest and highest
// included; BPF's reader sees what the fast path wrote.
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <tld/tld.hpp>

#include "support.hpp"

// Room for a key near the top of the data area (a block holds at most a
// page of data).
static const bool reserve_set = (tld::set_dynamic_reserve(4000), true);

// A load-time key: the lowest offset of the process (static keys come first).
TLD_CXX_DEFINE_KEY(hot_static, std::uint64_t, "hot_static");

namespace {

using support::errno_of;
using support::gettid_;

// Makes the calling thread's cache warm: later gets take the fast path.
void warm_up() {
    static const auto any = tld::Key<std::uint8_t>::get_or_create("hot_warm");
    any.set(1);
    ASSERT_NE(tld::thread_data(), nullptr);
}

TEST(HotPath, EmptyKeysFailOnAWarmThread) {
    warm_up();
    EXPECT_EQ(errno_of([] { tld::RawKey().get(); }), EINVAL);
    EXPECT_EQ(errno_of([] { tld::Key<std::uint64_t>().get(); }), EINVAL);
    EXPECT_EQ(errno_of([] { tld::Key<std::uint64_t>().set(1); }), EINVAL);
    EXPECT_EQ(errno_of([] { (void)tld::Key<std::uint64_t>().load(); }), EINVAL);

    // An empty key from a failed error_code call is empty too.
    std::error_code ec;
    auto failed = tld::Key<std::uint64_t>::find("hot_absent", ec);
    ASSERT_EQ(ec.value(), ENOENT);
    EXPECT_FALSE(failed.valid());
    EXPECT_EQ(failed.get(ec), nullptr);
    EXPECT_EQ(ec.value(), EINVAL);
    failed.set(5, ec);
    EXPECT_EQ(ec.value(), EINVAL);
    EXPECT_EQ(tld::RawKey().get(ec), nullptr);
    EXPECT_EQ(ec.value(), EINVAL);
}

TEST(HotPath, FastPathClearsTheErrorCode) {
    auto k = tld::Key<std::uint64_t>::get_or_create("hot_clear");
    warm_up();
    std::error_code ec = std::make_error_code(std::errc::io_error);
    std::uint64_t* p = k.get(ec);
    EXPECT_FALSE(ec);
    EXPECT_EQ(reinterpret_cast<std::uint8_t*>(p), tld::thread_data() + k.offset());
    ec = std::make_error_code(std::errc::io_error);
    k.raw().get(ec);
    EXPECT_FALSE(ec);
}

TEST(HotPath, EveryKeyAtItsOffsetLowestAndHighest) {
    // The static key at offset 0, then sizes that spread offsets over the
    // data area up to its top.
    std::vector<tld::RawKey> keys;
    keys.push_back(hot_static.key().raw());
    keys.push_back(tld::RawKey::get_or_create("hot_first", 8));
    keys.push_back(tld::RawKey::get_or_create("hot_pad", 3800));
    keys.push_back(tld::RawKey::get_or_create("hot_high", 8));
    keys.push_back(tld::RawKey::get_or_create("hot_three", 3));
    ASSERT_EQ(keys[0].offset(), 0u);
    ASSERT_GT(keys[3].offset(), 3800u);

    auto check = [&](const char* where) {
        std::uint8_t* base = tld::thread_data();
        for (const tld::RawKey& k : keys) {
            EXPECT_EQ(static_cast<std::uint8_t*>(k.get()), base + k.offset()) << where;
            std::error_code ec;
            EXPECT_EQ(static_cast<std::uint8_t*>(k.get(ec)), base + k.offset()) << where;
        }
    };
    std::thread([&] { check("cold thread: first get() takes the slow path"); }).join();
    warm_up();
    check("warm thread");

    // Values written through the fast path stay apart.
    auto high = tld::Key<std::uint64_t>::from_raw_unchecked(keys[3]);
    auto first = tld::Key<std::uint64_t>::from_raw_unchecked(keys[1]);
    high.set(0x1122334455667788u);
    first.set(42);
    EXPECT_EQ(high.load(), 0x1122334455667788u);
    EXPECT_EQ(first.load(), 42u);
}

TEST(HotPath, FreedBlockTakesTheSlowPathAgain) {
    auto k = tld::Key<std::uint64_t>::get_or_create("hot_freed");
    std::thread([&] {
        k.set(9);
        hot_static.set(10);
        tld::free_thread_block();
        // The cache was cleared: both gets allocate a new, zeroed block.
        EXPECT_EQ(k.load(), 0u);
        EXPECT_EQ(hot_static.load(), 0u);
        EXPECT_EQ(reinterpret_cast<std::uint8_t*>(k.get()), tld::thread_data() + k.offset());
        EXPECT_EQ(reinterpret_cast<std::uint8_t*>(hot_static.get()),
                  tld::thread_data() + hot_static.key().offset());
    }).join();
}

TEST(HotPath, StaticKeyResolvedOnFirstUse) {
    // Not defined with the macro: no constructor created it; the first get()
    // resolves it through the slow path, later ones take the fast path.
    static tld::StaticKey<std::uint32_t> late{"hot_late"};
    warm_up();
    std::error_code ec;
    EXPECT_EQ(tld::RawKey::find("hot_late", ec).valid(), false);
    late.set(7);
    EXPECT_EQ(tld::RawKey::find("hot_late").size(), 4u);
    EXPECT_EQ(late.load(), 7u);
    ec = std::make_error_code(std::errc::io_error);
    EXPECT_EQ(*late.get(ec), 7u);
    EXPECT_FALSE(ec);
    EXPECT_EQ(reinterpret_cast<std::uint8_t*>(late.get()), tld::thread_data() + late.key().offset());
}

TEST(HotPath, FailedStaticKeyFailsEveryTimeOnAWarmThread) {
    (void)tld::Key<std::uint32_t>::get_or_create("hot_taken");
    static tld::StaticKey<std::uint64_t> conflict{"hot_taken"};
    warm_up();
    for (int i = 0; i < 3; i++) {
        EXPECT_EQ(errno_of([] { conflict.set(1); }), EEXIST) << "call " << i;
        EXPECT_EQ(errno_of([] { (void)conflict.get(); }), EEXIST) << "call " << i;
        std::error_code ec;
        EXPECT_EQ(conflict.get(ec), nullptr);
        EXPECT_EQ(ec.value(), EEXIST);
        conflict.set(2, ec);
        EXPECT_EQ(ec.value(), EEXIST);
        EXPECT_EQ(conflict.load(ec), 0u);
        EXPECT_EQ(ec.value(), EEXIST);
    }
    // The 4-byte key kept its value: nothing wrote 8 bytes through it.
    auto taken = tld::Key<std::uint32_t>::find("hot_taken");
    taken.set(0xabcdef01u);
    EXPECT_EQ(taken.load(), 0xabcdef01u);
}

TEST(HotPath, BpfReadsWhatTheFastPathWrote) {
    TLD_REQUIRE_KERNEL();
    support::PinnedMap map;
    auto k = tld::Key<std::uint64_t>::get_or_create("hot_bpf");
    long tid = 0;
    support::Event written, checked, attached, rewritten, done;
    std::thread t([&] {
        tid = gettid_();
        k.set(1);  // warm: a block, registered with no map yet
        written.set();
        attached.wait();
        // A map was attached after the cache was filled: the core cleared
        // the cache, so this get() registers the thread with the map.
        *k.get() = 0x5eed;
        hot_static.set(0x57a7);
        rewritten.set();
        done.wait();
    });
    written.wait();
    tld::attach(map.path());
    attached.set();
    rewritten.wait();
    support::Json doc = support::dump(map.path());
    done.set();
    t.join();
    const support::Json* th = support::dump_thread(doc, tid);
    ASSERT_NE(th, nullptr) << "the thread did not register with the map attached after its first access";
    EXPECT_EQ((*th)["values"]["hot_bpf"]["int"].num, 0x5eed);
    EXPECT_EQ((*th)["values"]["hot_static"]["int"].num, 0x57a7);
}

}  // namespace
