//! `tld`: operate task local data (TLD) on a machine.
//!
//! Pins `tld_data_map`, reports the state of the machine, and shows the keys
//! and per-thread values of a live process exactly as a BPF program sees
//! them, through a generic task iterator (`tld_bpf::inspect`).

mod otel;
mod pinned;
mod show;
mod top;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use pinned::Fail;

const AFTER_HELP: &str = "\
EXIT CODES
  0  success
  1  any other failure (a BPF operation failed; the message says which)
  2  invalid command line
  3  no such process (or no such thread with --tid); also when the process
     exits while `dump --watch` runs
  4  the process does not use tld: none of its threads is registered in the map
  5  no map pinned at the path
  6  bpffs is not mounted where the path points
  7  no privilege: loading the reader needs root (or CAP_BPF + CAP_PERFMON),
     creating or opening the pin needs the right to it
  8  the object pinned at the path is not a tld_data_map (the reason is printed)
  9  the kernel cannot create tld_data_map (UPTRs in task storage: Linux 6.13+)

The map path is --path, else $TLD_MAP_PATH, else /sys/fs/bpf/tld/tld_data_map
(the path applications attach to by default). Process and thread ids are those
of the initial pid namespace.

Security: whoever can write the pinned map can set the values of ANY task, of
any process and user. The pin's file mode is the trust boundary; BPF programs
must treat TLD values as untrusted hints.

Run `tld dump --help` for the --json schema.";

const DUMP_HELP: &str = "\
Values of 1, 2, 4 and 8 bytes print as signed little-endian integers, others
as hex (memory order). '-' means the thread has no such key; '?' a value that
was skipped because it lies outside the thread's data page (reported on
stderr, never read); 'stale' a thread whose registration belongs to a program
image it replaced with execve (its old values are not shown). Maps of either
layout (24- or 16-byte values) are read.

--json prints one JSON document (with --watch: one per line, JSON Lines):
  {
    \"schema\": \"tld-dump/1\",
    \"map\": \"/sys/fs/bpf/tld/tld_data_map\",
    \"pid\": 1234,
    \"keys\": [ {\"slot\": 0, \"name\": \"priority\", \"size\": 4, \"offset\": 0}, ... ],
    \"threads\": [
      { \"tid\": 1235, \"name\": \"worker-0\", \"stale\": false,
        \"values\": { \"priority\": {\"int\": 3, \"hex\": \"03000000\", \"truncated\": false},
                    \"blob\": {\"hex\": \"0102...\", \"truncated\": false},
                    \"late\": null } },
      ...
    ],
    \"warnings\": [ \"tid 1236: slot 3 is still being written (size 0): it and later slots were skipped\" ]
  }
keys: the process's published keys in slot order (the union of what every
thread's walk saw). threads: registered threads by tid; name is
/proc/PID/task/TID/comm. values: one member per key of `keys`; absent when the
thread's walk did not reach that slot, null when the value lies outside the
thread's data page. stale: the registration belongs to an image the thread
replaced with execve; values is then empty. int: present for sizes 1, 2, 4, 8 (signed). hex: the
value's bytes, at most the first 64. truncated: the value is longer than
64 bytes. New fields may be added; existing ones keep their meaning while
schema stays tld-dump/1.

OpenTelemetry: the value of otel.thread_ctx_v1 (an OTEP 4947 record, read
whole) is decoded; the table shows
  trace=<32 hex> span=<16 hex> flags=01 valid=1 http.route=\"/users/:id\" ...
or valid=N alone when the record is not valid. In JSON the value gains
  \"otel\": {\"valid\": 1, \"trace_id\": \"...\", \"span_id\": \"...\", \"trace_flags\": 1,
           \"attrs_data_size\": 16, \"attrs_cut\": false,
           \"attributes\": [{\"index\": 0, \"name\": \"http.route\", \"value\": \"/users/:id\",
                           \"hex\": \"...\"}]}
