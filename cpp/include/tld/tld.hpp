// SPDX-License-Identifier: MIT OR Apache-2.0
/**
 * @file tld/tld.hpp
 * @brief Task local data for C++: per-thread values that BPF programs read in place.
 *
 * Link with the CMake target `tld::tld` (cpp/CMakeLists.txt): the static
 * archive `libtld_cxx.a` built by cargo, which carries its own copy of the tld
 * core, plus this header.
 *
 * @code
 * TLD_CXX_DEFINE_KEY(priority, int, "priority");   // static key, created before main
 *
 * int main() {
 *     tld::attach();                                 // $TLD_MAP_PATH or /sys/fs/bpf/tld/tld_data_map
 *     auto request = tld::Key<std::uint64_t>::get_or_create("request_id");
 *     std::thread([&] {
 *         priority.set(3);                           // first access: allocate + register this thread
 *         *request.get() = 42;                       // afterwards: a plain store
 *     }).join();
 * }
 * @endcode
 *
 * ERRORS. Every fallible call has two forms, like std::filesystem: one throws
 * tld::Error (a std::system_error whose code() is the errno in
 * std::generic_category() and whose message names the key or map and the
 * cause), the other takes a `std::error_code&` as its last argument, is
 * `noexcept`, sets the code (cleared on success) and leaves the message in
 * tld::last_error_message(). Code built with `-fno-exceptions` sees only the
 * second form. The errno values:
 *   - EINVAL: empty name, size 0 or larger than a thread block can hold, a
 *     file that is not a pinned tld_data_map (wrong type, layout, no BTF)
 *   - ENAMETOOLONG: a name longer than 61 bytes (never truncated)
 *   - EEXIST: the name is taken (create), or taken with another size
 *     (get_or_create, find)
 *   - E2BIG: the key does not fit what is left of the per-thread data area
 *   - ENOSPC: all metadata slots are taken (page size / 64 - 1 of them)
 *   - ENOENT: no such key (find), nothing pinned at the path (attach)
 *   - EPERM/EACCES: missing privilege (root, CAP_BPF, or write access to the pin)
 *   - EBUSY: the dynamic reserve can no longer change
 *   - EPROTO: another copy of tld in this process runs an incompatible runtime
 *
 * THREADS. Every function may be called from any thread; keys are plain
 * values, copy and share them freely. A pointer returned by get() or
 * thread_data() belongs to the calling thread: it is valid on that thread
 * until the thread exits or calls tld::free_thread_block() (or `tld_free()`
 * through the C ABI, or the equivalent in any other language); never hand it
 * to another thread.
 *
 * ONE RUNTIME PER PROCESS. Every copy of the core in a process (this binding,
 * the C library, the Python extension, a Go archive) shares one metadata
 * page and one block per thread: a key created through any of them is seen
 * by all and by BPF.
 *
 * SECURITY. Whoever can write the pinned map can set any task's values. BPF
 * programs must treat these values as untrusted hints.
 */
#ifndef TLD_TLD_HPP
#define TLD_TLD_HPP

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

#include "rust/cxx.h"
#include "tld/src/bridge.rs.h"

#ifndef TLD_CXX_INITIAL_EXEC_TLS
/**
 * Define to 1 (before including tld.hpp, in every translation unit) when
 * building a shared library that programs link at start-up, not dlopen: the
 * binding's per-thread cache then uses the initial-exec TLS model, one
 * %fs-relative load instead of a __tls_get_addr call per get(). Executables
 * need nothing: their thread_locals are already local-exec.
 */
#define TLD_CXX_INITIAL_EXEC_TLS 0
#endif

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
/// 1 when the throwing API is available (exceptions enabled), else 0.
#define TLD_CXX_EXCEPTIONS 1
#else
#define TLD_CXX_EXCEPTIONS 0
#endif

