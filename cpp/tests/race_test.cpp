// Creation races: many threads create the same and different names at once.
#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <tld/tld.hpp>

#include "support.hpp"

namespace {

// Every test of this process shares one runtime: make room for all their keys
// (the default dynamic reserve is 64 bytes), before any thread touches its data.
const bool reserve_set = (tld::set_dynamic_reserve(512), true);

constexpr int kThreads = 8;

TEST(Race, StrictCreateHasOneWinner) {
    for (int round = 0; round < 5; round++) {
        std::string name = "race_strict_" + std::to_string(round);
        support::Barrier start(kThreads);
        std::atomic<int> wins{0}, exists{0};
        std::vector<tld::RawKey> keys(kThreads);
        std::vector<std::thread> threads;
        for (int i = 0; i < kThreads; i++) {
            threads.emplace_back([&, i] {
                start.wait();
                std::error_code ec;
                keys[i] = tld::RawKey::create(name, 4, ec);
                if (!ec) {
                    wins++;
                } else if (ec.value() == EEXIST) {
                    exists++;
                } else {
                    ADD_FAILURE() << ec.message() << ": " << tld::last_error_message();
                }
            });
        }
        for (auto& t : threads) t.join();
        EXPECT_EQ(wins.load(), 1);
        EXPECT_EQ(exists.load(), kThreads - 1);
        EXPECT_EQ(tld::RawKey::find(name).size(), 4u);
    }
}

TEST(Race, GetOrCreateAgreesOnOneKey) {
    support::Barrier start(kThreads);
    std::vector<tld::Key<std::uint64_t>> keys(kThreads);
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; i++) {
        threads.emplace_back([&, i] {
            start.wait();
            keys[i] = tld::Key<std::uint64_t>::get_or_create("race_shared");
            keys[i].set(static_cast<std::uint64_t>(i) + 1);  // each thread its own value
            EXPECT_EQ(keys[i].load(), static_cast<std::uint64_t>(i) + 1);
        });
    }
    for (auto& t : threads) t.join();
    for (auto& k : keys) EXPECT_EQ(k, keys[0]);
}

TEST(Race, DistinctNamesGetDisjointRanges) {
    support::Barrier start(kThreads);
    std::vector<tld::RawKey> keys(kThreads);
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; i++) {
        threads.emplace_back([&, i] {
            start.wait();
            keys[i] = tld::RawKey::create("race_own_" + std::to_string(i), 2);
        });
    }
    for (auto& t : threads) t.join();
    std::set<size_t> slots, offsets;
    for (auto& k : keys) {
        slots.insert(k.slot());
        offsets.insert(k.offset());
        EXPECT_EQ(k.offset() % tld::value_alignment, 0u);
    }
    EXPECT_EQ(slots.size(), static_cast<size_t>(kThreads));
    EXPECT_EQ(offsets.size(), static_cast<size_t>(kThreads));
}

}  // namespace
