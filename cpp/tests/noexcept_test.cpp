// The binding compiled with -fno-exceptions: only the std::error_code&
// overloads exist, and errors come back as codes with their message.
#include <thread>

#include <tld/tld.hpp>

#include "support.hpp"

static_assert(TLD_CXX_EXCEPTIONS == 0, "this test is built with -fno-exceptions");

namespace {

TEST(NoExceptions, ErrorCodes) {
    std::error_code ec;
    auto k = tld::Key<std::uint64_t>::create("noexc_key", ec);
    ASSERT_FALSE(ec) << tld::last_error_message();
    tld::Key<std::uint64_t>::create("noexc_key", ec);
    EXPECT_EQ(ec, std::errc::file_exists);
    EXPECT_NE(tld::last_error_message().find("noexc_key"), std::string::npos);
    tld::RawKey::create(std::string(62, 'x'), 1, ec);
    EXPECT_EQ(ec.value(), ENAMETOOLONG);
    tld::RawKey::create("noexc_zero", 0, ec);
    EXPECT_EQ(ec.value(), EINVAL);
    tld::RawKey::find("noexc_absent", ec);
    EXPECT_EQ(ec.value(), ENOENT);

    k.set(11, ec);
    EXPECT_FALSE(ec);
    EXPECT_EQ(*k.get(ec), 11u);
    std::thread([&] {
        std::error_code tec;
        EXPECT_EQ(k.load(tec), 0u);
        EXPECT_FALSE(tec);
    }).join();
    tld::attach("/sys/fs/bpf/noexc-missing/tld_data_map", ec);
    EXPECT_EQ(ec.value(), ENOENT);
}

}  // namespace
