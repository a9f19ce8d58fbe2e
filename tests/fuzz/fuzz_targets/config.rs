//! The config loader: one file's bytes through UTF-8, YAML, schema and
//! compile (`relay::config::check_bytes`). Problems, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = relay::config::check_bytes(std::path::Path::new("fuzz.yaml"), data);
});
