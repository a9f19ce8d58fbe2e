//! Both translators on whole bodies: the first byte picks the direction;
//! the rest is a client request (translated for the other protocol) and,
//! after a translation succeeded, also an upstream response to translate
//! back. Output stays within a fixed multiple of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::adapters::translate::{translate_request, Options};
use relay::adapters::Protocol;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let (client, upstream) = match sel % 4 {
        0 => (Protocol::OpenAi, Protocol::Anthropic),
        1 => (Protocol::Anthropic, Protocol::OpenAi),
        2 => (Protocol::OpenAi, Protocol::OpenAi),
        _ => (Protocol::Anthropic, Protocol::Anthropic),
    };
    let opts = Options {
        upstream_model: "up",
        default_max_tokens: if sel & 4 == 0 { 4096 } else { u64::MAX },
    };
    let Ok((out, t)) = translate_request(client, upstream, body, "m", opts) else {
        return;
    };
    assert!(out.len() <= 4 * body.len() + 4096, "request grew too much");
    if let Ok(resp) = t.response(body, 1_700_000_000) {
        assert!(
            resp.len() <= 4 * body.len() + 4096,
            "response grew too much"
        );
    }
});