namespace tld {

/// Longest key name, in bytes (the metadata slot holds 62 bytes with the NUL).
inline constexpr std::size_t max_name_length = 61;

/// Alignment of every value in a thread's data area.
inline constexpr std::size_t value_alignment = 8;

/**
 * @brief The calling thread's message for its last failed tld call: names
 * the key or map and the cause. Empty if no call failed on this thread.
 * Use it with the `std::error_code&` overloads.
 */
inline std::string last_error_message() {
    detail::Failure f = detail::last_failure();
    return std::string(f.message.data(), f.message.size());
}

#if TLD_CXX_EXCEPTIONS
/**
 * @brief The exception every throwing tld call raises.
 *
 * A std::system_error: code().value() is the errno (EEXIST, E2BIG, ENOSPC,
 * EINVAL, ENAMETOOLONG, ENOENT, ...) in std::generic_category(), so
 * `e.code() == std::errc::file_exists` works. what() starts with the message
 * naming the key or map and the cause; message() returns that message alone.
 */
class Error : public std::system_error {
public:
    /// An error with @p errno_value (positive) and the runtime's @p message.
    Error(int errno_value, const std::string& message)
        : std::system_error(errno_value, std::generic_category(), message), message_(message) {}

    /// The runtime's message (what() adds the errno's description).
    const std::string& message() const noexcept { return message_; }

private:
    std::string message_;
};
#endif

namespace detail {

inline rust::Slice<const std::uint8_t> bytes(std::string_view s) noexcept {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

inline void set_code(std::error_code& ec, int errno_value) noexcept {
    if (errno_value == 0) {
        ec.clear();
    } else {
        ec.assign(errno_value, std::generic_category());
    }
}

/// The errno of the calling thread's last failure (after a call returned failure).
inline int last_code() noexcept {
    int code = last_failure().code;
    return code != 0 ? code : EIO;
}

#if TLD_CXX_EXCEPTIONS
[[noreturn]] inline void throw_error(int errno_value) {
    throw Error(errno_value, last_error_message());
}

inline void check(int errno_value) {
    if (errno_value != 0) {
        throw_error(errno_value);
    }
}
#endif

/**
 * The calling thread's cached data area, with the layout of the core's
 * DataCache. The core registers the cache when it fills it and stores
 * nullptr into it whenever the pointer stops being the one to use: this
 * thread's block released (always on this thread: free_thread_block(),
 * `tld_free()` from any language, thread exit) or a map attached that the
 * thread must register with (from another thread, hence the atomic read).
 */
struct DataCache {
    std::uint8_t* data;
};

/**
 * The cache itself. Constant-initialized (no constructor) and trivially
 * destructible: no TLS wrapper call and no guard on access, and it stays
 * readable (and writable by the core) in destructors that run at thread exit
 * after the C++ thread_locals (a pthread key destructor calling get()).
 */
#if TLD_CXX_INITIAL_EXEC_TLS
// In a shared library the default TLS model makes every access a
// __tls_get_addr call; initial-exec makes it one %fs-relative load, but needs
// the library loaded at program start (or a little of the static TLS that
// glibc keeps for dlopen).
[[gnu::tls_model("initial-exec")]]
#endif
inline thread_local DataCache thread_cache{nullptr};

/// The slow path: ask the core (allocates and registers on first use).
[[gnu::noinline, gnu::cold]] inline std::uint8_t* refresh_thread_data() noexcept {
    std::size_t data = 0;
    if (refresh_thread_cache(reinterpret_cast<std::size_t>(&thread_cache), data) != 0) {
        return nullptr;
    }
    return reinterpret_cast<std::uint8_t*>(data);
}

/**
 * The hot path of every get(): one thread-local load (relaxed: the core may
 * clear it from another thread; a plain load on x86 and arm64) and a test;
 * nullptr on failure (see last_failure()).
 */
inline std::uint8_t* thread_data_or_null() noexcept {
    std::uint8_t* p = __atomic_load_n(&thread_cache.data, __ATOMIC_RELAXED);
    if (__builtin_expect(p != nullptr, 1)) {
        return p;
    }
    return refresh_thread_data();
}

inline KeyInfo find_or_create(KeyMode mode, std::string_view name, std::size_t size,
                              std::error_code& ec) noexcept {
    KeyInfo info{};
    set_code(ec, key(mode, bytes(name), size, info));
    return ec ? KeyInfo{} : info;
}

}  // namespace detail

// ---------------------------------------------------------------------------
// Maps and the runtime

#if TLD_CXX_EXCEPTIONS
/**
 * @brief Attaches the tld_data_map pinned at @p path (empty: `$TLD_MAP_PATH`,
 * else `/sys/fs/bpf/tld/tld_data_map`).
 *
 * Validates the map first. Attaching the same map again is a no-op; up to 64
 * maps. Every thread registers with it on its next data access. The map
 * follows the pin: when the pin is replaced by another map, every thread is
 * moved to it within about a second (a watcher thread, unless
 * `TLD_PIN_WATCH=0`), or at refresh().
 * @throws tld::Error ENOENT (nothing pinned there), EINVAL (not on bpffs, not
 * a map, wrong type or layout, no BTF), EACCES (read-only map or pin),
 * EPERM, ENOSPC (too many maps), EOVERFLOW (a 16-byte map with more than 255
 * keys).
 */
inline void attach(std::string_view path = {}) { detail::check(detail::attach_path(detail::bytes(path))); }

/**
 * @brief Checks every map attached by path against its pin now and follows a
 * replaced pin (the new map attached, every live thread registered with it,
 * the old map detached).
 * @throws tld::Error as attach().
 */
inline void refresh() { detail::check(detail::refresh()); }

/**
 * @brief Attaches the map behind @p fd. The runtime keeps a duplicate: the
 * caller keeps ownership of @p fd and may close it afterwards.
 * @throws tld::Error as attach(); EINVAL for a negative fd or one that is not a map.
 */
inline void attach_fd(int fd) { detail::check(detail::attach_fd(fd)); }

/**
 * @brief Sets the bytes every thread block keeps for keys created after the
 * first block exists (default 64). It may grow until a thread first touches
 * its data, and shrink only while no key exists.
 * @throws tld::Error EBUSY, or EINVAL (more than a block can hold).
 */
inline void set_dynamic_reserve(std::size_t bytes) { detail::check(detail::set_dynamic_reserve(bytes)); }

/**
 * @brief Creates or joins the process's runtime and describes it.
 * @throws tld::Error EPROTO (incompatible runtime), or the errno of a failed
 * system call.
 */
inline RuntimeStats runtime_stats() {
    RuntimeStats s{};
    detail::check(detail::runtime_stats(s));
    return s;
}
#endif

/// attach() without exceptions: sets @p ec (cleared on success).
inline void attach(std::string_view path, std::error_code& ec) noexcept {
    detail::set_code(ec, detail::attach_path(detail::bytes(path)));
}

/// refresh() without exceptions: sets @p ec (cleared on success).
inline void refresh(std::error_code& ec) noexcept { detail::set_code(ec, detail::refresh()); }

/// attach_fd() without exceptions: sets @p ec (cleared on success).
inline void attach_fd(int fd, std::error_code& ec) noexcept { detail::set_code(ec, detail::attach_fd(fd)); }

/// set_dynamic_reserve() without exceptions: sets @p ec (cleared on success).
inline void set_dynamic_reserve(std::size_t bytes, std::error_code& ec) noexcept {
    detail::set_code(ec, detail::set_dynamic_reserve(bytes));
}

/// runtime_stats() without exceptions: sets @p ec; a zeroed snapshot on failure.
inline RuntimeStats runtime_stats(std::error_code& ec) noexcept {
    RuntimeStats s{};
    detail::set_code(ec, detail::runtime_stats(s));
    return s;
}

/**
 * @brief The calling thread's data area (the base every key offset is
 * relative to), without exceptions.
 *
 * The thread's first call allocates its block and registers it with every
 * attached map (two system calls per map); later calls are one thread-local
 * load and a test, inlined (the core clears the cache when needed). The
 * pointer is valid on the calling thread until it exits or its block is
 * freed (free_thread_block(), `tld_free()` from any language).
 * @return the pointer, or nullptr with @p ec set (allocation or registration
 * failed; EPROTO for an incompatible runtime).
 */
inline std::uint8_t* thread_data(std::error_code& ec) noexcept {
    std::uint8_t* p = detail::thread_data_or_null();
    if (p == nullptr) {
        detail::set_code(ec, detail::last_code());
    } else {
        ec.clear();
    }
    return p;
}

#if TLD_CXX_EXCEPTIONS
/// thread_data() that throws tld::Error instead of returning nullptr.
inline std::uint8_t* thread_data() {
    std::uint8_t* p = detail::thread_data_or_null();
    if (p == nullptr) {
        detail::throw_error(detail::last_code());
    }
    return p;
}
#endif

/**
 * @brief Releases the calling thread's block now, deregistering it from
 * every map (upstream `tld_free()`). Optional: blocks are released at thread
 * exit anyway. Every pointer into the block, from any language, is invalid
 * afterwards; the next access allocates a new, zeroed block.
 */
inline void free_thread_block() noexcept { detail::free_thread_block(); }

// ---------------------------------------------------------------------------
// Keys

/**
 * @brief A key for raw bytes: a metadata slot and a range of every thread's
 * data area. A plain value: copy it and share it between threads freely.
 *
 * A default-constructed RawKey, or one returned by a failed
 * `std::error_code&` overload, is empty (valid() is false).
 */
class RawKey {
public:
    /// An empty key (valid() is false).
    RawKey() noexcept = default;

