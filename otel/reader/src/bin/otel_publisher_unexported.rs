//! `otel_publisher` linked without exporting `otel_thread_ctx_v1`: its copy
//! of the symbol is invisible to OTEP 4947 readers (tests/kernel.rs).

#[path = "otel_publisher.rs"]
mod publisher;

fn main() {
    publisher::main()
}
