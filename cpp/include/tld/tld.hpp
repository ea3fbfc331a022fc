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

#include <array>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <new>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

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

/// The cached pointer: one thread-local load (relaxed: the core may clear it
/// from another thread; a plain load on x86 and arm64).
inline std::uint8_t* cached_thread_data() noexcept { return __atomic_load_n(&thread_cache.data, __ATOMIC_RELAXED); }

/// thread_data(): the cached pointer, else the slow path; nullptr on failure
/// (see last_failure()).
inline std::uint8_t* thread_data_or_null() noexcept {
    std::uint8_t* p = cached_thread_data();
    if (__builtin_expect(p != nullptr, 1)) {
        return p;
    }
    return refresh_thread_data();
}

/*
 * A key's hot-path word, its "where": the key's offset minus where_bias, or
 * empty_where for an empty key. Added to the cached data pointer it gives a
 * negative word (as a signed integer) when the key is empty or the cache is
 * nullptr, and otherwise the value's address minus where_bias. So every
 * get() (value_at()) is: one load of the word, one thread-local load added
 * to it, one test of the sign, and the caller's store with the bias folded
 * into its displacement. Offsets are below where_bias (16 bits) and a cached
 * pointer is at or above it: nothing is mapped below vm.mmap_min_addr, 64 KiB
 * by default. A pointer below it would only take the slow path, which
 * returns the right address all the same.
 */
inline constexpr std::uintptr_t where_bias = 0x10000;
inline constexpr std::uintptr_t empty_where = std::uintptr_t{1} << (sizeof(std::uintptr_t) * 8 - 1);

constexpr std::uintptr_t where_of(KeyInfo info) noexcept {
    return info.size != 0 ? std::uintptr_t{info.offset} - where_bias : empty_where;
}

/// The hot path of every key's get(): the calling thread's value at
/// @p where, or what @p slow returns (its pointer or nullptr) when the key
/// is empty or the cache is. The two paths meet before the bias is added
/// back, which lets the compiler fold it into the caller's store.
template <class Slow>
inline void* value_at(std::uintptr_t where, Slow&& slow) {
    std::uintptr_t q = reinterpret_cast<std::uintptr_t>(cached_thread_data()) + where;
    if (__builtin_expect(static_cast<std::intptr_t>(q) < 0, 0)) {
        q = reinterpret_cast<std::uintptr_t>(slow()) - where_bias;
    }
    return reinterpret_cast<void*>(q + where_bias);
}

// BPF and the `tld` reader read a value outside the compiler's view: the
// signal fences keep a store from being merged away or sunk past later code,
// and a load from being hoisted, without a volatile copy.
template <class T>
inline void store_value(T* p, const T& value) noexcept {
    std::memcpy(static_cast<void*>(p), &value, sizeof(T));
    std::atomic_signal_fence(std::memory_order_seq_cst);
}