    /// Wraps what the runtime reported about a key.
    explicit RawKey(KeyInfo info) noexcept : info_(info) {}

#if TLD_CXX_EXCEPTIONS
    /**
     * @brief Creates a key of @p size bytes, strictly (upstream `tld_create_key`).
     * @param name 1 to 61 bytes, no NUL byte. Copied.
     * @throws tld::Error EEXIST (name taken), E2BIG (does not fit), ENOSPC (no
     * slot left), EINVAL (size 0, empty name, NUL in the name), ENAMETOOLONG.
     * A failed call changes nothing already published.
     */
    static RawKey create(std::string_view name, std::size_t size) {
        return checked(detail::KeyMode::Create, name, size);
    }

    /**
     * @brief Returns the key @p name if it exists with @p size bytes, else
     * creates it: how two libraries or languages share one value.
     * @throws tld::Error as create(), but EEXIST only when the name exists
     * with another size.
     */
    static RawKey get_or_create(std::string_view name, std::size_t size) {
        return checked(detail::KeyMode::GetOrCreate, name, size);
    }

    /**
     * @brief Creates a static key: while no thread block exists it grows
     * every block by @p size instead of using the dynamic reserve (what
     * TLD_CXX_DEFINE_KEY calls before main). Get-or-create semantics.
     * @throws tld::Error as get_or_create().
     */
    static RawKey get_or_create_static(std::string_view name, std::size_t size) {
        return checked(detail::KeyMode::GetOrCreateStatic, name, size);
    }

