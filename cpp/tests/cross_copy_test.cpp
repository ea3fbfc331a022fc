// One runtime per process (DESIGN §4): this executable's copy of the core
// (linked through tld::tld), a dlopen'd copy of the C library and a dlopen'd
// C++ shared library with a copy of its own share one metadata page, one key
// table and one block per thread.
#include <dlfcn.h>

#include <cstring>
#include <thread>

#include <tld/tld.hpp>

#include "support.hpp"

namespace {

// The C++ shared library (cross_copy_plugin.cpp), loaded RTLD_LOCAL.
struct Plugin {
    Plugin() {
        handle = ::dlopen(support::env_or("TLD_CXX_PLUGIN", "libtld_cxx_plugin.so").c_str(), RTLD_NOW | RTLD_LOCAL);
        if (handle == nullptr) throw std::runtime_error(std::string("dlopen plugin: ") + ::dlerror());
        meta = reinterpret_cast<std::size_t (*)()>(::dlsym(handle, "plugin_metadata_page"));
        offset = reinterpret_cast<long (*)(const char*)>(::dlsym(handle, "plugin_key_offset"));
        create = reinterpret_cast<long (*)(const char*, std::size_t)>(::dlsym(handle, "plugin_create_key"));
        data = reinterpret_cast<void* (*)()>(::dlsym(handle, "plugin_thread_data"));
        if (!meta || !offset || !create || !data) throw std::runtime_error("plugin symbols missing");
    }
    void* handle;
    std::size_t (*meta)();
    long (*offset)(const char*);
    long (*create)(const char*, std::size_t);
    void* (*data)();
};

TEST(CrossCopy, OneMetadataPageOneKeyTableOneBlock) {
    support::CLibrary c("libtld-cross-copy");
    Plugin plugin;

    const std::size_t page = tld::runtime_stats().meta_page;
    ASSERT_NE(page, 0u);
    EXPECT_EQ(reinterpret_cast<std::size_t>(c.metadata_page()), page);
    EXPECT_EQ(plugin.meta(), page);

    // Created through the C ABI, found through C++ (and the plugin) at the same offset.
    auto from_c = c.create_key("from_c", 8);
    ASSERT_GE(from_c.off, 0);
    tld::Key<std::uint64_t> k = tld::Key<std::uint64_t>::find("from_c");
    EXPECT_EQ(k.offset(), static_cast<std::size_t>(from_c.off));
    EXPECT_EQ(plugin.offset("from_c"), from_c.off);

    // Created through C++, found through C.
    auto mine = tld::RawKey::create("from_cxx", 4);
    EXPECT_EQ(c.find_key("from_cxx").off, static_cast<std::int16_t>(mine.offset()));
    // Created through the plugin, found by both.
    long off = plugin.create("from_plugin", 16);
    ASSERT_GE(off, 0);
    EXPECT_EQ(tld::RawKey::find("from_plugin").offset(), static_cast<std::size_t>(off));
    EXPECT_EQ(c.find_key("from_plugin").off, off);

    // One block per thread: the same pointers, whoever asks.
    for (int i = 0; i < 2; i++) {
        std::thread([&] {
            k.set(0x1122334455667788ull);
            EXPECT_EQ(c.data(from_c), static_cast<void*>(k.get()));
            EXPECT_EQ(*static_cast<std::uint64_t*>(c.data(from_c)), 0x1122334455667788ull);
            EXPECT_EQ(plugin.data(), static_cast<void*>(tld::thread_data()));
        }).join();
    }
    EXPECT_EQ(c.live_blocks(), static_cast<int>(tld::runtime_stats().live_blocks));
}

// The C++ binding caches each thread's data pointer; a block released by
// another copy (C's tld_free()) must not leave it stale.
TEST(CrossCopy, TldFreeFromCInvalidatesTheCxxCache) {
    support::CLibrary c("libtld-cross-free");
    auto k = tld::Key<std::uint64_t>::get_or_create("cross_free");
    auto ck = c.find_key("cross_free");
    std::thread([&] {
        k.set(9);
        const size_t live = tld::runtime_stats().live_blocks;
        c.sym<void()>("tld_free")();
        EXPECT_EQ(tld::runtime_stats().live_blocks, live - 1);
        EXPECT_EQ(k.load(), 0u);  // a fresh block, not the released one
        EXPECT_EQ(tld::runtime_stats().live_blocks, live);
        EXPECT_EQ(c.data(ck), static_cast<void*>(k.get()));
        k.set(10);
        EXPECT_EQ(*static_cast<std::uint64_t*>(c.data(ck)), 10u);
    }).join();
}

}  // namespace
