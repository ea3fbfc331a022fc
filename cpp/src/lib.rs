//! The C++ binding of tld: the Rust side of the cxx bridge. The C++ API is
//! `include/tld/tld.hpp`; this crate builds the static archive it links
//! (`libtld_cxx.a`), which carries its own copy of the core. Every copy of the
//! core in a process joins one runtime (DESIGN §4), so keys created here are
//! the keys of the C ABI, Python and Go in the same process.

mod bridge;