    /**
     * @brief Finds a published key by name, whatever its size.
     * @throws tld::Error ENOENT (no such key), EINVAL, ENAMETOOLONG.
     */
    static RawKey find(std::string_view name) { return checked(detail::KeyMode::Find, name, 0); }
#endif

    /// create() without exceptions: an empty key and @p ec set on failure.
    static RawKey create(std::string_view name, std::size_t size, std::error_code& ec) noexcept {
        return RawKey(detail::find_or_create(detail::KeyMode::Create, name, size, ec));
    }

    /// get_or_create() without exceptions: an empty key and @p ec set on failure.
    static RawKey get_or_create(std::string_view name, std::size_t size, std::error_code& ec) noexcept {
        return RawKey(detail::find_or_create(detail::KeyMode::GetOrCreate, name, size, ec));
    }

    /// get_or_create_static() without exceptions: an empty key and @p ec set on failure.
    static RawKey get_or_create_static(std::string_view name, std::size_t size, std::error_code& ec) noexcept {
        return RawKey(detail::find_or_create(detail::KeyMode::GetOrCreateStatic, name, size, ec));
    }

    /// find() without exceptions: an empty key and @p ec set on failure.
    static RawKey find(std::string_view name, std::error_code& ec) noexcept {
        return RawKey(detail::find_or_create(detail::KeyMode::Find, name, 0, ec));
    }

