//! Both SSE parsers: the splitter and event parser, then each protocol's
//! passthrough watcher and stream decoder, on the same events. The first
//! byte picks where the input is cut into chunks, so boundaries vary too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::adapters::sse::{self, Splitter};
use relay::adapters::{anthropic, anthropic_wire, openai, openai_wire};

fuzz_target!(|data: &[u8]| {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut s = Splitter::default();
    let mut oa = openai::StreamWatch {
        client_wants_usage: step % 2 == 0,
        usage: None,
    };
    let mut an = anthropic::StreamWatch::default();
    let mut oa_dec = openai_wire::Decoder::default();
    let mut an_dec = anthropic_wire::Decoder::default();
    let mut events = Vec::new();
    let mut total = 0;
    for chunk in data.chunks(step) {
        s.push(chunk);
        while let Some(e) = s.next_event() {
            total += e.len();
            let (_, payload) = sse::parse(&e);
            assert!(payload.len() <= e.len());
            let _ = oa.observe(&e);
            let _ = an.observe(&e);
            oa_dec.decode(&e, &mut events);
            an_dec.decode(&e, &mut events);
            assert!(
                events.len() <= 64 * (e.len() + 1),
                "one event decoded into too many"
            );
            events.clear();
        }
    }
    assert!(total <= data.len());
    let _ = s.has_partial();
    for u in [oa.usage, an.usage, oa_dec.usage, an_dec.usage]
        .into_iter()
        .flatten()
    {
        let _ = u.total();
    }
    let _ = openai::response_usage(data);
    let _ = anthropic::response_usage(data);
});
