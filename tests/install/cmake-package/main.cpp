// The C++ consumer of tld (tld::tld), built through find_package(tld) from an
// installed prefix and through add_subdirectory (the same source).
// Usage: app KEY VALUE. Publishes VALUE under KEY on a new thread, prints
// "ready TID" and keeps the thread alive until stdin reaches EOF.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

#include <tld/tld.hpp>

int main(int argc, char** argv) {
    if (argc != 3) {
        std::cerr << "usage: app KEY VALUE\n";
        return 2;
    }
    try {
        tld::attach();  // $TLD_MAP_PATH
        auto key = tld::Key<std::uint64_t>::get_or_create(argv[1]);
        std::uint64_t value = std::stoull(argv[2]);
        std::thread([&] {
            key.set(value);  // registers this thread with the attached map
            std::cout << "ready " << gettid() << std::endl;
            std::string line;
            while (std::getline(std::cin, line)) {
            }
        }).join();
    } catch (const tld::Error& e) {
        std::cerr << "app: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