template <class T>
inline T fetch_value(const T* p) noexcept {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    T value;
    std::memcpy(static_cast<void*>(&value), p, sizeof(T));
    return value;
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
    explicit RawKey(KeyInfo info) noexcept : where_(detail::where_of(info)), info_(info) {}

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
     * every attached map; later calls are two loads, an add and a test,
     * inlined, and no system call. Valid on the calling thread until it
     * exits or frees its block (free_thread_block(), `tld_free()`); never
     * share it with another thread.
     * @throws tld::Error EINVAL for an empty key; the errno of a failed
     * allocation or registration.
     */
    void* get() const {
        return detail::value_at(where_, [this] { return get_slow(); });
    }
#endif

    /// get() without exceptions: nullptr and @p ec set on failure.
    void* get(std::error_code& ec) const noexcept {
        ec.clear();  // the slow path sets it
        return detail::value_at(where_, [&] { return get_slow(ec); });
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

    // The key is empty or the thread's cache is (first access, block freed,
    // a map to register with).
    [[gnu::noinline, gnu::cold]] void* get_slow() const {
        if (!valid()) {
            throw Error(EINVAL, "tld::RawKey::get() on an empty key");
        }
        return thread_data() + info_.offset;
    }
#endif

    [[gnu::noinline, gnu::cold]] void* get_slow(std::error_code& ec) const noexcept {
        if (!valid()) {
            ec.assign(EINVAL, std::generic_category());
            return nullptr;
        }
        std::uint8_t* base = thread_data(ec);
        return base == nullptr ? nullptr : base + info_.offset;
    }

    std::uintptr_t where_ = detail::empty_where;  // detail::where_of(info_)
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
     * every attached map; later calls are inlined: two loads, an add and a
     * sign test (RawKey::get()). The pointer is valid
     * on the calling thread until it exits or frees its block
     * (free_thread_block(), `tld_free()`); never share it with another thread.
     * Writes through it are plain stores; BPF reads them asynchronously.
     * @throws tld::Error EINVAL for an empty key, or the errno of a failed
     * allocation or registration.
     */
    T* get() const { return static_cast<T*>(raw_.get()); }

    /// Stores @p value as the calling thread's value. @throws tld::Error as get().
    void set(const T& value) const { detail::store_value(get(), value); }

    /// The calling thread's value (zero until set). @throws tld::Error as get().
    T load() const { return detail::fetch_value(get()); }
#endif

    /// get() without exceptions: nullptr and @p ec set on failure.
    T* get(std::error_code& ec) const noexcept { return static_cast<T*>(raw_.get(ec)); }

    /// set() without exceptions: sets @p ec; nothing stored on failure.
    void set(const T& value, std::error_code& ec) const noexcept {
        if (T* p = get(ec)) {
            detail::store_value(p, value);
        }
    }

    /// load() without exceptions: sets @p ec; a zero value on failure.
    T load(std::error_code& ec) const noexcept {
        T* p = get(ec);
        return p != nullptr ? detail::fetch_value(p) : T{};
    }

    /// Keys are equal when they name the same slot.
    friend bool operator==(const Key& a, const Key& b) noexcept { return a.raw_ == b.raw_; }
    /// Keys are equal when they name the same slot.
    friend bool operator!=(const Key& a, const Key& b) noexcept { return !(a == b); }

private:
    explicit Key(RawKey raw) noexcept : raw_(raw) {}

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
        where_.store(detail::where_of(i), std::memory_order_relaxed);
        return Key<T>::from_raw_unchecked(raw);
    }

    /// Creates the key now; what the constructor TLD_CXX_DEFINE_KEY emits calls.
    void define() const noexcept {
        std::error_code ec;
        (void)key(ec);
    }

    /// get() without exceptions: nullptr and @p ec set on failure.
    T* get(std::error_code& ec) const noexcept {
        ec.clear();  // the slow path sets it
        return static_cast<T*>(detail::value_at(where_.load(std::memory_order_relaxed), [&] { return get_slow(ec); }));
    }

    /// set() without exceptions.
    void set(const T& value, std::error_code& ec) const noexcept {
        if (T* p = get(ec)) {
            detail::store_value(p, value);
        }
    }

    /// load() without exceptions: a zero value on failure.
    T load(std::error_code& ec) const noexcept {
        T* p = get(ec);
        return p != nullptr ? detail::fetch_value(p) : T{};
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

    /**
     * @brief Pointer to the calling thread's value; see Key::get() for the
     * thread rule. Once the key is resolved, the same inlined path as
     * Key::get().
     * @throws tld::Error as key() and Key::get().
     */
    T* get() const {
        return static_cast<T*>(detail::value_at(where_.load(std::memory_order_relaxed), [this] { return get_slow(); }));
    }

    /// Stores @p value as the calling thread's value.
    void set(const T& value) const { detail::store_value(get(), value); }

    /// The calling thread's value.
    T load() const { return detail::fetch_value(get()); }
#endif

private:
    static constexpr std::uint64_t resolved = std::uint64_t{1} << 63;
    static constexpr std::uint64_t failed = std::uint64_t{1} << 62;

    // Not resolved yet, failed, or the thread's cache is empty.
#if TLD_CXX_EXCEPTIONS
    [[gnu::noinline, gnu::cold]] T* get_slow() const { return key().get(); }
#endif

    [[gnu::noinline, gnu::cold]] T* get_slow(std::error_code& ec) const noexcept {
        Key<T> k = key(ec);
        return ec ? nullptr : k.get(ec);
    }

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
    // The resolved key's detail::where_of() for the hot path (empty_where
    // until resolved, and after a failure). Relaxed: it is only an offset
    // into the calling thread's own block, which the core sized.
    mutable std::atomic<std::uintptr_t> where_{detail::empty_where};
    mutable std::atomic<const char*> message_{nullptr};
};


// ---------------------------------------------------------------------------
// OpenTelemetry thread context (docs/DESIGN.md section 10)

/**
 * @brief OpenTelemetry's thread context (OTEP 4947) and process context
 * (OTEP 4719), published through tld.
 *
 * Each thread's Thread-Local Context Record (trace id, span id, flags,
 * attributes) is the value of the static key `otel.thread_ctx_v1` in its
 * block, so BPF reads it through `tld_data_map`; the ELF TLS symbol
 * `otel_thread_ctx_v1` points at the same record for OTEP 4947 readers. The
 * process context (an `OTEL_CTX` mapping with the resource attributes and
 * the attribute key map) is published on the first set().
 *
 * @code
 * TLD_CXX_OTEL_DEFINE_RECORD_KEY();   // the record gets room in every thread block
 *
 * void handle(const tld::otel::SpanContext& span) {
 *     tld::otel::Scope active(span, {{"http.route", "/users/:id"}});
 *     // ... BPF and profilers see this span on this thread ...
 * }   // the previous context (or none) is back
 * @endcode
 *
 * LINKING. OTEP 4947 readers find `otel_thread_ctx_v1` in `.dynsym`. The
 * CMake target `tld::tld` adds `-Wl,--export-dynamic-symbol=otel_thread_ctx_v1`
 * to every executable that links it, so nothing is needed there; a shared
 * library exports it as long as its link does not hide the archive's symbols
 * (`--exclude-libs`, a version script). Without the export the BPF path
 * works and the TLS path stays dark. Several copies of tld in one process
 * (libtld.so, Python, Go) write one live symbol between them.
 *
 * THREADS. A record belongs to the OS thread that writes it: set(), clear()
 * and Scope act on the calling thread. After a thread's first call they take
 * no lock, except that set() with a new attribute name registers it under a
 * process-wide lock.
 *
 * ERRORS, as everywhere in tld.hpp: tld::Error, or the `std::error_code&`
 * overloads. EINVAL (a span context OTEP 4947 forbids: one id all zero and
 * not the other, or flags without ids; a name that is empty, over 127 bytes
 * or not UTF-8; a bad size or resource key), E2BIG (a value over 255 bytes,
 * attributes that do not fit the record, or the record key created after
 * threads touched tld data: see TLD_CXX_OTEL_DEFINE_RECORD_KEY), ENOSPC (256
 * attribute keys), EBUSY (set_record_size() too late), EEXIST, EPROTO,
 * EDEADLK, plus the errors of thread data. A failed call changes nothing.
 */
namespace otel {

/// Name of the static key whose value is the thread's record.
inline constexpr std::string_view record_key_name = "otel.thread_ctx_v1";
/// Record size unless set otherwise: the 28-byte header and 100 bytes of attributes.
inline constexpr std::size_t default_record_size = 128;
/// Smallest record size: the header alone.
inline constexpr std::size_t min_record_size = 28;
/// Largest record size (what OTEP 4947 recommends readers read).
inline constexpr std::size_t max_record_size = 640;
/// Longest attribute value in bytes.
inline constexpr std::size_t max_attribute_value = 255;

/// An attribute by key name: both views are copied, and need not be NUL-terminated.
struct Attribute {
    std::string_view name;   ///< 1 to 127 bytes of UTF-8; registered in the key map on first use
    std::string_view value;  ///< at most 255 bytes of UTF-8
};

/**
 * @brief An attribute key registered in `threadlocal.attribute_key_map`:
 * its one-byte index, stable for the life of the process. Get one with
 * attribute_key(); setting by key skips the name lookup.
 */
class AttributeKey {
public:
    /// The key of index @p index (not checked until used).
    constexpr explicit AttributeKey(std::uint8_t index) noexcept : index_(index) {}
    /// The index written in records.
    constexpr std::uint8_t index() const noexcept { return index_; }
    /// Keys are equal when their indexes are.
    friend constexpr bool operator==(AttributeKey a, AttributeKey b) noexcept { return a.index_ == b.index_; }
    /// Keys are equal when their indexes are.
    friend constexpr bool operator!=(AttributeKey a, AttributeKey b) noexcept { return a.index_ != b.index_; }

private:
    std::uint8_t index_;
};

/// An attribute by registered key.
struct KeyedAttribute {
    AttributeKey key;        ///< from attribute_key()
    std::string_view value;  ///< at most 255 bytes of UTF-8
};

/// A thread's record as readers see it (current()).
struct Record {
    /// The `valid` byte is 1: readers use the record.
    bool valid = false;
    /// Trace id, span id and flags (meaningless when not valid).
    SpanContext span{};
    /// `attrs-data` entries in order: key index and value bytes.
    std::vector<std::pair<std::uint8_t, std::string>> attributes;
};

/// A resource attribute of the process context: a string, bool, integer or double value.
class ResourceAttribute {
public:
    /// A string value.
    ResourceAttribute(std::string_view key, std::string_view value) noexcept : key_(key), kind_(0), text_(value) {}
    /// A string value (a literal: not a bool).
    ResourceAttribute(std::string_view key, const char* value) noexcept : ResourceAttribute(key, std::string_view(value)) {}
    /// A bool value.
    ResourceAttribute(std::string_view key, bool value) noexcept : key_(key), kind_(1), bool_(value) {}
    /// An integer value (int64).
    ResourceAttribute(std::string_view key, std::int64_t value) noexcept : key_(key), kind_(2), int_(value) {}
    /// An integer value (int64).
    ResourceAttribute(std::string_view key, int value) noexcept : ResourceAttribute(key, std::int64_t{value}) {}
    /// A double value.
    ResourceAttribute(std::string_view key, double value) noexcept : key_(key), kind_(3), double_(value) {}

    /// The bridge's form (internal).
    detail::ResourceAttr raw() const noexcept {
        return detail::ResourceAttr{reinterpret_cast<std::size_t>(key_.data()), key_.size(), kind_,
                                    reinterpret_cast<std::size_t>(text_.data()), text_.size(), int_, double_, bool_};
    }

private:
    std::string_view key_;
    std::uint8_t kind_;
    std::string_view text_;
    std::int64_t int_ = 0;
    double double_ = 0;
    bool bool_ = false;
};

namespace detail {

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
// A List is a parameter type: the braced list it views lives until the call returns.
#pragma GCC diagnostic ignored "-Winit-list-lifetime"
#endif
/**
 * A view of attributes: what set(), Scope and publish_process_context()
 * take. Built from a braced list, a contiguous container of T
 * (std::vector, std::array) or a pointer and count; the elements must
 * outlive the call.
 */
template <class T>
class List {
public:
    /// No elements.
    constexpr List() noexcept = default;
    /// The elements of a braced list.
    constexpr List(std::initializer_list<T> l) noexcept : data_(l.begin()), size_(l.size()) {}
    /// The elements of a contiguous container of T (not deduced from a braced list).
    template <class C, class = std::enable_if_t<std::is_same_v<typename C::value_type, T>>,
              class = decltype(std::declval<const C&>().data())>
    List(const C& c) noexcept : data_(c.data()), size_(c.size()) {}
    /// @p n elements at @p data.
    constexpr List(const T* data, std::size_t n) noexcept : data_(data), size_(n) {}
    constexpr const T* begin() const noexcept { return data_; }
    constexpr const T* end() const noexcept { return data_ + size_; }
    constexpr std::size_t size() const noexcept { return size_; }

private:
    const T* data_ = nullptr;
    std::size_t size_ = 0;
};
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

inline std::size_t addr(std::string_view s) noexcept { return reinterpret_cast<std::size_t>(s.data()); }

/// Most attributes passed without a heap allocation (more go through a
/// std::vector; a record of 640 bytes holds at most 306).
inline constexpr std::size_t stack_attrs = 8;

/// Stack room for @p n bridge attributes, left uninitialized (each is written before use).
template <class T, std::size_t n>
union Uninit {
    Uninit() noexcept {}
    T items[n];
};

inline int set_named(const SpanContext& span, List<Attribute> attrs) noexcept {
    if (attrs.size() == 0) {
        return otel_set_indexed(span, {});  // no names to look up
    }
    Uninit<NamedAttr, stack_attrs> u;
    NamedAttr* buf = u.items;
    if (attrs.size() > stack_attrs) {
        std::vector<NamedAttr> v;
        v.reserve(attrs.size());
        for (const Attribute& a : attrs) {
            v.push_back(NamedAttr{addr(a.name), a.name.size(), addr(a.value), a.value.size()});
        }
        return otel_set(span, {v.data(), v.size()});
    }
    std::size_t n = 0;
    for (const Attribute& a : attrs) {
        buf[n++] = NamedAttr{addr(a.name), a.name.size(), addr(a.value), a.value.size()};
    }
    return otel_set(span, {buf, n});
}

inline int set_keyed(const SpanContext& span, List<KeyedAttribute> attrs) noexcept {
    Uninit<IndexedAttr, stack_attrs> u;
    IndexedAttr* buf = u.items;
    if (attrs.size() > stack_attrs) {
        std::vector<IndexedAttr> v;
        v.reserve(attrs.size());
        for (const KeyedAttribute& a : attrs) {
            v.push_back(IndexedAttr{a.key.index(), addr(a.value), a.value.size()});
        }
        return otel_set_indexed(span, {v.data(), v.size()});
    }
    std::size_t n = 0;
    for (const KeyedAttribute& a : attrs) {
        buf[n++] = IndexedAttr{a.key.index(), addr(a.value), a.value.size()};
    }
    return otel_set_indexed(span, {buf, n});
}

inline int publish(List<ResourceAttribute> attrs) noexcept {
    std::vector<ResourceAttr> v;
    v.reserve(attrs.size());
    for (const ResourceAttribute& a : attrs) {
        v.push_back(a.raw());
    }
    return otel_publish_process_context({v.data(), v.size()});
}

inline int read_current(Record& out) noexcept {
    RecordView view{};
    int rc = otel_current(view);
    if (rc != 0) {
        return rc;
    }
    out.valid = view.valid;
    out.span = view.span;
    out.attributes.clear();
    for (const RecordAttr& a : view.attributes) {
        out.attributes.emplace_back(a.key, std::string(reinterpret_cast<const char*>(a.value.data()), a.value.size()));
    }
    return 0;
}

}  // namespace detail

#if TLD_CXX_EXCEPTIONS
/**
 * @brief Sets the size in bytes of every thread's record (default 128, else
 * `$TLD_OTEL_RECORD_SIZE`): attributes get `bytes - 28`, 2 per attribute
 * plus its value. Only before the record key exists (see
 * TLD_CXX_OTEL_DEFINE_RECORD_KEY, which takes the size).
 * @throws tld::Error EINVAL outside 28..640; EBUSY if the key exists with another size.
 */
inline void set_record_size(std::size_t bytes) { tld::detail::check(detail::otel_set_record_size(bytes)); }

/**
 * @brief The static key `otel.thread_ctx_v1`, created now if it does not
 * exist. Created before any thread touches tld data it grows every block by
 * the record size; later it must fit the dynamic reserve.
 * @throws tld::Error E2BIG (created too late), EEXIST, EINVAL, EPROTO.
 */
inline RawKey record_key() {
    KeyInfo info{};
    tld::detail::check(detail::otel_record_key(info));
    return RawKey(info);
}

/**
 * @brief Registers @p name in the process's append-only attribute key map
 * (shared by every copy and language), or finds it.
 * @throws tld::Error EINVAL (empty, over 127 bytes, NUL or not UTF-8), ENOSPC (256 keys).
 */
inline AttributeKey attribute_key(std::string_view name) {
    std::uint8_t index = 0;
    tld::detail::check(detail::otel_attr_key(tld::detail::bytes(name), index));
    return AttributeKey(index);
}

/**
 * @brief Publishes the calling thread's context: @p span, no attributes.
 *
 * Writes the record with the valid-flag protocol (valid = 0, the fields,
 * valid = 1) and points `otel_thread_ctx_v1` at it. Readers see it until
 * the next set() or clear() on this thread.
 * @throws tld::Error EINVAL (a forbidden span context), or the errors of thread data.
 */
inline void set(const SpanContext& span) { tld::detail::check(detail::set_named(span, {})); }

/**
 * @brief Publishes the calling thread's context: @p span and @p attrs by
 * name, e.g. `set(span, {{"http.route", "/x"}})`. New names are registered
 * in the key map first.
 * @throws tld::Error EINVAL, E2BIG (a value over 255 bytes, attributes that
 * do not fit: never truncated), ENOSPC; the record is then unchanged.
 */
inline void set(const SpanContext& span, detail::List<Attribute> attrs) {
    tld::detail::check(detail::set_named(span, attrs));
}

/// set() with keys from attribute_key(): no name lookup. @throws tld::Error as set(); EINVAL for an unregistered index.
inline void set(const SpanContext& span, detail::List<KeyedAttribute> attrs) {
    tld::detail::check(detail::set_keyed(span, attrs));
}

/**
 * @brief Marks the calling thread's record invalid (valid = 0) and sets its
 * `otel_thread_ctx_v1` to NULL: readers see no context.
 * @throws tld::Error the errors of thread data.
 */
inline void clear() { tld::detail::check(detail::otel_clear()); }

/// The calling thread's record as readers see it. @throws tld::Error the errors of thread data.
inline Record current() {
    Record r;
    tld::detail::check(detail::read_current(r));
    return r;
}

/**
 * @brief Sets the process's resource attributes (replacing earlier ones) and
 * publishes the OTEP 4719 `OTEL_CTX` mapping with them, e.g.
 * `publish_process_context({{"service.name", "svc"}, {"process.pid", 42}})`.
 * @throws tld::Error EINVAL (a key empty, over 255 bytes, in `threadlocal.`,
 * or given twice), E2BIG (over 16 KiB encoded), or the errno of a failed mapping.
 */
inline void publish_process_context(detail::List<ResourceAttribute> attrs) {
    tld::detail::check(detail::publish(attrs));
}

/**
 * @brief Sets `threadlocal.schema_version` (default "tld_uptr_v1") and
 * republishes, for readers that know only OTEP 4947's "tlsdesc_v1_dev".
 * @throws tld::Error EINVAL (empty or over 63 bytes).
 */
inline void set_schema_version(std::string_view version) {
    tld::detail::check(detail::otel_set_schema_version(tld::detail::bytes(version)));
}

/// The address of the process's `OTEL_CTX` mapping, publishing it first if needed. @throws tld::Error
inline const void* process_context() {
    std::size_t a = 0;
    tld::detail::check(detail::otel_process_context(a));
    return reinterpret_cast<const void*>(a);
}
#endif

/// set_record_size() without exceptions.
inline void set_record_size(std::size_t bytes, std::error_code& ec) noexcept {
    tld::detail::set_code(ec, detail::otel_set_record_size(bytes));
}

/// record_key() without exceptions: an empty key and @p ec set on failure.
inline RawKey record_key(std::error_code& ec) noexcept {
    KeyInfo info{};
    tld::detail::set_code(ec, detail::otel_record_key(info));
    return ec ? RawKey() : RawKey(info);
}

/// attribute_key() without exceptions: index 0 and @p ec set on failure.
inline AttributeKey attribute_key(std::string_view name, std::error_code& ec) noexcept {
    std::uint8_t index = 0;
    tld::detail::set_code(ec, detail::otel_attr_key(tld::detail::bytes(name), index));
    return AttributeKey(index);
}

/// set() without exceptions.
inline void set(const SpanContext& span, std::error_code& ec) noexcept {
    tld::detail::set_code(ec, detail::set_named(span, {}));
}

/// set() by name without exceptions.
inline void set(const SpanContext& span, detail::List<Attribute> attrs, std::error_code& ec) noexcept {
    tld::detail::set_code(ec, detail::set_named(span, attrs));
}

/// set() by key without exceptions.
inline void set(const SpanContext& span, detail::List<KeyedAttribute> attrs, std::error_code& ec) noexcept {
    tld::detail::set_code(ec, detail::set_keyed(span, attrs));
}

/// clear() without exceptions.
inline void clear(std::error_code& ec) noexcept { tld::detail::set_code(ec, detail::otel_clear()); }

/// current() without exceptions: an invalid, empty record and @p ec set on failure.
inline Record current(std::error_code& ec) noexcept {
    Record r;
    tld::detail::set_code(ec, detail::read_current(r));
    return ec ? Record{} : r;
}

/// publish_process_context() without exceptions.
inline void publish_process_context(detail::List<ResourceAttribute> attrs, std::error_code& ec) noexcept {
    tld::detail::set_code(ec, detail::publish(attrs));
}

/// set_schema_version() without exceptions.
inline void set_schema_version(std::string_view version, std::error_code& ec) noexcept {
    tld::detail::set_code(ec, detail::otel_set_schema_version(tld::detail::bytes(version)));
}

/// process_context() without exceptions: nullptr and @p ec set on failure.
inline const void* process_context(std::error_code& ec) noexcept {
    std::size_t a = 0;
    tld::detail::set_code(ec, detail::otel_process_context(a));
    return reinterpret_cast<const void*>(a);
}

/**
 * @brief A published context that puts the previous one back when it goes
 * out of scope: the scoped form of set(), nestable.
 *
 * @code
 * tld::otel::Scope request(span, {{"http.route", "/users/:id"}});
 * {
 *     tld::otel::Scope query(child, {{"db.system", "postgresql"}});
 * }   // `span` again
 * @endcode
 *
 * The constructor saves the calling thread's whole record (valid or not)
 * and publishes the new one; the destructor restores the saved record,
 * `otel_thread_ctx_v1` following. A scope belongs to the thread that made
 * it: destroy scopes on that thread, innermost first (automatic variables
 * do). Neither copyable nor movable. A scope whose publication failed
 * (the `std::error_code&` constructors) restores nothing.
 */
class Scope {
public:
#if TLD_CXX_EXCEPTIONS
    /// Publishes @p span. @throws tld::Error as set(); nothing changed then.
    explicit Scope(const SpanContext& span) : Scope(span, detail::List<Attribute>{}) {}
    /// Publishes @p span and @p attrs by name. @throws tld::Error as set().
    Scope(const SpanContext& span, detail::List<Attribute> attrs) {
        tld::detail::check(detail::otel_save(saved_slice()));
        tld::detail::check(detail::set_named(span, attrs));
        active_ = true;
    }
    /// Publishes @p span and @p attrs by key. @throws tld::Error as set().
    Scope(const SpanContext& span, detail::List<KeyedAttribute> attrs) {
        tld::detail::check(detail::otel_save(saved_slice()));
        tld::detail::check(detail::set_keyed(span, attrs));
        active_ = true;
    }
#endif
    /// Scope(span) without exceptions: on failure @p ec is set and the scope inactive.
    Scope(const SpanContext& span, std::error_code& ec) noexcept : Scope(span, detail::List<Attribute>{}, ec) {}
    /// Scope(span, attrs) by name without exceptions.
    Scope(const SpanContext& span, detail::List<Attribute> attrs, std::error_code& ec) noexcept {
        int rc = detail::otel_save(saved_slice());
        if (rc == 0) {
            rc = detail::set_named(span, attrs);
        }
        tld::detail::set_code(ec, rc);
        active_ = rc == 0;
    }
    /// Scope(span, attrs) by key without exceptions.
    Scope(const SpanContext& span, detail::List<KeyedAttribute> attrs, std::error_code& ec) noexcept {
        int rc = detail::otel_save(saved_slice());
        if (rc == 0) {
            rc = detail::set_keyed(span, attrs);
        }
        tld::detail::set_code(ec, rc);
        active_ = rc == 0;
    }

    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

    /// Puts back the record saved by the constructor (fails only if the
    /// thread's block is gone, and then there is nothing to restore into).
    ~Scope() {
        if (active_) {
            (void)detail::otel_restore({saved_.data(), saved_.size()});
        }
    }

    /// Whether the constructor published (and the destructor will restore).
    bool active() const noexcept { return active_; }

private:
    rust::Slice<std::uint8_t> saved_slice() noexcept { return {saved_.data(), saved_.size()}; }

    std::array<std::uint8_t, max_record_size> saved_;
    bool active_ = false;
};

}  // namespace otel
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

/**
 * @brief Creates the OpenTelemetry record key `otel.thread_ctx_v1` by a
 * constructor before main, so it gets its own room in every thread block
 * (like TLD_CXX_DEFINE_KEY; the C `TLD_OTEL_DEFINE_RECORD_KEY`). Use once
 * per program, at namespace scope, followed by `;`.
 *
 * Without an argument the record is `$TLD_OTEL_RECORD_SIZE` or 128 bytes;
 * `TLD_CXX_OTEL_DEFINE_RECORD_KEY(256)` sets the size (28 to 640). Errors
 * are reported again by the first tld::otel::set(). Without this macro the
 * key is created by the first publication, which must then come before any
 * thread touches tld data, else E2BIG.
 */
#define TLD_CXX_OTEL_DEFINE_RECORD_KEY(...)                                                             \
    __attribute__((constructor)) static void tld_cxx_otel_define_record_key() {                          \
        const std::size_t tld_sizes_[] = {0, __VA_ARGS__};                                              \
        std::error_code tld_ec_;                                                                        \
        if (sizeof(tld_sizes_) / sizeof(tld_sizes_[0]) > 1) {                                           \
            ::tld::otel::set_record_size(tld_sizes_[sizeof(tld_sizes_) / sizeof(tld_sizes_[0]) - 1], tld_ec_); \
        }                                                                                               \
        (void)::tld::otel::record_key(tld_ec_);                                                         \
    }                                                                                                   \
    static_assert(true, "takes the caller's ;")

#endif  // TLD_TLD_HPP
