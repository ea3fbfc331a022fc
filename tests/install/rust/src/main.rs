//! The Rust consumer of tld, a crate outside the workspace that depends on
//! the core by path. Usage: app KEY VALUE. Publishes VALUE under KEY on a new
//! thread, prints "ready TID" and keeps the thread alive until stdin reaches EOF.
use std::io::{Read, Write};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: app KEY VALUE");
        std::process::exit(2);
    }
    if let Err(e) = run(&args[1], &args[2]) {
        eprintln!("app: {e}");
        std::process::exit(1);
    }
}

fn run(name: &str, value: &str) -> Result<(), Box<dyn std::error::Error>> {
    let value: u64 = value.parse()?;
    tld::attach_default()?; // $TLD_MAP_PATH
    let key: tld::Key<u64> = tld::Key::get_or_create(name)?;
    std::thread::spawn(move || -> tld::Result<()> {
        key.set(value)?; // registers this thread with the attached map
        let tid = unsafe { libc_gettid() };
        println!("ready {tid}");
        std::io::stdout().flush().ok();
        std::io::stdin().read_to_end(&mut Vec::new()).ok();
        Ok(())
    })
    .join()
    .expect("worker thread")?;
    Ok(())
}

extern "C" {
    #[link_name = "gettid"]
    fn libc_gettid() -> i32;
}
