// Test support: the kernel gate, a pinned map, the `tld` reader, a
// dlopen'd copy of the C library, a barrier and a small JSON reader for
// `tld dump --json` (schema tld-dump/1, README "Operating tld").
#ifndef TLD_CXX_TESTS_SUPPORT_HPP
#define TLD_CXX_TESTS_SUPPORT_HPP

#include <dlfcn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <tld/tld.hpp>

namespace support {

/// The calling thread's kernel id, as BPF and `tld dump` name it.
inline long gettid_() { return static_cast<long>(::syscall(SYS_gettid)); }

/// Lowercase hex of @p n bytes, as `tld dump --json` writes them.
inline std::string hex(const void* p, size_t n) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    for (size_t i = 0; i < n; i++) {
        auto b = static_cast<const std::uint8_t*>(p)[i];
        out += digits[b >> 4];
        out += digits[b & 15];
    }
    return out;
}

/// Test setup failed: an exception where the test has them, else abort with the message.
[[noreturn]] inline void die(const std::string& message) {
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
    throw std::runtime_error(message);
#else
    std::fprintf(stderr, "%s\n", message.c_str());
    std::abort();
#endif
}

#if TLD_CXX_EXCEPTIONS
/// The errno of the tld::Error that @p f throws (its message must not be
/// empty), or 0 if it throws nothing.
template <class F>
int errno_of(F&& f) {
    try {
        f();
    } catch (const tld::Error& e) {
        EXPECT_FALSE(e.message().empty());
        return e.code().value();
    }
    return 0;
}
#endif

inline std::string env_or(const char* name, const char* fallback) {
    const char* v = std::getenv(name);
    return v != nullptr && *v != '\0' ? v : fallback;
}

/// The `tld` tool (CTest sets TLD_CLI to target/debug/tld).
inline std::string cli() { return env_or("TLD_CLI", "target/debug/tld"); }

/// Kernel tests need root; outside CI they skip, under CI=true they fail.
#define TLD_REQUIRE_KERNEL()                                                                          \
    do {                                                                                               \
        if (::geteuid() != 0) {                                                                        \
            if (::support::env_or("CI", "") == "true") {                                               \
                FAIL() << "kernel test needs root (BPF maps and programs); CI=true makes this a failure"; \
            }                                                                                          \
            GTEST_SKIP() << "kernel test skipped: needs root (BPF maps and programs)";                 \
        }                                                                                              \
    } while (0)

/// Runs a shell command; returns its exit status and stdout.
inline int run(const std::string& cmd, std::string* out = nullptr) {
    FILE* f = ::popen(cmd.c_str(), "r");
    if (f == nullptr) {
        return -1;
    }
    std::string text;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
        text.append(buf, n);
    }
    int status = ::pclose(f);
    if (out != nullptr) {
        *out = text;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/// A tld_data_map pinned by `tld pin` at a path unique to this test process,
/// unpinned (and its directory removed) at the end.
class PinnedMap {
public:
    PinnedMap() {
        dir_ = "/sys/fs/bpf/tld-cxx-test-" + std::to_string(::getpid());
        path_ = dir_ + "/tld_data_map";
        std::string out;
        int rc = run(cli() + " pin --path " + path_ + " 2>&1", &out);
        if (rc != 0) {
            die("tld pin --path " + path_ + " failed (" + std::to_string(rc) + "): " + out);
        }
    }
    ~PinnedMap() {
        run(cli() + " unpin --path " + path_ + " >/dev/null 2>&1");
        ::rmdir(dir_.c_str());
    }
    PinnedMap(const PinnedMap&) = delete;
    PinnedMap& operator=(const PinnedMap&) = delete;

    const std::string& path() const { return path_; }

private:
    std::string dir_, path_;
};

// ---- a JSON reader, enough for tld-dump/1 ----

struct Json {
    enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
    bool b = false;
    double num = 0;
    std::string str;
    std::vector<Json> arr;
    std::map<std::string, Json> obj;

    const Json& operator[](const std::string& k) const {
        static const Json null;
        auto it = obj.find(k);
        return it == obj.end() ? null : it->second;
    }
    bool has(const std::string& k) const { return obj.count(k) != 0; }
};

class JsonParser {
public:
    explicit JsonParser(const std::string& s) : s_(s) {}
    Json parse() {
        Json v = value();
        ws();
        if (i_ != s_.size()) {
            fail("trailing data");
        }
        return v;
    }

private:
    [[noreturn]] void fail(const char* what) {
        die(std::string("JSON: ") + what + " at " + std::to_string(i_));
    }
    void ws() {
        while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) {
            i_++;
        }
    }
    bool eat(char c) {
        ws();
        if (i_ < s_.size() && s_[i_] == c) {
            i_++;
            return true;
        }
        return false;
    }
    std::string string() {
        if (!eat('"')) {
            fail("expected string");
        }
        std::string out;
        while (i_ < s_.size() && s_[i_] != '"') {
            char c = s_[i_++];
            if (c == '\\') {
                char e = s_[i_++];
                switch (e) {
                    case 'n': out += '\n'; break;
                    case 't': out += '\t'; break;
                    case 'u': out += '?'; i_ += 4; break;
                    default: out += e;
                }
            } else {
                out += c;
            }
        }
        i_++;
        return out;
    }
    Json value() {
        ws();
        Json v;
        if (i_ >= s_.size()) {
            fail("unexpected end");
        }
        char c = s_[i_];
        if (c == '{') {
            i_++;
            v.kind = Json::Object;
            if (eat('}')) {
                return v;
            }
            do {
                std::string k = string();
                if (!eat(':')) {
                    fail("expected :");
                }
                v.obj[k] = value();
            } while (eat(','));
            if (!eat('}')) {
                fail("expected }");
            }
        } else if (c == '[') {
            i_++;
            v.kind = Json::Array;
            if (eat(']')) {
                return v;
            }
            do {
                v.arr.push_back(value());
            } while (eat(','));
            if (!eat(']')) {
                fail("expected ]");
            }
        } else if (c == '"') {
            v.kind = Json::String;
            v.str = string();
        } else if (s_.compare(i_, 4, "true") == 0) {
            v.kind = Json::Bool, v.b = true, i_ += 4;
        } else if (s_.compare(i_, 5, "false") == 0) {
            v.kind = Json::Bool, i_ += 5;
        } else if (s_.compare(i_, 4, "null") == 0) {
            i_ += 4;
        } else {
            size_t end = 0;
            v.kind = Json::Number;
            v.num = std::stod(s_.substr(i_, 32), &end);
            i_ += end;
        }
        return v;
    }

    const std::string& s_;
    size_t i_ = 0;
};

