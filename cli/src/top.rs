//! `tld top PID --by KEY`: which value of a key is burning the CPU. The BPF
//! side (`tld_bpf::top`) charges every slice of the process's threads to
//! the value their key holds when the slice ends; this prints, every
//! interval, the CPU time (and share) per value, summed over the process or
//! per thread, until the process exits.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tld_bpf::top::{Bucket, Held, OtelField, Top, TopConfig};

use crate::otel;
use crate::pinned::{self, Fail};
use crate::show;

/// What the time is charged to: `--by KEY`, or a field of the
/// OpenTelemetry record (`otel.span_id`, `otel.trace_id`, `otel.attr.NAME`).
#[derive(Clone, Debug, PartialEq, Eq)]
enum By {
    Key,
    Otel(OtelField),
}

/// Checks `--by` on the command line (exit code 2 when it is wrong).
pub fn check_by(by: &str) -> Result<String, String> {
    match by.strip_prefix("otel.attr.") {
        Some("") => Err("otel.attr.NAME needs an attribute name (e.g. otel.attr.http.route)".into()),
        Some(name) if name.len() > 127 || name.contains('\0') => {
            Err(format!("{name:?} is not an attribute name (1 to 127 bytes, no NUL)"))
        }
        _ if by.is_empty() => Err("an empty key name".into()),
        _ => Ok(by.to_string()),
    }
}

/// Parses `--by`: (what, the attribute name).
fn parse_by(by: &str) -> (By, Option<&str>) {
    match by {
        "otel.span_id" => (By::Otel(OtelField::SpanId), None),
        "otel.trace_id" => (By::Otel(OtelField::TraceId), None),
        _ => match by.strip_prefix("otel.attr.") {
            Some(name) => (By::Otel(OtelField::Attr), Some(name)),
            None => (By::Key, None),
        },
    }
}

/// What `tld top` was asked.
pub struct TopArgs<'a> {
    pub path: &'a Path,
    pub pid: i32,
    pub key: &'a str,
    pub interval: f64,
    pub per_thread: bool,
    pub json: bool,
    pub count: Option<u64>,
}

/// One row: a value (and a thread with --per-thread), its CPU time in the
/// last interval and in total.
struct Row {
    tid: Option<i32>,
    held: Held,
    ns: u64,
    total_ns: u64,
    slices: u64,
}

/// Sums `buckets` by value (and thread), with the interval's time taken
/// against `before`.
fn rows(buckets: &[Bucket], before: &BTreeMap<(i32, Held), u64>, per_thread: bool) -> Vec<Row> {
    let mut by: BTreeMap<(Option<i32>, Held), Row> = BTreeMap::new();
    for b in buckets {
        let tid = per_thread.then_some(b.tid);
        let prev = before.get(&(b.tid, b.held.clone())).copied().unwrap_or(0);
        let row = by.entry((tid, b.held.clone())).or_insert_with(|| Row {
            tid,
            held: b.held.clone(),
            ns: 0,
            total_ns: 0,
            slices: 0,
        });
        row.ns += b.ns.saturating_sub(prev);
        row.total_ns += b.ns;
        row.slices += b.slices;
    }
    let mut rows: Vec<Row> = by.into_values().collect();
    rows.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then(a.tid.cmp(&b.tid)));
    rows
}

/// A value as `tld dump` shows it: a signed integer for a whole value of
/// 1, 2, 4 or 8 bytes, hex otherwise.
fn int_of(bytes: &[u8], size: u16) -> Option<i64> {
    if bytes.len() != usize::from(size) {
        return None;
    }
    let mut b = [0u8; 8];
    b[..bytes.len().min(8)].copy_from_slice(&bytes[..bytes.len().min(8)]);
    Some(match size {
        1 => i64::from(b[0] as i8),
        2 => i64::from(i16::from_le_bytes([b[0], b[1]])),
        4 => i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        8 => i64::from_le_bytes(b),
        _ => return None,
    })
}