    /// Whether this is a key (false for an empty one).
    bool valid() const noexcept { return info_.size != 0; }

    /// Offset of the value in every thread's data area (upstream `tld_key_t.off`).
    std::size_t offset() const noexcept { return info_.offset; }

    /// Size of the value in bytes (0 for an empty key).
    std::size_t size() const noexcept { return info_.size; }

    /// Index of the key's metadata slot.
    std::size_t slot() const noexcept { return info_.slot; }

    /// What the runtime reported about the key.
    KeyInfo info() const noexcept { return info_; }

#if TLD_CXX_EXCEPTIONS
    /**
     * @brief The calling thread's value: size() bytes, 8-byte aligned, zero
     * until written.
     *
     * The thread's first access allocates its block and registers it with
     * every attached map; later calls are a few loads and no system call.
     * Valid on the calling thread until it exits or frees its block
     * (free_thread_block(), `tld_free()`); never share it with another thread.
     * @throws tld::Error EINVAL for an empty key; the errno of a failed
     * allocation or registration.
     */
    void* get() const {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        // Offset and size in one load (size in the high half): the hot path
        // reads the key once.
        static_assert(offsetof(KeyInfo, offset) == 0 && offsetof(KeyInfo, size) == 2, "KeyInfo layout");
        std::uint32_t w;
        std::memcpy(&w, &info_, sizeof w);
        if (w <= 0xffffu) {
            throw Error(EINVAL, "tld::RawKey::get() on an empty key");
        }
        return thread_data() + (w & 0xffffu);
#else
        if (!valid()) {
            throw Error(EINVAL, "tld::RawKey::get() on an empty key");
        }
        return thread_data() + info_.offset;
#endif
    }
#endif

    /// get() without exceptions: nullptr and @p ec set on failure.
    void* get(std::error_code& ec) const noexcept {
        if (!valid()) {
            ec.assign(EINVAL, std::generic_category());
            return nullptr;
        }
        std::uint8_t* base = thread_data(ec);
        return base == nullptr ? nullptr : base + info_.offset;
    }

    /// Keys are equal when they name the same slot.
    friend bool operator==(const RawKey& a, const RawKey& b) noexcept { return a.info_ == b.info_; }
    /// Keys are equal when they name the same slot.
    friend bool operator!=(const RawKey& a, const RawKey& b) noexcept { return !(a == b); }

private:
#if TLD_CXX_EXCEPTIONS
    static RawKey checked(detail::KeyMode mode, std::string_view name, std::size_t size) {
        KeyInfo info{};
        detail::check(detail::key(mode, detail::bytes(name), size, info));
        return RawKey(info);
    }
#endif

