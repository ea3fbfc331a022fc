//! `tld status`, `tld keys`, `tld dump`: what BPF sees, read with the
//! `tld_inspect` task iterator.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tld_bpf::inspect::{Filter, Inspector, KeyView, ThreadView};

use crate::otel;
use crate::pinned::{self, Fail};

pub(crate) fn proc_comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

fn thread_comm(pid: i32, tid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

pub(crate) fn require_process(pid: i32) -> Result<(), Fail> {
    if pid <= 0 || !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(Fail::NoProcess(format!("no process with pid {pid}")));
    }
    Ok(())
}

/// Checks the process and the map, then loads the iterator.
pub(crate) fn open_inspector(path: &Path, pid: i32, tid: Option<i32>) -> Result<Inspector, Fail> {
    require_process(pid)?;
    if let Some(tid) = tid {
        if tid <= 0 || !Path::new(&format!("/proc/{pid}/task/{tid}")).exists() {
            return Err(Fail::NoProcess(format!(
                "process {pid} has no thread {tid}"
            )));
        }
    }
    pinned::open_map(path)?;
    let filter = Filter {
        tgid: pid,
        tid: tid.unwrap_or(0),
        keys: true,
        // Records are decoded whole (up to 640 bytes).
        full_key: Some(otel::KEY),
    };
    Inspector::open(path, filter).map_err(|e| Fail::from_bpf("reading task local data", e))
}

/// One scan; an empty result is an error naming why.
pub(crate) fn scan(
    ins: &Inspector,
    path: &Path,
    pid: i32,
    tid: Option<i32>,
    allow_empty: bool,
) -> Result<Vec<ThreadView>, Fail> {
    let threads = ins
        .scan()
        .map_err(|e| Fail::from_bpf("reading task local data", e))?;
    if threads.is_empty() {
        // Tell an exited process from one that never registered.
        require_process(pid).map_err(|_| Fail::NoProcess(format!("process {pid} exited")))?;
        if let Some(tid) = tid {
            if !Path::new(&format!("/proc/{pid}/task/{tid}")).exists() {
                return Err(Fail::NoProcess(format!(
                    "thread {tid} of process {pid} exited"
                )));
            }
        }
        if !allow_empty {
            return Err(Fail::NotUsingTld {
                pid,
                comm: proc_comm(pid).unwrap_or_else(|| "?".into()),
                path: path.to_path_buf(),
            });
        }
    }
    Ok(threads)
}

/// A key as the process publishes it.
#[derive(Clone)]
pub(crate) struct KeyInfo {
    slot: u16,
    pub(crate) name: String,
    pub(crate) size: u16,
    offset: u32,
}

/// The union of the keys every thread's walk saw, by slot, and the anomalies
/// the walks reported.
pub(crate) fn collect(threads: &[ThreadView]) -> (Vec<KeyInfo>, Vec<String>) {
    let mut keys: BTreeMap<u16, KeyInfo> = BTreeMap::new();
    let mut warnings = Vec::new();
    for t in threads {
        let tid = t.tid;
        if t.stale {
            warnings.push(format!(
                "tid {tid}: its registration belongs to a program image it replaced with execve (stale): its values are not shown"
            ));
            continue;
        }
        if !t.has_meta {
            warnings.push(format!("tid {tid}: registered without a metadata page"));
        }
        if !t.has_data {
            warnings.push(format!("tid {tid}: registered without a data page"));
        }
        if t.cnt_clamped {
            warnings.push(format!(
                "tid {tid}: cnt {} exceeds the {} slots of a metadata page: only those were read",
                t.cnt, t.max_slots
            ));
        }
        if let Some(slot) = t.unwritten_slot {
            warnings.push(format!(
                "tid {tid}: slot {slot} is still being written (size 0): it and later slots were skipped"
            ));
        }
        for k in &t.keys {
            if !k.in_page && t.has_data {
                warnings.push(format!(
                    "tid {tid}: key {:?} (slot {}, offset {}, size {}) runs past the thread's data page: skipped",
                    k.name, k.slot, k.offset, k.size
                ));
            }
            match keys.get(&k.slot) {
                Some(known) if known.name != k.name || known.size != k.size => warnings.push(format!(
                    "tid {tid}: slot {} reads as {:?} ({} bytes), other threads saw {:?} ({} bytes)",
                    k.slot, k.name, k.size, known.name, known.size
                )),
                Some(_) => {}
                None => {
                    keys.insert(
                        k.slot,
                        KeyInfo { slot: k.slot, name: k.name.clone(), size: k.size, offset: k.offset },
                    );
                }
            }
        }
    }
    (keys.into_values().collect(), warnings)
}

