//! Records the git commit relay is built from, for `/version`.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=RELAY_BUILD_GIT_SHA");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    if std::env::var("RELAY_BUILD_GIT_SHA").is_ok() {
        return;
    }
    let sha = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string());
    if let Some(sha) = sha {
        println!("cargo:rustc-env=RELAY_BUILD_GIT_SHA={sha}");
    }
}
