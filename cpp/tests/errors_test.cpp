// Every error of key creation, as tld::Error with its errno, in a process of
// its own: E2BIG and ENOSPC use up the runtime's budget and slots.
#include <string>
#include <thread>

#include <tld/tld.hpp>

#include "support.hpp"

namespace {

using support::errno_of;

TEST(Errors, InvalidArguments) {
    EXPECT_EQ(errno_of([] { tld::RawKey::create("", 4); }), EINVAL);
    EXPECT_EQ(errno_of([] { tld::RawKey::create("cxx_zero", 0); }), EINVAL);
    EXPECT_EQ(errno_of([] { tld::RawKey::create(std::string_view("a\0b", 3), 4); }), EINVAL);
    EXPECT_EQ(errno_of([] { tld::RawKey::create("cxx_huge", 1 << 20); }), E2BIG);  // never fits, as upstream
    EXPECT_EQ(errno_of([] { tld::RawKey().get(); }), EINVAL);
    EXPECT_EQ(errno_of([] { tld::Key<int>().set(1); }), EINVAL);
}

TEST(Errors, NameTooLong) {
    std::string longest(tld::max_name_length, 'n');
    EXPECT_EQ(tld::RawKey::create(longest, 1).size(), 1u);  // 61 bytes: fine
    std::string too_long(tld::max_name_length + 1, 'n');
    try {
        tld::Key<std::uint8_t>::create(too_long);
        FAIL();
    } catch (const tld::Error& e) {
        EXPECT_EQ(e.code().value(), ENAMETOOLONG);
        EXPECT_NE(e.message().find("62 bytes"), std::string::npos) << e.message();
    }
    EXPECT_EQ(errno_of([&] { tld::RawKey::find(too_long); }), ENAMETOOLONG);
}

TEST(Errors, Exists) {
    tld::Key<std::uint32_t>::create("cxx_taken");
    try {
        tld::Key<std::uint32_t>::create("cxx_taken");
        FAIL();
    } catch (const tld::Error& e) {
        EXPECT_EQ(e.code(), std::errc::file_exists);
        EXPECT_NE(std::string(e.what()).find("cxx_taken"), std::string::npos) << e.what();
    }
    // get_or_create: the same size shares, another size is EEXIST.
    EXPECT_EQ(errno_of([] { tld::Key<std::uint32_t>::get_or_create("cxx_taken"); }), 0);
    EXPECT_EQ(errno_of([] { tld::Key<std::uint64_t>::get_or_create("cxx_taken"); }), EEXIST);
}

// One test, in this order: E2BIG needs the data size frozen (a thread block
// exists), ENOSPC then takes every slot left with keys small enough to fit.
TEST(Errors, TooBigThenNoSpace) {
    tld::set_dynamic_reserve(1024);  // room for a key in every remaining slot
    std::thread([] { (void)tld::thread_data(); }).join();  // freezes the data size
    EXPECT_TRUE(tld::runtime_stats().frozen);
    EXPECT_EQ(tld::runtime_stats().live_blocks, 0u);
    EXPECT_EQ(errno_of([] { tld::set_dynamic_reserve(2048); }), EBUSY);

    try {
        tld::RawKey::create("cxx_too_big", 2000);
        FAIL();
    } catch (const tld::Error& e) {
        EXPECT_EQ(e.code().value(), E2BIG);
        EXPECT_NE(e.message().find("cxx_too_big"), std::string::npos) << e.message();
    }

    const size_t max_slots = tld::runtime_stats().page_size / 64 - 1;
    size_t created = 0;
    for (size_t i = 0; i < max_slots + 1; i++) {
        std::error_code ec;
        tld::RawKey::create("cxx_fill_" + std::to_string(i), 1, ec);
        if (ec) {
            EXPECT_EQ(ec.value(), ENOSPC) << tld::last_error_message();
            break;
        }
        created++;
    }
    try {
        tld::Key<std::uint8_t>::create("cxx_one_more");
        FAIL();
    } catch (const tld::Error& e) {
        EXPECT_EQ(e.code().value(), ENOSPC);
        EXPECT_NE(e.message().find("cxx_one_more"), std::string::npos) << e.message();
    }
    // Every slot is taken now: the keys of the earlier tests plus ours.
    tld::RawKey last = tld::RawKey::find("cxx_fill_" + std::to_string(created - 1));
    EXPECT_EQ(last.slot(), max_slots - 1);
}

}  // namespace