/// A value of 1, 2, 4 or 8 bytes as a signed little-endian integer.
fn int_value(k: &KeyView) -> Option<i64> {
    if !k.in_page || k.value.len() != usize::from(k.size) {
        return None;
    }
    let mut b = [0u8; 8];
    b[..k.value.len().min(8)].copy_from_slice(&k.value[..k.value.len().min(8)]);
    Some(match k.size {
        1 => i64::from(b[0] as i8),
        2 => i64::from(i16::from_le_bytes([b[0], b[1]])),
        4 => i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        8 => i64::from_le_bytes(b),
        _ => return None,
    })
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first [`tld_bpf::inspect::VALUE_MAX`] bytes of a value, as `dump`
/// prints values (the OpenTelemetry record's key is read whole, for
/// decoding), and whether there is more.
fn shown(k: &KeyView) -> (&[u8], bool) {
    let n = k.value.len().min(tld_bpf::inspect::VALUE_MAX);
    (&k.value[..n], k.in_page && n < usize::from(k.size))
}

/// The OpenTelemetry attribute key map of `pid` when some thread holds a
/// record to decode: (map, a warning when it cannot be read).
pub(crate) struct OtelNames {
    key_map: Vec<String>,
    warning: Option<String>,
    wanted: bool,
}

fn otel_names(pid: i32, threads: &[ThreadView]) -> OtelNames {
    let wanted = threads.iter().any(|t| t.keys.iter().any(|k| k.name == otel::KEY));
    if !wanted {
        return OtelNames { key_map: Vec::new(), warning: None, wanted };
    }
    match otel::key_map(pid) {
        Ok(key_map) => OtelNames { key_map, warning: None, wanted },
        Err(e) => OtelNames {
            key_map: Vec::new(),
            warning: Some(format!(
                "{}: no OpenTelemetry process context to name attributes ({e}): shown as #index",
                otel::KEY
            )),
            wanted,
        },
    }
}

fn cell(k: Option<&KeyView>, names: &OtelNames) -> String {
    match k {
        None => "-".into(),
        Some(k) if !k.in_page => "?".into(),
        Some(k) if k.name == otel::KEY => otel::cell(&k.value, &names.key_map),
        Some(k) => match int_value(k) {
            Some(v) => v.to_string(),
            None => {
                let (bytes, more) = shown(k);
                format!("0x{}{}", hex(bytes), if more { "..." } else { "" })
            }
        },
    }
}

fn key_json(k: &KeyInfo) -> Value {
    json!({ "slot": k.slot, "name": k.name, "size": k.size, "offset": k.offset })
}

fn value_json(k: &KeyView, names: &OtelNames) -> Value {
    if !k.in_page {
        return Value::Null;
    }
    let mut v = serde_json::Map::new();
    if let Some(i) = int_value(k) {
        v.insert("int".into(), json!(i));
    }
    let (bytes, more) = shown(k);
    v.insert("hex".into(), json!(hex(bytes)));
    v.insert("truncated".into(), json!(more));
    if k.name == otel::KEY {
        v.insert("otel".into(), otel::json(&k.value, &names.key_map));
    }
    Value::Object(v)
}

fn thread_name(pid: i32, t: &ThreadView) -> String {
    thread_comm(pid, t.tid).unwrap_or_else(|| t.comm.clone())
}

fn dump_json(path: &Path, pid: i32, threads: &[ThreadView]) -> Value {
    let (keys, mut warnings) = collect(threads);
    let names = otel_names(pid, threads);
    warnings.extend(names.warning.clone());
    let rows: Vec<Value> = threads
        .iter()
        .map(|t| {
            let values: serde_json::Map<String, Value> = t
                .keys
                .iter()
                .map(|k| (k.name.clone(), value_json(k, &names)))
                .collect();
            json!({ "tid": t.tid, "name": thread_name(pid, t), "stale": t.stale, "values": values })
        })
        .collect();
    json!({
        "schema": "tld-dump/1",
        "map": path.display().to_string(),
        "pid": pid,
        "keys": keys.iter().map(key_json).collect::<Vec<_>>(),
        "threads": rows,
        "otel_attribute_key_map": if names.wanted && names.warning.is_none() { json!(names.key_map) } else { Value::Null },
        "warnings": warnings,
    })
}

pub(crate) fn table(rows: &[Vec<String>], right: &[bool]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if right.get(c).copied().unwrap_or(true) {
                    format!("{s:>w$}", w = widths[c])
                } else {
                    format!("{s:<w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn dump_table(pid: i32, threads: &[ThreadView]) -> (String, Vec<String>) {
    let (keys, mut warnings) = collect(threads);
    let names = otel_names(pid, threads);
    warnings.extend(names.warning.clone());
    let mut header = vec!["TID".to_string(), "THREAD".to_string()];
    header.extend(keys.iter().map(|k| k.name.clone()));
    let mut rows = vec![header];
    for t in threads {
        let mut name = thread_name(pid, t);
        if t.stale {
            name.push_str(" (stale)");
        }
        let mut row = vec![t.tid.to_string(), name];
        if t.stale {
            row.extend(keys.iter().map(|_| "stale".to_string()));
        } else {
            row.extend(
                keys.iter()
                    .map(|k| cell(t.keys.iter().find(|v| v.slot == k.slot && v.name == k.name), &names)),
            );
        }
        rows.push(row);
    }
    let mut right = vec![true, false];
    right.extend(keys.iter().map(|_| true));
    (table(&rows, &right), warnings)
}

/// `tld keys PID`.
pub fn keys(path: &Path, pid: i32, as_json: bool) -> Result<(), Fail> {
    let ins = open_inspector(path, pid, None)?;
    let threads = scan(&ins, path, pid, None, false)?;
    let (keys, warnings) = collect(&threads);
    if as_json {
        let doc = json!({
            "schema": "tld-keys/1",
            "map": path.display().to_string(),
            "pid": pid,
            "keys": keys.iter().map(key_json).collect::<Vec<_>>(),
            "warnings": warnings,
        });
        println!("{doc}");
        return Ok(());
    }
    let mut rows = vec![vec![
        "SLOT".into(),
        "NAME".into(),
        "SIZE".into(),
        "OFFSET".into(),
    ]];
    for k in &keys {
        rows.push(vec![
            k.slot.to_string(),
            k.name.clone(),
            k.size.to_string(),
            k.offset.to_string(),
        ]);
    }
    print!("{}", table(&rows, &[true, false, true, true]));
    for w in warnings {
        eprintln!("tld: warning: {w}");
    }
    Ok(())
}

/// `tld dump PID`.
pub fn dump(
    path: &Path,
    pid: i32,
    tid: Option<i32>,
    as_json: bool,
    watch: Option<f64>,
) -> Result<(), Fail> {
    let ins = open_inspector(path, pid, tid)?;
    let Some(every) = watch else {
        let threads = scan(&ins, path, pid, tid, false)?;
        if as_json {
            println!("{}", dump_json(path, pid, &threads));
        } else {
            let (text, warnings) = dump_table(pid, &threads);
            print!("{text}");
            for w in warnings {
                eprintln!("tld: warning: {w}");
            }
        }
        return Ok(());
    };
    let clear = !as_json && std::io::stdout().is_terminal();
    loop {
        let threads = scan(&ins, path, pid, tid, true)?;
        let mut out = std::io::stdout().lock();
        let written = if as_json {
            writeln!(out, "{}", dump_json(path, pid, &threads))
        } else {
            let (text, warnings) = dump_table(pid, &threads);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let mut s = String::new();
            if clear {
                s.push_str("\x1b[H\x1b[2J");
            }
            s.push_str(&format!(
                "tld dump {pid} every {every}s ({} threads, unix time {now}); Ctrl-C to stop\n",
                threads.len()
            ));
            s.push_str(&text);
            for w in warnings {
                s.push_str(&format!("warning: {w}\n"));
            }
            if !clear {
                s.push('\n');
            }
            write!(out, "{s}")
        };
        // A closed pipe ends the watch quietly.
        if written.and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
        drop(out);
        std::thread::sleep(Duration::from_secs_f64(every));
    }
}

/// `tld status`.
pub fn status(path: &Path) -> Result<(), Fail> {
    let privileged = tld_bpf::has_bpf_privileges();
    let bpffs_ok = match pinned::require_bpffs(path) {
        Ok(()) => {
            println!(
                "bpffs:       mounted (the map path {} is on a bpffs)",
                path.display()
            );
            true
        }
        Err(e) => {
            println!("bpffs:       NOT mounted: {e}");
            false
        }
    };
    let mut map_ok = false;
    if bpffs_ok {
        match pinned::open_map(path) {
            Ok(map) => {
                map_ok = true;
                println!(
                    "map:         pinned at {} (map id {}, {}, {})",
                    path.display(),
                    map.id,
                    pinned::layout_name(map.layout),
                    pinned::describe_file(path)
                );
            }
            Err(Fail::NoMap(_)) => println!(
                "map:         not pinned at {} (create it with `tld pin`)",
                path.display()
            ),
            Err(e) => println!("map:         {e}"),
        }
    } else {
        println!("map:         not pinned (no bpffs)");
    }
    if privileged {
        match tld_bpf::inspect::probe_uptr() {
            Ok(()) => println!("uptr:        supported (created a task-storage map with UPTRs)"),
            Err(e) => println!("uptr:        NOT supported: {e} (Linux 6.13+ is needed)"),
        }
    } else {
        println!("uptr:        unknown (probing needs root, or CAP_BPF and CAP_PERFMON)");
    }
    if !map_ok {
        println!("registered:  unknown (no usable map)");
    } else if !privileged {
        println!("registered:  unknown (counting needs root, or CAP_BPF and CAP_PERFMON)");
    } else {
        let filter = Filter {
            tgid: 0,
            tid: 0,
            keys: false,
            full_key: None,
        };
        match Inspector::open(path, filter).and_then(|ins| ins.scan()) {
            Ok(threads) => {
                let mut procs: BTreeMap<i32, usize> = BTreeMap::new();
                for t in &threads {
                    *procs.entry(t.tgid).or_default() += 1;
                }
                let list: Vec<String> = procs
                    .iter()
                    .take(10)
                    .map(|(pid, n)| {
                        format!(
                            "{pid} ({}, {n})",
                            proc_comm(*pid).unwrap_or_else(|| "?".into())
                        )
                    })
                    .collect();
                println!(
                    "registered:  {} thread(s) in {} process(es){}{}",
                    threads.len(),
                    procs.len(),
                    if list.is_empty() { "" } else { ": " },
                    list.join(", ")
                );
                if procs.len() > 10 {
                    println!("             ... and {} more", procs.len() - 10);
                }
            }
            Err(e) => println!("registered:  unknown: {e}"),
        }
    }
    Ok(())
}
