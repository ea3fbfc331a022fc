//! Following replaced pins (DESIGN §8.4): one watcher thread per process,
//! started with the first map attached by path.
//!
//! It sleeps on inotify events of the pinned maps' directories, with a
//! one-second timer as backstop (a directory that did not exist yet, an
//! event queue overflow), and runs [`crate::maps::refresh`] on each wake-up:
//! a pin that now names another map moves every thread to it.

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use super::Shared;

/// Environment variable that disables the watcher when set to `0`.
pub const PIN_WATCH_ENV: &str = "TLD_PIN_WATCH";

/// How long the watcher sleeps at most between two checks, in milliseconds.
pub const BACKSTOP_MS: i32 = 1000;

#[repr(C)]
pub(crate) struct WatcherState {
    /// 1 while a watcher thread runs (or is starting) in process `pid`.
    running: AtomicU32,
    pid: AtomicI32,
}

impl WatcherState {
    pub(crate) fn new() -> Self {
        WatcherState { running: AtomicU32::new(0), pid: AtomicI32::new(0) }
    }
}

fn disabled() -> bool {
    std::env::var_os(PIN_WATCH_ENV).is_some_and(|v| v == "0")
}

/// Starts the watcher thread unless one runs in this process or it is disabled.
pub(crate) fn ensure_started(shared: &'static Shared) {
    let w = &shared.watcher;
    if w.running.load(Ordering::Acquire) != 0 || disabled() {
        return;
    }
    if w.running.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return;
    }
    w.pid.store(crate::sys::getpid(), Ordering::Relaxed);
    // The thread runs this copy's code for the life of the process.
    super::pin_this_copy();
    // Opened here, not in the thread, so the fd exists when attach returns.
    let inotify = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    let started = std::thread::Builder::new().name("tld-pin-watch".into()).spawn(move || run(shared, inotify));
    if started.is_err() {
        if inotify >= 0 {
            crate::sys::close(inotify);
        }
        w.running.store(0, Ordering::Release);
    }
}

/// The watcher does not exist in a fork child: the next path attachment or
/// refresh there starts one.
pub(crate) fn after_fork_child(shared: &Shared) {
    shared.watcher.running.store(0, Ordering::Relaxed);
}

fn run(shared: &'static Shared, inotify: i32) {
    let mut watched: Vec<std::path::PathBuf> = Vec::new();
    loop {
        let dirs: Vec<std::path::PathBuf> = {
            let mut d: Vec<_> =
                super::register::pinned(shared).into_iter().filter_map(|(_, _, p)| p.parent().map(Into::into)).collect();
            d.sort();
            d.dedup();
            d
        };
        if inotify >= 0 && dirs != watched {
            for dir in &dirs {
                if let Ok(c) = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str())) {
                    let mask = libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_TO | libc::IN_MOVED_FROM;
                    unsafe { libc::inotify_add_watch(inotify, c.as_ptr(), mask) };
                }
            }
            watched = dirs;
        }
        let mut pfd = libc::pollfd { fd: inotify, events: libc::POLLIN, revents: 0 };
        if inotify >= 0 {
            unsafe { libc::poll(&mut pfd, 1, BACKSTOP_MS) };
            if pfd.revents & libc::POLLIN != 0 {
                let mut buf = [0u8; 4096];
                unsafe { libc::read(inotify, buf.as_mut_ptr().cast(), buf.len()) };
            }
        } else {
            std::thread::sleep(std::time::Duration::from_millis(BACKSTOP_MS as u64));
        }
        let _ = crate::maps::refresh();
    }
}
