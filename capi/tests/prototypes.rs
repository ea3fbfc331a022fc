//! `include/tld.h` is hand-written (the upstream-compatible macros and the
//! inline hot path need it), so nothing ties its prototypes to the Rust
//! functions but this test: cbindgen writes the prototypes of every exported
//! function from the source, and a C compiler checks them against tld.h in
//! one translation unit, where any difference of a parameter or return type
//! is a "conflicting types" error. A function exported but not declared is
//! a failure too.

use std::path::Path;
use std::process::Command;

#[test]
fn tld_h_declares_every_exported_function_with_its_rust_signature() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config = cbindgen::Config { language: cbindgen::Language::C, ..Default::default() };
    config.export.item_types = vec![cbindgen::ItemType::Functions];
    config.no_includes = true;
    // Refer to the header's typedefs (`tld_key_t`, not `struct tld_key_t`), and to size_t for usize.
    config.style = cbindgen::Style::Type;
    config.usize_is_size_t = true;
    config.export.rename.insert("tld__thread_cache".into(), "struct tld__thread_cache".into());
    config.sys_includes = vec!["stdint.h".into(), "stddef.h".into(), "stdbool.h".into()];
    let generated = cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen parses the C ABI crate");
    let out = std::env::temp_dir().join(format!("tld-prototypes-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let header = out.join("generated.h");
    generated.write_to_file(&header);
    let text = std::fs::read_to_string(&header).unwrap();

    // Every generated prototype's name must appear in tld.h (or, for the
    // OpenTelemetry functions, tld_otel.h) as a declaration.
    let tld_h = ["include/tld.h", "include/tld_otel.h"]
        .map(|h| std::fs::read_to_string(crate_dir.join(h)).unwrap())
        .concat();
    let names: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_once('(').map(|(head, _)| head.rsplit([' ', '*']).next().unwrap_or("").to_string()))
        .filter(|n| n.starts_with("tld_"))
        .collect();
    assert!(names.len() > 15, "too few functions found: {names:?}");
    for n in &names {
        assert!(tld_h.contains(&format!(" {n}(")) || tld_h.contains(&format!("*{n}(")), "{n} is exported but not in tld.h");
    }

    let check = out.join("check.c");
    std::fs::write(
        &check,
        format!(
            "#define TLD_NO_INLINE\n#include \"tld.h\"\n#include \"tld_otel.h\"\n#include \"{}\"\nint main(void) {{ return 0; }}\n",
            header.display()
        ),
    )
    .unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let r = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Werror", "-fsyntax-only", "-I"])
        .arg(crate_dir.join("include"))
        .arg(&check)
        .output()
        .expect("running the C compiler");
    let _ = std::fs::remove_dir_all(&out);
    assert!(
        r.status.success(),
        "tld.h and the Rust signatures differ:\n{}\n--- generated ---\n{text}",
        String::from_utf8_lossy(&r.stderr)
    );
}
