// A C++ shared library with its own copy of the core (tld::tld linked into
// it, its symbols kept local), as a service's plugin would be.
#include <cstddef>
#include <system_error>

#include <tld/tld.hpp>

extern "C" {

std::size_t plugin_metadata_page() { return tld::runtime_stats().meta_page; }

long plugin_key_offset(const char* name) {
    std::error_code ec;
    tld::RawKey k = tld::RawKey::find(name, ec);
    return ec ? -ec.value() : static_cast<long>(k.offset());
}

long plugin_create_key(const char* name, std::size_t size) {
    std::error_code ec;
    tld::RawKey k = tld::RawKey::create(name, size, ec);
    return ec ? -ec.value() : static_cast<long>(k.offset());
}

void* plugin_thread_data() { return tld::thread_data(); }
}