    KeyInfo info_{};
};

/**
 * @brief A key holding a @p T, shared by name with BPF and every other language.
 *
 * @tparam T a trivially copyable type (any bit pattern written by BPF or
 * another language must be a valid value: no pointers worth sharing), of at
 * most 8-byte alignment. Its size is the key's size.
 *
 * A plain value: copy it and share it between threads freely. Each thread
 * reads and writes its own value.
 */
template <class T>
class Key {
    static_assert(std::is_trivially_copyable_v<T>, "tld::Key<T>: T must be trivially copyable");
    static_assert(alignof(T) <= value_alignment, "tld::Key<T>: values are 8-byte aligned; T needs more");
    static_assert(!std::is_pointer_v<T>, "tld::Key<T>: a pointer means nothing to BPF or another thread");

public:
    /// An empty key (valid() is false).
    Key() noexcept = default;

#if TLD_CXX_EXCEPTIONS
    /// Creates the key (strict). @throws tld::Error as RawKey::create().
    static Key create(std::string_view name) { return Key(RawKey::create(name, sizeof(T))); }

    /// The existing key of this name and `sizeof(T)`, or a new one. @throws tld::Error as RawKey::get_or_create().
    static Key get_or_create(std::string_view name) { return Key(RawKey::get_or_create(name, sizeof(T))); }

    /**
     * @brief Finds an existing key.
     * @throws tld::Error ENOENT (no such key), EEXIST (it exists with a size
     * other than `sizeof(T)`), EINVAL, ENAMETOOLONG.
     */
    static Key find(std::string_view name) {
        KeyInfo info{};
        detail::check(detail::key(detail::KeyMode::Find, detail::bytes(name), sizeof(T), info));
        return Key(RawKey(info));
    }
#endif

    /// create() without exceptions: an empty key and @p ec set on failure.
    static Key create(std::string_view name, std::error_code& ec) noexcept {
        return Key(RawKey::create(name, sizeof(T), ec));
    }

    /// get_or_create() without exceptions: an empty key and @p ec set on failure.
    static Key get_or_create(std::string_view name, std::error_code& ec) noexcept {
        return Key(RawKey::get_or_create(name, sizeof(T), ec));
    }

    /// find() without exceptions: an empty key and @p ec set on failure.
    static Key find(std::string_view name, std::error_code& ec) noexcept {
        return Key(RawKey(detail::find_or_create(detail::KeyMode::Find, name, sizeof(T), ec)));
    }

    /// Wraps a key known to be `sizeof(T)` bytes (see RawKey::size()).
    static Key from_raw_unchecked(RawKey raw) noexcept { return Key(raw); }

    /// Whether this is a key (false for an empty one).
    bool valid() const noexcept { return raw_.valid(); }

    /// The untyped key.
    RawKey raw() const noexcept { return raw_; }

    /// Offset of the value in every thread's data area.
    std::size_t offset() const noexcept { return raw_.offset(); }

#if TLD_CXX_EXCEPTIONS
    /**
     * @brief Pointer to the calling thread's value (zero until set).
     *
     * The thread's first access allocates its block and registers it with
     * every attached map; later calls are a few loads. The pointer is valid
     * on the calling thread until it exits or frees its block
     * (free_thread_block(), `tld_free()`); never share it with another thread.
     * Writes through it are plain stores; BPF reads them asynchronously.
     * @throws tld::Error EINVAL for an empty key, or the errno of a failed
     * allocation or registration.
     */
    T* get() const { return static_cast<T*>(raw_.get()); }

    /// Stores @p value as the calling thread's value. @throws tld::Error as get().
    void set(const T& value) const { store(get(), value); }

    /// The calling thread's value (zero until set). @throws tld::Error as get().
    T load() const { return fetch(get()); }
#endif

    /// get() without exceptions: nullptr and @p ec set on failure.
    T* get(std::error_code& ec) const noexcept { return static_cast<T*>(raw_.get(ec)); }

    /// set() without exceptions: sets @p ec; nothing stored on failure.
    void set(const T& value, std::error_code& ec) const noexcept {
        if (T* p = get(ec)) {
            store(p, value);
        }
    }

    /// load() without exceptions: sets @p ec; a zero value on failure.
    T load(std::error_code& ec) const noexcept {
        T* p = get(ec);
        return p != nullptr ? fetch(p) : T{};
    }

