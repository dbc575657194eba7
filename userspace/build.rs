//! Embeds the eBPF object built by `cargo xtask build-ebpf`. When it has not been
//! built, the crate still compiles (so `cargo check` works) and loading the
//! datapath fails with a message that says how to build it.
use std::{env, fs, path::PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let obj = manifest.join("../datapath-ebpf/target/bpfel-unknown-none/release/oxvs-datapath");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("oxvs-datapath.o");
    println!("cargo:rerun-if-changed={}", obj.display());
    println!("cargo:rustc-check-cfg=cfg(oxvs_no_ebpf)");
    match fs::read(&obj) {
        Ok(bytes) => fs::write(&out, bytes).unwrap(),
        Err(_) => {
            fs::write(&out, b"").unwrap();
            println!("cargo:rustc-cfg=oxvs_no_ebpf");
        }
    }
}