fn label(held: &Held, size: u16, by_otel: bool) -> String {
    match held {
        Held::Value(bytes) if by_otel => show::hex(bytes),
        Held::Attr(bytes, len) => format!(
            "{:?}{}",
            otel::text(bytes),
            if usize::from(*len) > bytes.len() { "..." } else { "" }
        ),
        Held::NoData | Held::NoKey if by_otel => "(none)".into(),
        Held::NoRecord => "(none)".into(),
        Held::NoAttr => "(unset)".into(),
        Held::Value(bytes) => match int_of(bytes, size) {
            Some(v) => v.to_string(),
            None => format!(
                "0x{}{}",
                show::hex(bytes),
                if bytes.len() < usize::from(size) { "..." } else { "" }
            ),
        },
        Held::NoData => "(no tld data)".into(),
        Held::NoKey => "(no such key)".into(),
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn row_json(r: &Row, size: u16, by_otel: bool, ns: u64, total: u64) -> Value {
    let (value, status) = match &r.held {
        Held::Value(bytes) if by_otel => (json!({"hex": show::hex(bytes), "truncated": false}), "value"),
        Held::Attr(bytes, len) => (
            json!({"text": otel::text(bytes), "hex": show::hex(bytes), "truncated": usize::from(*len) > bytes.len()}),
            "value",
        ),
        Held::Value(bytes) => {
            let mut v = serde_json::Map::new();
            if let Some(i) = int_of(bytes, size) {
                v.insert("int".into(), json!(i));
            }
            v.insert("hex".into(), json!(show::hex(bytes)));
            v.insert("truncated".into(), json!(bytes.len() < usize::from(size)));
            (Value::Object(v), "value")
        }
        Held::NoData => (Value::Null, "no-data"),
        Held::NoKey => (Value::Null, "no-key"),
        Held::NoRecord => (Value::Null, "none"),
        Held::NoAttr => (Value::Null, "no-attr"),
    };
    let mut o = json!({
        "value": value,
        "status": status,
        "cpu_ns": r.ns,
        "share": share(r.ns, ns),
        "total_cpu_ns": r.total_ns,
        "total_share": share(r.total_ns, total),
        "slices": r.slices,
    });
    if let Some(tid) = r.tid {
        o["tid"] = json!(tid);
    }
    o
}

fn secs(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e9)
}

/// Whether process `pid` still runs: it exists and is not a zombie
/// (exited, not yet reaped by its parent).
fn running(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

/// `tld top`.
pub fn top(args: TopArgs<'_>) -> Result<(), Fail> {
    let TopArgs {
        path,
        pid,
        key,
        interval,
        per_thread,
        json: as_json,
        count,
    } = args;
    let (by, attr_name) = parse_by(key);
    let by_otel = by != By::Key;
    let by_label = key;
    let key = if by_otel { otel::KEY } else { key };
    // The key's size, as the process published it.
    let ins = show::open_inspector(path, pid, None)?;
    let threads = show::scan(&ins, path, pid, None, false)?;
    drop(ins);
    let (keys, _) = show::collect(&threads);
    let Some(size) = keys.iter().find(|k| k.name == key).map(|k| k.size) else {
        let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        return Err(Fail::Other(format!(
            "process {pid} ({}) has no key {key:?}{} (its keys: {})",
            show::proc_comm(pid).unwrap_or_else(|| "?".into()),
            if by_otel { ": it publishes no OpenTelemetry thread context through tld" } else { "" },
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        )));
    };
    let map = pinned::open_map(path)?;
    let config = TopConfig {
        tgid: pid,
        key,
        key_size: size,
        read_tld: true,
        otel: match by {
            By::Key => None,
            By::Otel(f) => Some(f),
        },
    };
    let top = Top::open(path, config).map_err(|e| Fail::from_bpf("loading the sched_switch program", e))?;
    // The attribute's key-index, looked up in the process context until the
    // process registers the name (an index never changes meaning).
    let mut attr_index: Option<u8> = None;
    let mut resolve = |top: &Top| -> Result<Option<u8>, Fail> {
        if let (Some(name), None) = (attr_name, attr_index) {
            if let Ok(key_map) = otel::key_map(pid) {
                if let Some(i) = key_map.iter().position(|n| n == name).and_then(|i| u8::try_from(i).ok()) {
                    top.set_attr_index(Some(i))
                        .map_err(|e| Fail::from_bpf("setting the attribute's index", e))?;
                    attr_index = Some(i);
                }
            }
        }
        Ok(attr_index)
    };
    resolve(&top)?;

    let clear = !as_json && std::io::stdout().is_terminal();
    let start = Instant::now();
    let mut before: BTreeMap<(i32, Held), u64> = BTreeMap::new();
    let mut shown = 0u64;
    loop {
        std::thread::sleep(Duration::from_secs_f64(interval));
        // Read after the check: a process that exited has been charged its
        // last slices by then.
        let gone = !running(pid);
        let index = resolve(&top)?;
        let buckets = top
            .buckets()
            .map_err(|e| Fail::from_bpf("reading the CPU time charged", e))?;
        let dropped = top.dropped().unwrap_or(0);
        let rows = rows(&buckets, &before, per_thread);
        before = buckets.iter().map(|b| ((b.tid, b.held.clone()), b.ns)).collect();
        let ns: u64 = rows.iter().map(|r| r.ns).sum();
        let total: u64 = rows.iter().map(|r| r.total_ns).sum();
        let elapsed = start.elapsed().as_secs_f64();
        shown += 1;
        let last = gone || count.is_some_and(|n| shown >= n);

        let mut out = std::io::stdout().lock();
        let written = if as_json {
            let mut doc = json!({
                "schema": "tld-top/1",
                "map": path.display().to_string(),
                "layout": map.layout.value_size(),
                "pid": pid,
                "by": by_label,
                "key": {"name": key, "size": size},
                "interval_s": interval,
                "elapsed_s": elapsed,
                "exited": gone,
                "cpu_ns": ns,
                "total_cpu_ns": total,
                "rows": rows.iter().map(|r| row_json(r, size, by_otel, ns, total)).collect::<Vec<_>>(),
                "dropped": dropped,
            });
            if let Some(name) = attr_name {
                doc["attribute"] = json!({"name": name, "index": index});
            }
            writeln!(out, "{doc}")
        } else {
            let mut header = Vec::new();
            if per_thread {
                header.push("TID".to_string());
            }
            header.extend(
                [by_label, "CPU s", "SHARE", "TOTAL CPU s", "TOTAL SHARE", "SLICES"].map(String::from),
            );
            let mut table = vec![header];
            for r in &rows {
                let mut line = Vec::new();
                if let Some(tid) = r.tid {
                    line.push(tid.to_string());
                }
                line.push(label(&r.held, size, by_otel));
                line.push(secs(r.ns));
                line.push(format!("{:.1}%", 100.0 * share(r.ns, ns)));
                line.push(secs(r.total_ns));
                line.push(format!("{:.1}%", 100.0 * share(r.total_ns, total)));
                line.push(r.slices.to_string());
                table.push(line);
            }
            let mut s = String::new();
            if clear {
                s.push_str("\x1b[H\x1b[2J");
            }
            let what = match (attr_name, index) {
                (Some(name), Some(i)) => format!("{by_label} (attribute {name:?}, key-index {i}, in {key}, {size} bytes)"),
                (Some(name), None) => format!(
                    "{by_label} (attribute {name:?} not in the process's attribute key map yet: looked up every interval)"
                ),
                (None, _) if by_otel => format!("{by_label} (in {key}, {size} bytes)"),
                (None, _) => format!("{key:?} ({size} bytes)"),
            };
            s.push_str(&format!(
                "tld top {pid} by {what}: CPU time per value, every {interval}s ({elapsed:.1} s so far){}\n",
                if gone { "; the process exited" } else { "; Ctrl-C to stop" }
            ));
            let mut right = vec![true; table[0].len()];
            right[usize::from(per_thread)] = false;
            s.push_str(&show::table(&table, &right));
            if dropped > 0 {
                s.push_str(&format!("warning: {dropped} slices found no room (16384 buckets)\n"));
            }
            if !clear {
                s.push('\n');
            }
            write!(out, "{s}")
        };
        if written.and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
        if last {
            return Ok(());
        }
    }
}