    /// Keys are equal when they name the same slot.
    friend bool operator==(const Key& a, const Key& b) noexcept { return a.raw_ == b.raw_; }
    /// Keys are equal when they name the same slot.
    friend bool operator!=(const Key& a, const Key& b) noexcept { return !(a == b); }

private:
    explicit Key(RawKey raw) noexcept : raw_(raw) {}

    // BPF and the `tld` reader read this memory outside the compiler's view:
    // the signal fences keep the store from being merged away or sunk past
    // later code, and the load from being hoisted, without a volatile copy.
    static void store(T* p, const T& value) noexcept {
        std::memcpy(static_cast<void*>(p), &value, sizeof(T));
        std::atomic_signal_fence(std::memory_order_seq_cst);
    }

    static T fetch(const T* p) noexcept {
        std::atomic_signal_fence(std::memory_order_seq_cst);
        T value;
        std::memcpy(static_cast<void*>(&value), p, sizeof(T));
        return value;
    }

    RawKey raw_;
};

/**
 * @brief A key defined at load time with TLD_CXX_DEFINE_KEY: it gets exactly
 * `sizeof(T)` bytes in every thread block.
 *
 * Constant-initialized (usable from any static initializer, whatever the
 * order), created by a constructor before main, and resolved on first use
 * if the loader did not run that constructor. A failure is remembered and
 * reported again by every later call.
 */
template <class T>
class StaticKey {
public:
    /// A static key named @p name (a string with static storage duration).
    constexpr explicit StaticKey(const char* name) noexcept : name_(name) {}

    /// Not copyable: the object remembers the key's resolution; copy its key() instead.
    StaticKey(const StaticKey&) = delete;
    /// Not assignable.
    StaticKey& operator=(const StaticKey&) = delete;

    /// The key's name.
    const char* name() const noexcept { return name_; }

    /// The typed key (get-or-create); an empty key and @p ec set on failure.
    Key<T> key(std::error_code& ec) const noexcept {
        std::uint64_t s = state_.load(std::memory_order_acquire);
        if (s & resolved) {
            ec.clear();
            KeyInfo info{};
            info.slot = static_cast<std::uint16_t>(s >> 32);
            info.offset = static_cast<std::uint16_t>(s >> 16);
            info.size = static_cast<std::uint16_t>(s);
            return Key<T>::from_raw_unchecked(RawKey(info));
        }
        if (s & failed) {
            // Remembered: the first failure decides, as in the Rust core.
            detail::set_code(ec, static_cast<int>(s & 0xffffffffu));
            return Key<T>();
        }
        RawKey raw = RawKey::get_or_create_static(name_, sizeof(T), ec);
        if (ec) {
            remember_message();
            state_.store(failed | static_cast<std::uint32_t>(ec.value()), std::memory_order_release);
            return Key<T>();
        }
        KeyInfo i = raw.info();
        state_.store(resolved | std::uint64_t{i.slot} << 32 | std::uint64_t{i.offset} << 16 | i.size,
                     std::memory_order_release);
        return Key<T>::from_raw_unchecked(raw);
    }

    /// Creates the key now; what the constructor TLD_CXX_DEFINE_KEY emits calls.
    void define() const noexcept {
        std::error_code ec;
        (void)key(ec);
    }

    /// get() without exceptions: nullptr and @p ec set on failure.
    T* get(std::error_code& ec) const noexcept {
        Key<T> k = key(ec);
        return ec ? nullptr : k.get(ec);
    }

    /// set() without exceptions.
    void set(const T& value, std::error_code& ec) const noexcept {
        Key<T> k = key(ec);
        if (!ec) {
            k.set(value, ec);
        }
    }

    /// load() without exceptions: a zero value on failure.
    T load(std::error_code& ec) const noexcept {
        Key<T> k = key(ec);
        return ec ? T{} : k.load(ec);
    }

