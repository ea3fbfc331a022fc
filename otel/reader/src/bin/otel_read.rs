//! The readers of this crate as a command, for tests of publishers in other
//! languages (python/tests/test_otel.py): one JSON object per command line.
//!
//! `otel_read [--pin DIR]`: with `--pin`, loads the BPF reader, pins its
//! `tld_data_map` at `DIR/tld_data_map` (for the process under test to
//! attach; removed on exit) and prints `pinned <path>`; then `ready`. Then,
//! on stdin, one command per line, each answered by one line:
//!
//! - `bpf TID SIZE`: BPF reads SIZE bytes of thread TID's record through
//!   `tld_data_map` → `{"valid":bool,"offset":N,"hex":"..."}` (needs `--pin`);
//! - `tls PID TID`: the OTEP 4947 TLS reader stops the thread and follows
//!   every exported `otel_thread_ctx_v1` →
//!   `{"symbols":[{"path":..,"address":N,"pointer":N}],"record":"hex"|null}`;
//! - `context PID`: the OTEP 4719 reader →
//!   `{"mapping":..,"schema_version":..,"key_map":[..],"attributes":{..}}`
//!   (string, bool, int and double values);
//! - `exit`.
//!
//! A failed read answers `{"error":"message"}` (BPF: `{"errno":N,...}`).

use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use tld_otel_reader::bpf::RecordReader;
use tld_otel_reader::context::{read_process_context, AnyValue};
use tld_otel_reader::tls::{read_thread, tls_symbols};

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn error(msg: &str) -> String {
    format!("{{\"error\":{}}}", json_str(msg))
}

fn value(v: &AnyValue) -> String {
    match v {
        AnyValue::String(s) => json_str(s),
        AnyValue::Bool(b) => b.to_string(),
        AnyValue::Int(i) => i.to_string(),
        AnyValue::Double(d) if d.is_finite() => format!("{d:?}"),
        AnyValue::Array(a) => format!("[{}]", a.iter().map(value).collect::<Vec<_>>().join(",")),
        _ => "null".into(),
    }
}

fn int<T: std::str::FromStr>(s: Option<&str>, what: &str) -> Result<T, String> {
    s.and_then(|s| s.parse().ok()).ok_or_else(|| format!("expected a number for {what}"))
}

fn answer(line: &str, bpf: Option<&RecordReader>) -> Result<String, String> {
    let mut f = line.split_whitespace();
    match f.next() {
        Some("bpf") => {
            let bpf = bpf.ok_or("bpf needs --pin")?;
            let (tid, size): (i32, usize) = (int(f.next(), "TID")?, int(f.next(), "SIZE")?);
            Ok(match bpf.read(tid, size) {
                Ok(r) => format!("{{\"valid\":{},\"offset\":{},\"hex\":\"{}\"}}", r.valid, r.offset, hex(&r.bytes)),
                Err(e) => format!("{{\"errno\":{},\"error\":\"BPF read of thread {tid}\"}}", -e),
            })
        }
        Some("tls") => {
            let (pid, tid): (i32, i32) = (int(f.next(), "PID")?, int(f.next(), "TID")?);
            let syms = tls_symbols(pid)?;
            let view = read_thread(pid, tid, &syms)?;
            let slots: Vec<String> = view
                .slots
                .iter()
                .map(|s| format!("{{\"path\":{},\"address\":{},\"pointer\":{}}}", json_str(&s.path), s.address, s.pointer))
                .collect();
            let record = view.record.as_deref().map_or("null".to_string(), |r| format!("\"{}\"", hex(r)));
            Ok(format!("{{\"symbols\":[{}],\"record\":{record}}}", slots.join(",")))
        }
        Some("context") => {
            let pid: i32 = int(f.next(), "PID")?;
            let ctx = read_process_context(pid)?;
            let attrs: Vec<String> = ctx.attributes.iter().map(|(k, v)| format!("{}:{}", json_str(k), value(v))).collect();
            let schema = ctx.get("threadlocal.schema_version").map_or("null".into(), value);
            let keys: Vec<String> = ctx.key_map().iter().map(|k| json_str(k)).collect();
            Ok(format!(
                "{{\"mapping\":{},\"schema_version\":{schema},\"key_map\":[{}],\"attributes\":{{{}}}}}",
                json_str(&ctx.mapping_name),
                keys.join(","),
                attrs.join(",")
            ))
        }
        _ => Err(format!("unknown command {line:?} (bpf TID SIZE | tls PID TID | context PID | exit)")),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut bpf = None;
    match args.as_slice() {
        [] => {}
        [flag, dir] if flag == "--pin" => {
            let mut r = RecordReader::load().unwrap_or_else(|e| {
                eprintln!("otel_read: {e}");
                std::process::exit(1)
            });
            let path = r.pin(&PathBuf::from(dir)).unwrap_or_else(|e| {
                eprintln!("otel_read: {e}");
                std::process::exit(1)
            });
            println!("pinned {}", path.display());
            bpf = Some(r);
        }
        _ => {
            eprintln!("usage: otel_read [--pin DIR]   (then commands on stdin: bpf TID SIZE | tls PID TID | context PID | exit)");
            std::process::exit(2);
        }
    }
    println!("ready");
    let stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim();
        if line == "exit" {
            break;
        }
        if line.is_empty() {
            continue;
        }
        let out = answer(line, bpf.as_ref()).unwrap_or_else(|e| error(&e));
        let mut o = stdout.lock();
        let _ = writeln!(o, "{out}");
        let _ = o.flush();
    }
    // Dropping the reader unpins the map.
    drop(bpf);
}
