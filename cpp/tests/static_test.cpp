// Keys defined with TLD_CXX_DEFINE_KEY exist before main and get exactly
// their size in every thread block, before the dynamic reserve.
#include <cstdint>
#include <thread>

#include <tld/tld.hpp>

#include "support.hpp"

namespace {
struct Tag {
    char text[24];
};
}  // namespace

// As a header shared by several translation units would declare it.
TLD_CXX_DECLARE_KEY(static_priority, std::int32_t);

TLD_CXX_DEFINE_KEY(static_priority, std::int32_t, "static_priority");
TLD_CXX_DEFINE_KEY(static_tag, Tag, "static_tag");
// The same name with another size: the definition fails (EEXIST), remembered.
TLD_CXX_DEFINE_KEY(static_conflict, std::int64_t, "static_priority");

namespace {

// Set at the top of main (below): the constructors had created the keys.
bool defined_before_main = false;

TEST(Static, DefinedBeforeMainWithExactSizes) {
    tld::RuntimeStats s = tld::runtime_stats();
    EXPECT_FALSE(s.frozen) << "no thread touched its data yet";
    tld::RawKey prio = tld::RawKey::find("static_priority");
    tld::RawKey tag = tld::RawKey::find("static_tag");
    EXPECT_EQ(prio.size(), 4u);
    EXPECT_EQ(tag.size(), sizeof(Tag));
    EXPECT_EQ(static_priority.key().raw(), prio);
    EXPECT_EQ(static_tag.key().raw(), tag);
    // Static keys grow the block: their rounded sizes plus the 64-byte reserve.
    EXPECT_EQ(s.data_size, 8u + 24u + 64u);
}

TEST(Static, DefinitionFailureIsRemembered) {
    try {
        static_conflict.set(1);
        FAIL() << "a static key of another size than the existing one was created";
    } catch (const tld::Error& e) {
        EXPECT_EQ(e.code().value(), EEXIST);
        // The core's message, not a generic one: it names the key and says
        // why (the sizes).
        EXPECT_NE(e.message().find("\"static_priority\" exists with size 4, not the requested 8"), std::string::npos)
            << e.message();
    }
    std::error_code ec;
    EXPECT_EQ(static_conflict.get(ec), nullptr);
    EXPECT_EQ(ec.value(), EEXIST);
    // From another thread too (the message is remembered with the failure,
    // not taken from the thread's last error).
    std::string elsewhere;
    std::thread([&] {
        try {
            static_conflict.key();
        } catch (const tld::Error& e) {
            elsewhere = e.message();
        }
    }).join();
    EXPECT_NE(elsewhere.find("exists with size 4"), std::string::npos) << elsewhere;
    EXPECT_STREQ(static_conflict.error_message(), elsewhere.c_str());
    EXPECT_STREQ(static_priority.error_message(), "");
}

TEST(Static, ValuesPerThread) {
    static_priority.set(5);
    std::thread([] {
        EXPECT_EQ(static_priority.load(), 0);
        Tag t{"worker"};
        static_tag.set(t);
        EXPECT_STREQ(static_tag.get()->text, "worker");
    }).join();
    EXPECT_EQ(static_priority.load(), 5);
    EXPECT_EQ(static_tag.load().text[0], '\0');
    EXPECT_TRUE(tld::runtime_stats().frozen);
}

TEST(Static, WasDefinedBeforeMain) { EXPECT_TRUE(defined_before_main); }

}  // namespace

int main(int argc, char** argv) {
    std::error_code ec1, ec2;
    tld::RawKey::find("static_priority", ec1);
    tld::RawKey::find("static_tag", ec2);
    defined_before_main = !ec1 && !ec2;
    ::testing::InitGoogleTest(&argc, argv);
    return RUN_ALL_TESTS();
}