/// `tld dump PID --json --path MAP`: what BPF reads of this process.
inline Json dump(const std::string& map_path) {
    std::string out;
    int rc = run(cli() + " dump " + std::to_string(::getpid()) + " --json --path " + map_path, &out);
    if (rc != 0) {
        die("tld dump failed with exit code " + std::to_string(rc));
    }
    Json doc = JsonParser(out).parse();
    if (doc["schema"].str != "tld-dump/1") {
        die("unexpected schema: " + doc["schema"].str);
    }
    return doc;
}

/// The dump's thread object for @p tid, or nullptr. Points into @p doc.
inline const Json* dump_thread(const Json&& doc, long tid) = delete;  // would dangle
inline const Json* dump_thread(const Json& doc, long tid) {
    for (const Json& t : doc["threads"].arr) {
        if (static_cast<long>(t["tid"].num) == tid) {
            return &t;
        }
    }
    return nullptr;
}

/// A copy of libtld.so (TLD_LIBTLD_SO) copied to a file of its own and loaded
/// with RTLD_LOCAL: its own statics, as another language's copy of the core.
class CLibrary {
public:
    struct key_t {
        std::int16_t off;
    };

    explicit CLibrary(const std::string& name) {
        std::string src = env_or("TLD_LIBTLD_SO", "target/debug/libtld.so");
        path_ = std::filesystem::temp_directory_path() / (name + "-" + std::to_string(::getpid()) + ".so");
        std::filesystem::copy_file(src, path_, std::filesystem::copy_options::overwrite_existing);
        handle_ = ::dlopen(path_.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (handle_ == nullptr) {
            die(std::string("dlopen: ") + ::dlerror());
        }
    }
    ~CLibrary() {
        // Never dlclose: the runtime's thread-exit destructors live in this copy's code.
        std::error_code ec;
        std::filesystem::remove(path_, ec);
    }
    CLibrary(const CLibrary&) = delete;
    CLibrary& operator=(const CLibrary&) = delete;

    template <class F>
    F* sym(const char* name) const {
        void* p = ::dlsym(handle_, name);
        if (p == nullptr) {
            die(std::string("dlsym ") + name);
        }
        return reinterpret_cast<F*>(p);
    }

    key_t create_key(const char* name, size_t size) const { return sym<key_t(const char*, size_t)>("tld_create_key")(name, size); }
    key_t find_key(const char* name) const { return sym<key_t(const char*)>("tld_find_key")(name); }
    void* data(key_t k) const { return sym<void*(key_t)>("tld_data")(k); }
    const void* metadata_page() const { return sym<const void*()>("tld_metadata_page")(); }
    int live_blocks() const { return sym<int()>("tld_live_blocks")(); }

private:
    std::filesystem::path path_;
    void* handle_ = nullptr;
};

/// Threads wait here until all have arrived.
class Barrier {
public:
    explicit Barrier(size_t n) : n_(n) {}
    void wait() {
        std::unique_lock<std::mutex> l(m_);
        if (++arrived_ == n_) {
            cv_.notify_all();
        } else {
            cv_.wait(l, [&] { return arrived_ >= n_; });
        }
    }

private:
    std::mutex m_;
    std::condition_variable cv_;
    size_t n_, arrived_ = 0;
};

/// A one-shot event threads can wait for.
class Event {
public:
    void set() {
        std::lock_guard<std::mutex> l(m_);
        set_ = true;
        cv_.notify_all();
    }
    void wait() {
        std::unique_lock<std::mutex> l(m_);
        cv_.wait(l, [&] { return set_; });
    }

private:
    std::mutex m_;
    std::condition_variable cv_;
    bool set_ = false;
};

}  // namespace support

#endif