({\"valid\": 0} alone when not valid), and the document
\"otel_attribute_key_map\": [\"http.route\", ...]: attribute names by key-index,
from the process's OTEP 4719 context (OTEL_CTX mapping); null when no thread
has the key or the context cannot be read (a warning says why; attributes are
then named #index, as is an index the map lacks: name null in JSON).";

const TOP_HELP: &str = "\
A BPF program on sched_switch charges each slice a thread of the process spent
on a CPU to the value its key held when the slice ended (read through tld.bpf.h
as any consumer would). Values print as `tld dump` prints them; '(no tld data)'
is time of threads without a current registration, '(no such key)' of threads
that have not published the key. Values longer than 64 bytes are grouped by
their first 64. The command ends when the process exits (after a last table),
or after --count refreshes.

--by otel.span_id, otel.trace_id, otel.attr.NAME charge the time to a field of
the thread's OpenTelemetry record (key otel.thread_ctx_v1, DESIGN.md §10.6):
its span id, trace id (hex), or the value of attribute NAME (its first 64
bytes). '(none)' is time of threads without a valid record, '(unset)' of valid
records without the attribute. NAME is resolved to its key-index through the
process's attribute key map (OTEP 4719); until the process registers it, it is
looked up every interval (the header says so).

--json prints one document per refresh:
  {\"schema\": \"tld-top/1\", \"map\": ..., \"layout\": 24, \"pid\": 1234,
   \"key\": {\"name\": \"phase\", \"size\": 4}, \"interval_s\": 1.0,
   \"elapsed_s\": 3.0, \"exited\": false, \"cpu_ns\": 1990000000,
   \"total_cpu_ns\": 5900000000,
   \"rows\": [{\"value\": {\"int\": 2, \"hex\": \"02000000\", \"truncated\": false},
             \"status\": \"value\", \"cpu_ns\": 1200000000, \"share\": 0.6,
             \"total_cpu_ns\": 3000000000, \"total_share\": 0.51, \"slices\": 812}, ...],
   \"dropped\": 0}
status is value, no-data or no-key (value is then null); rows carry \"tid\" with
--per-thread; cpu_ns and share cover the last interval, total_* everything since
the start; rows are sorted by total_cpu_ns. \"by\" is --by as given. With
--by otel.*: key is otel.thread_ctx_v1; status may also be none (no valid
record) or no-attr; a span or trace id value is {\"hex\": ..., \"truncated\":
false}, an attribute value {\"text\": \"/a\", \"hex\": ..., \"truncated\": false}; with
otel.attr.NAME the document has \"attribute\": {\"name\": NAME, \"index\": 3} (index
null while NAME is not in the key map).";

#[derive(Parser, Debug)]
#[command(
    name = "tld",
    version,
    about = "Operate task local data: pin tld_data_map, and show what BPF sees of a process's per-thread values",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create tld_data_map and pin it (idempotent when a compatible map is pinned there).
    Pin {
        /// Pin path [default: $TLD_MAP_PATH, else /sys/fs/bpf/tld/tld_data_map].
        #[arg(long)]
        path: Option<PathBuf>,
        /// File mode of the pin, in octal (e.g. 0600, 0660, 0666). Whoever
        /// can write the pin can set the values of any task.
        #[arg(long, value_parser = parse_mode)]
        mode: Option<u32>,
        /// Group owning the pin (name or number), to combine with --mode 0660.
        #[arg(long)]
        group: Option<String>,
        /// Map value layout: 24 (tld's, the default) or 16 (upstream's
        /// Linux-tree layout, for consumers built on upstream's BPF header
        /// or tld.bpf.h with TLD_MAP_VALUE_16). An existing pin of another
        /// layout is refused.
        #[arg(long, value_parser = parse_layout, value_name = "BYTES")]
        layout: Option<tld_bpf::Layout>,
    },
    /// Remove the pin (the map lives on while applications hold it).
    Unpin {
        /// Pin path [default: $TLD_MAP_PATH, else /sys/fs/bpf/tld/tld_data_map].
        #[arg(long)]
        path: Option<PathBuf>,
    },
    /// Show bpffs, the pinned map, kernel UPTR support and registered tasks.
    Status {
        /// Pin path [default: $TLD_MAP_PATH, else /sys/fs/bpf/tld/tld_data_map].
        #[arg(long)]
        path: Option<PathBuf>,
    },
    /// List the keys of a process (slot, name, size, offset) as BPF sees them.
    Keys {
        /// Process id.
        pid: i32,
        /// Pin path [default: $TLD_MAP_PATH, else /sys/fs/bpf/tld/tld_data_map].
        #[arg(long)]
        path: Option<PathBuf>,
        /// Print JSON (the `keys` part of the `dump --json` schema, with
        /// schema "tld-keys/1").
        #[arg(long)]
        json: bool,
    },
    /// Show which values of a key burn the CPU: on-CPU time per value, refreshed every interval.
    #[command(after_help = TOP_HELP)]
    Top {
        /// Process id.
        pid: i32,
        /// The key whose values the time is charged to; or otel.span_id,
        /// otel.trace_id, otel.attr.NAME: a field of the OpenTelemetry
        /// thread context (the key otel.thread_ctx_v1).
        #[arg(long, value_name = "KEY", value_parser = top::check_by)]
        by: String,
        /// Seconds between refreshes.
        #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_interval)]
        interval: f64,
        /// One row per thread and value, instead of per value.
        #[arg(long)]
        per_thread: bool,
        /// Print one JSON document per refresh (JSON Lines; schema below).
        #[arg(long)]
        json: bool,
        /// Stop after this many refreshes (default: when the process exits).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Pin path [default: $TLD_MAP_PATH, else /sys/fs/bpf/tld/tld_data_map].
        #[arg(long)]
        path: Option<PathBuf>,
    },
    /// Show the values of every registered thread of a process, one row per thread.
    #[command(after_help = DUMP_HELP)]
    Dump {
        /// Process id.
        pid: i32,
        /// Only this thread.
        #[arg(long)]
        tid: Option<i32>,
        /// Print JSON (schema below).
        #[arg(long)]
        json: bool,
        /// Redraw every SECONDS until interrupted (or the process exits).
        #[arg(long, value_name = "SECONDS", value_parser = parse_interval)]
        watch: Option<f64>,
        /// Pin path [default: $TLD_MAP_PATH, else /sys/fs/bpf/tld/tld_data_map].
        #[arg(long)]
        path: Option<PathBuf>,
    },
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(format!("{s} is not an octal file mode (e.g. 0600, 0666)")),
    }
}

fn parse_layout(s: &str) -> Result<tld_bpf::Layout, String> {
    s.parse::<u32>()
        .ok()
        .and_then(tld_bpf::Layout::from_value_size)
        .ok_or_else(|| format!("{s} is not a map value layout: 24 or 16 (bytes)"))
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(secs) if (0.05..=86400.0).contains(&secs) => Ok(secs),
        _ => Err(format!(
            "{s} is not a number of seconds between 0.05 and 86400"
        )),
    }
}

fn map_path(path: Option<PathBuf>) -> PathBuf {
    path.unwrap_or_else(tld::default_map_path)
}

fn run(cli: Cli) -> Result<(), Fail> {
    match cli.cmd {
        Cmd::Pin {
            path,
            mode,
            group,
            layout,
        } => pinned::pin(&map_path(path), mode, group.as_deref(), layout),
        Cmd::Unpin { path } => pinned::unpin(&map_path(path)),
        Cmd::Status { path } => show::status(&map_path(path)),
        Cmd::Keys { pid, path, json } => show::keys(&map_path(path), pid, json),
        Cmd::Top {
            pid,
            by,
            interval,
            per_thread,
            json,
            count,
            path,
        } => top::top(top::TopArgs {
            path: &map_path(path),
            pid,
            key: &by,
            interval,
            per_thread,
            json,
            count,
        }),
        Cmd::Dump {
            pid,
            tid,
            json,
            watch,
            path,
        } => show::dump(&map_path(path), pid, tid, json, watch),
    }
}

fn main() -> ExitCode {
    // libbpf logs verifier output and pin failures to stderr; the tool
    // prints one line naming the cause instead. TLD_DEBUG=1 brings it back.
    if std::env::var_os("TLD_DEBUG").map_or(true, |v| v.is_empty() || v == "0") {
        libbpf_rs::set_print(None);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(fail) => {
            eprintln!("tld: {fail}");
            ExitCode::from(fail.code())
        }
    }
}
