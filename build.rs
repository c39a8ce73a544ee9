//! Release builds of the binary on x86_64 Linux (glibc) with rustc's default linker (lld,
//! since Rust 1.90) get two link options:
//!
//! * `--symbol-ordering-file=layout/hot.txt`: the functions splitdns runs, hottest first, are
//!   laid out together. The kernel maps up to 64 KB around each page a process touches, so
//!   with the default order nearly all 3.6 MB of text became resident; grouped, the resident
//!   text is about the ~1 MB that runs. See `layout/order.sh`, which makes the list.
//! * `-z pack-relative-relocs` (DT_RELR, glibc 2.36+): the relocations the loader applies
//!   at start shrink from ~150 KB to a few, and so do the pages read to apply them.
//!
//! Elsewhere (musl, other architectures, debug builds, another linker, a toolchain without
//! rust-lld) nothing changes: the options are about memory, never about behaviour.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=layout/hot.txt");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");

    let var = |k: &str| env::var(k).unwrap_or_default();
    if var("TARGET") != "x86_64-unknown-linux-gnu" || var("PROFILE") != "release" {
        return;
    }
    // A linker of the user's choosing may not be lld (GNU ld knows neither option).
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    if !var("RUSTC_LINKER").is_empty() || flags.contains("linker") || flags.contains("fuse-ld") {
        return;
    }
    let rustc_bin = var("RUSTC");
    let rustc =
        rustc_output(&rustc_bin, "-V").and_then(|v| v.split_whitespace().nth(1).map(str::to_owned));
    // rust-lld became the default linker of this target in 1.90, where the toolchain ships
    // it (rustup's does; a distribution's rustc may link with the system's cc and ld).
    if rustc.as_deref().map(minor).unwrap_or(0) < 90 {
        return;
    }
    let Some(sysroot) = rustc_output(&rustc_bin, "--print=sysroot") else {
        return;
    };
    let lld =
        Path::new(sysroot.trim()).join("lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld/ld.lld");
    if !lld.exists() {
        return;
    }

    let order = Path::new(&var("CARGO_MANIFEST_DIR")).join("layout/hot.txt");
    if let Ok(list) = std::fs::read_to_string(&order) {
        let made_with = list
            .lines()
            .find_map(|l| l.strip_prefix("# rustc "))
            .map(str::trim);
        if made_with.is_some() && made_with != rustc.as_deref() {
            println!(
                "cargo:warning=layout/hot.txt was made with rustc {}, this is rustc {}: \
                 its names will mostly not match, and hot code will not be grouped \
                 (about 1.5 MB more resident). Regenerate it with layout/order.sh.",
                made_with.unwrap_or("?"),
                rustc.as_deref().unwrap_or("?")
            );
        }
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    // Only where the C library knows DT_RELR (a binary linked against an older one would
    // start with its pointers unrelocated); glibc 2.36+ also records the need in the binary.
    if glibc_minor().unwrap_or(0) >= 36 {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// The minor version of the build host's glibc ("glibc 2.36" from getconf).
fn glibc_minor() -> Option<u32> {
    let out = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let version = text.split_whitespace().nth(1)?;
    version.split('.').nth(1)?.parse().ok()
}

/// What `rustc ARG` prints (`-V`: "rustc 1.95.0 (59807616e 2026-04-14)").
fn rustc_output(rustc: &str, arg: &str) -> Option<String> {
    let out = Command::new(if rustc.is_empty() { "rustc" } else { rustc })
        .arg(arg)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()
}

/// The minor version of a "1.MINOR.PATCH" release, 0 if it is not one.
fn minor(release: &str) -> u32 {
    let mut parts = release.split('.');
    match (parts.next(), parts.next()) {
        (Some("1"), Some(m)) => m.parse().unwrap_or(0),
        _ => 0,
    }
}
