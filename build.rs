//! Fetches the official `socket.io-client` browser bundle from the npm registry, at the
//! version pinned by `client-demo/package-lock.json`, so the server can embed it and serve it
//! at `/socket.io/socket.io.min.js` the way Node's socket.io does. The bundle is never committed.
//! Only the `demo` feature (on by default) needs it: a build without it needs no npm.
//!
//! Set `SOCKET_IO_CLIENT_DIST` to a directory holding `socket.io.min.js` (and its `.map`) to
//! build without npm.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

const BUNDLE: &str = "socket.io.min.js";
const SOURCE_MAP: &str = "socket.io.min.js.map";

fn main() {
    // Only the demo page embeds the bundle.
    if env::var_os("CARGO_FEATURE_DEMO").is_none() {
        return;
    }
    println!("cargo::rerun-if-changed=client-demo/package.json");
    println!("cargo::rerun-if-changed=client-demo/package-lock.json");
    println!("cargo::rerun-if-env-changed=SOCKET_IO_CLIENT_DIST");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dist = match env::var_os("SOCKET_IO_CLIENT_DIST") {
        Some(dist) => PathBuf::from(dist),
        None => install_with_npm(&out_dir.join("client-demo-npm")),
    };
    for file in [BUNDLE, SOURCE_MAP] {
        let from = dist.join(file);
        fs::copy(&from, out_dir.join(file))
            .unwrap_or_else(|error| panic!("cannot copy {}: {error}", from.display()));
    }
}

/// Runs `npm ci` on a copy of `client-demo`'s manifest and returns the bundle's directory.
fn install_with_npm(work_dir: &Path) -> PathBuf {
    let dist = work_dir.join("node_modules/socket.io-client/dist");
    let lock = fs::read("client-demo/package-lock.json").expect("client-demo/package-lock.json");
    let stamp = work_dir.join("installed-lock.json");
    if fs::read(&stamp).ok().as_deref() == Some(&lock[..]) && dist.join(BUNDLE).exists() {
        return dist;
    }
    fs::create_dir_all(work_dir).expect("create npm work dir");
    for file in ["package.json", "package-lock.json"] {
        fs::copy(Path::new("client-demo").join(file), work_dir.join(file)).expect("copy manifest");
    }
    let status = Command::new("npm")
        .args([
            "ci",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ])
        .current_dir(work_dir)
        .status()
        .unwrap_or_else(|error| {
            panic!(
                "building the demo page needs npm (Node.js) to fetch socket.io-client: {error}; \
                 install Node.js, or set SOCKET_IO_CLIENT_DIST to a directory holding {BUNDLE}"
            )
        });
    assert!(
        status.success(),
        "npm ci for socket.io-client failed: {status}"
    );
    fs::write(&stamp, &lock).expect("write install stamp");
    dist
}