    /**
     * @brief The core's message for the creation failure (naming the key
     * and the cause, as tld::last_error_message() said on the thread that
     * first tried), or an empty string if the key has not failed. Remembered
     * like the failure itself, so the `std::error_code&` overloads can
     * report it from any thread.
     */
    const char* error_message() const noexcept {
        if (!(state_.load(std::memory_order_acquire) & failed)) {
            return "";
        }
        const char* m = message_.load(std::memory_order_acquire);
        return m != nullptr ? m : "";
    }

#if TLD_CXX_EXCEPTIONS
    /**
     * @brief The typed key.
     * @throws tld::Error the creation error (remembered), with the core's
     * message (error_message()), e.g. that the name exists with another size.
     */
    Key<T> key() const {
        std::error_code ec;
        Key<T> k = key(ec);
        if (ec) {
            const char* m = error_message();
            throw Error(ec.value(), *m != '\0' ? std::string(m)
                                                 : std::string("static key \"") + name_ + "\" could not be created: " +
                                                       std::generic_category().message(ec.value()));
        }
        return k;
    }

    /// Pointer to the calling thread's value; see Key::get() for the thread rule.
    T* get() const { return key().get(); }

    /// Stores @p value as the calling thread's value.
    void set(const T& value) const { key().set(value); }

    /// The calling thread's value.
    T load() const { return key().load(); }
#endif

private:
    static constexpr std::uint64_t resolved = std::uint64_t{1} << 63;
    static constexpr std::uint64_t failed = std::uint64_t{1} << 62;

    /// Keeps the calling thread's last error message (the failed creation's)
    /// for every later call, from any thread. Copied once to the heap and
    /// never freed: a static key lives as long as the program, and so does
    /// its failure. Only the first of racing failures is kept.
    void remember_message() const noexcept {
        detail::Failure f = detail::last_failure();
        char* copy = new (std::nothrow) char[f.message.size() + 1];
        if (copy == nullptr) {
            return;  // the error code is still remembered
        }
        std::memcpy(copy, f.message.data(), f.message.size());
        copy[f.message.size()] = '\0';
        const char* expected = nullptr;
        if (!message_.compare_exchange_strong(expected, copy, std::memory_order_acq_rel)) {
            delete[] copy;
        }
    }

    const char* name_;
    mutable std::atomic<std::uint64_t> state_{0};
    mutable std::atomic<const char*> message_{nullptr};
};

}  // namespace tld

/**
 * @brief Defines `tld::StaticKey<T> ident`, created by a constructor before
 * main (like the C `TLD_DEFINE_KEY`), so it gets exactly `sizeof(T)` bytes in
 * every thread block. Use at namespace scope, followed by `;`.
 * @param ident the variable to define.
 * @param T the value type (as tld::Key<T>); a type whose name has a comma
 * (`std::array<int, 2>`) needs an alias first.
 * @param name the key name: a string literal of 1 to 61 bytes (checked at
 * compile time).
 *
 * A failure (e.g. EEXIST: the name exists with another size) is remembered
 * and thrown by ident.get()/set()/load()/key(), or reported through their
 * `std::error_code&` overloads.
 */
#define TLD_CXX_DEFINE_KEY(ident, T, name)                                                              \
    static_assert(sizeof(name) >= 2 && sizeof(name) - 1 <= ::tld::max_name_length,                     \
                  "tld: a key name is a string literal of 1 to 61 bytes");                             \
    ::tld::StaticKey<T> ident{name};                                                                    \
    __attribute__((constructor)) static void tld_cxx_define_key_##ident() { ident.define(); }          \
    static_assert(true, "takes the caller's ;")

/**
 * @brief Declares a static key defined with TLD_CXX_DEFINE_KEY in another
 * translation unit (for a header), followed by `;`.
 */
#define TLD_CXX_DECLARE_KEY(ident, T) extern ::tld::StaticKey<T> ident

#endif  // TLD_TLD_HPP
