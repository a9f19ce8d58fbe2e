//! Server-sent events: split a byte stream into complete events without
//! copying more than the unfinished tail.

use bytes::{Buf, Bytes, BytesMut};

/// Largest single event accepted; an upstream that never ends its event
/// cannot make relay buffer without bound.
pub const MAX_EVENT_BYTES: usize = 16 << 20;

#[derive(Default)]
pub struct Splitter {
    buf: BytesMut,
    /// Bytes of `buf` already searched for an event end (minus the 3 bytes
    /// a terminator can straddle), so a large event arriving in small
    /// chunks is scanned once, not once per chunk.
    scanned: usize,
}

impl Splitter {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Whether the unfinished event outgrew [`MAX_EVENT_BYTES`].
    pub fn overflowed(&self) -> bool {
        self.buf.len() > MAX_EVENT_BYTES
    }

    /// The next complete event (including its terminating blank line).
    pub fn next_event(&mut self) -> Option<Bytes> {
        let from = self.scanned.saturating_sub(3);
        match find_event_end(&self.buf[from..]) {
            Some(end) => {
                self.scanned = 0;
                Some(self.buf.split_to(from + end).freeze())
            }
            None => {
                self.scanned = self.buf.len();
                None
            }
        }
    }

    /// Bytes of an event that never finished.
    pub fn has_partial(&self) -> bool {
        self.buf.iter().any(|b| !b.is_ascii_whitespace())
    }

    pub fn clear(&mut self) {
        self.buf.advance(self.buf.len());
        self.scanned = 0;
    }
}

/// Index just past the first blank line (`\n\n` or `\r\n\r\n`).
fn find_event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = memchr_nl(&buf[i..]) {
        let at = i + p;
        let rest = &buf[at + 1..];
        if rest.first() == Some(&b'\n') {
            return Some(at + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(at + 3);
        }
        i = at + 1;
    }
    None
}

fn memchr_nl(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// The `event:` name and the `data:` payload of one event. Multi-line data is
/// joined with `\n` (allocating only then).
pub fn parse(event: &[u8]) -> (Option<&str>, std::borrow::Cow<'_, [u8]>) {
    let mut name = None;
    let mut data: Option<std::borrow::Cow<'_, [u8]>> = None;
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(v) = line.strip_prefix(b"event:") {
            name = std::str::from_utf8(trim_space(v)).ok();
        } else if let Some(v) = line.strip_prefix(b"data:") {
            let v = trim_space(v);
            data = Some(match data {
                None => std::borrow::Cow::Borrowed(v),
                Some(prev) => {
                    let mut joined = prev.into_owned();
                    joined.push(b'\n');
                    joined.extend_from_slice(v);
                    std::borrow::Cow::Owned(joined)
                }
            });
        }
    }
    (name, data.unwrap_or(std::borrow::Cow::Borrowed(&[])))
}

fn trim_space(v: &[u8]) -> &[u8] {
    v.strip_prefix(b" ").unwrap_or(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_chunk_boundaries() {
        let mut s = Splitter::default();
        s.push(b"event: a\ndata: {\"x\"");
        assert!(s.next_event().is_none());
        s.push(b":1}\n\ndata: [DONE]\r\n\r\nda");
        let e = s.next_event().unwrap();
        assert_eq!(
            parse(&e),
            (Some("a"), std::borrow::Cow::Borrowed(&b"{\"x\":1}"[..]))
        );
        let e = s.next_event().unwrap();
        assert_eq!(parse(&e).1.as_ref(), b"[DONE]");
        assert!(s.next_event().is_none());
        assert!(s.has_partial());
    }

    #[test]
    fn terminators_split_across_chunks_are_found() {
        let mut s = Splitter::default();
        for piece in [&b"data: a\r"[..], b"\n", b"\r", b"\ndata: b\n", b"\n"] {
            s.push(piece);
        }
        assert_eq!(parse(&s.next_event().unwrap()).1.as_ref(), b"a");
        assert_eq!(parse(&s.next_event().unwrap()).1.as_ref(), b"b");
        assert!(s.next_event().is_none());
        let mut big = Splitter::default();
        big.push(&vec![b'x'; MAX_EVENT_BYTES + 1]);
        assert!(big.next_event().is_none() && big.overflowed());
    }

    #[test]
    fn comments_and_multiline_data() {
        let (n, d) = parse(b": keep-alive\ndata: a\ndata: b\n\n");
        assert_eq!(n, None);
        assert_eq!(d.as_ref(), b"a\nb");
    }
}
