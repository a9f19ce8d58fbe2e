//! The top-level body scanner: parse, read the fields the gateway reads,
//! rewrite; a rewrite of a parsed object is itself a JSON object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::adapters::body::RawObject;

fuzz_target!(|data: &[u8]| {
    let Ok(o) = RawObject::parse(data) else {
        return;
    };
    let _ = o.str("model");
    let _ = o.flag("stream");
    let _ = o.parse_field::<u64>("max_tokens", "an integer");
    let out = o.rewrite(&[
        ("model", "\"m\""),
        ("stream_options", "{\"include_usage\":true}"),
    ]);
    assert!(out.len() <= data.len() + 64, "rewrite grew the body");
    assert!(RawObject::parse(&out).is_ok(), "rewrite is not an object");
});
