//! Proxy overhead benchmark (`cargo bench --bench proxy`, ~1 minute).
//!
//! Starts the mock upstream (`tests/common/mock_upstream.rs`, own runtime on its own thread) and
//! the release `relay` binary in front of it, then drives both with the same closed-loop load
//! generator (N keep-alive HTTP/1.1 connections, each sending requests back to back) and reports,
//! for N = 1, 16 and 64, requests/s and latency percentiles for the mock called directly and
//! through relay; then streaming time-to-first-`data:` at N = 1, and relay's resident memory
//! right after the N = 64 run. Every result line starts with `proxy_bench:`; each target is
//! marked PASS or FAIL (a FAIL does not fail the process: this is a measurement).
//!
//! The load generator is a minimal HTTP/1.1 client written directly on tokio's `TcpStream`
//! (pre-serialised request, `Content-Length` and chunked responses), on a single-threaded
//! runtime, so it takes as little of the shared CPUs as possible and costs the same for both
//! targets.
//!
//! Environment knobs:
//! - `PROXY_BENCH_SECS` — measured seconds per phase (default 4; warm-up is 1 s);
//! - `PROXY_BENCH_RELAY` — path of the relay binary to use (skips the build);
//! - `PROXY_BENCH_PERF=1` — run `perf record -g` on relay during the N = 64 phase, writing
//!   `target/proxy-bench.perf.data` (inspect with `perf report -i … --no-children`);
//! - `PROXY_BENCH_COUNT=R` — count mode, for instruction counts that a busy machine does not
//!   blur: instead of the timed phases, send exactly R requests through relay (over
//!   `PROXY_BENCH_CONC` connections, default 1; streaming when `PROXY_BENCH_STREAM=1`), then stop
//!   relay with SIGTERM and wait for it to exit. Point `PROXY_BENCH_RELAY` at a wrapper that runs
//!   `relay` under `valgrind --tool=callgrind` and compare the totals of two counts (e.g. R = 0 and
//!   R = 2000) to get instructions per request; `ci/callgrind-proxy.sh` does exactly that.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mock_upstream.rs"]
mod mock_upstream;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONCURRENCY: [usize; 3] = [1, 16, 64];
const WARMUP: Duration = Duration::from_secs(1);
const BODY: &str = r#"{"model":"gpt-test","messages":[{"role":"user","content":"hello"}]}"#;
const STREAM_BODY: &str =
    r#"{"model":"gpt-test","messages":[{"role":"user","content":"hello"}],"stream":true}"#;

// Targets from the issue.
const TARGET_ADDED_P50_C1_US: f64 = 80.0;
const TARGET_ADDED_P99_C1_US: f64 = 300.0;
const TARGET_THROUGHPUT_C64_PCT: f64 = 35.0;
const TARGET_TTFB_ADDED_P50_US: f64 = 200.0;
const TARGET_RSS_MIB: f64 = 64.0;

/// Every variable relay reads, cleared so the developer's shell cannot leak in.
const RELAY_VARS: &[&str] = &[
    "RELAY_CONFIG_DIR",
    "RELAY_DATA_DIR",
    "RELAY_DATABASE_URL",
    "RELAY_STATE_URL",
    "RELAY_PORT",
    "RELAY_CONTROL_PORT",
    "RELAY_BIND",
    "RELAY_MASTER_KEY",
    "RELAY_ADMIN_TOKEN",
    "RELAY_COOKIE_SECURE",
    "RELAY_LOG",
    "RELAY_LOG_FORMAT",
    "RELAY_RECIPIENT",
];

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments (there is nothing to filter).
    let secs: u64 = std::env::var("PROXY_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let measure = Duration::from_secs(secs.max(1));

    let relay_bin = relay_binary();
    let mock = mock_upstream::spawn_on_thread(1);
    let relay = RelayProc::start(&relay_bin, mock);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let direct = Target::new("direct", mock, "sk-bench");
    let via_relay = Target::new("relay", relay.addr, &relay.key);

    // Both targets must answer 200 before anything is measured.
    rt.block_on(async {
        for t in [&direct, &via_relay] {
            for body in [BODY, STREAM_BODY] {
                let mut c = Client::connect(t.addr).await.unwrap();
                let r = c.send(&t.request(body), false).await.unwrap();
                assert!(
                    r.status == 200,
                    "{} answered {} to {body}:\n{}\nrelay logs:\n{}",
                    t.name,
                    r.status,
                    String::from_utf8_lossy(&r.body),
                    relay.logs()
                );
            }
        }
    });

    if let Some(count) = std::env::var("PROXY_BENCH_COUNT")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
    {
        let conc: usize = std::env::var("PROXY_BENCH_CONC")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1)
            .max(1);
        let stream = std::env::var("PROXY_BENCH_STREAM").is_ok_and(|v| v == "1");
        let body = if stream { STREAM_BODY } else { BODY };
        let t0 = Instant::now();
        let errors = rt.block_on(count_phase(&via_relay, body, count, conc, stream));
        println!(
            "proxy_bench: count mode: {count} {} requests over {conc} connection(s) in {:.2} s, {errors} errors",
            if stream { "streaming" } else { "plain" },
            t0.elapsed().as_secs_f64()
        );
        relay.terminate();
        return;
    }

    println!(
        "proxy_bench: {} cores, load generator 1 thread, mock 1 thread, relay pid {}; {} s measured per phase after {} s warm-up",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        relay.pid(),
        measure.as_secs(),
        WARMUP.as_secs()
    );
    println!(
        "proxy_bench: {:<8} {:>4} {:>9} {:>8} {:>8} {:>8} {:>8} {:>6}",
        "target", "conc", "req/s", "p50_us", "p90_us", "p99_us", "max_us", "errors"
    );

    let mut verdicts: Vec<(String, bool)> = Vec::new();
    let mut rss_line = String::new();
    let mut peak_kib_c64: Option<u64> = None;
    for &n in &CONCURRENCY {
        let d = rt.block_on(run_phase(&direct, BODY, n, measure, false));
        print_row(&direct, n, &d);
        let perf = (n == 64 && std::env::var_os("PROXY_BENCH_PERF").is_some())
            .then(|| start_perf(relay.pid(), WARMUP + measure));
        let r = rt.block_on(run_phase(&via_relay, BODY, n, measure, false));
        print_row(&via_relay, n, &r);
        if n == 64 {
            rss_line = rss(relay.pid());
            peak_kib_c64 = rss_value_kib(relay.pid(), "VmHWM:");
        }
        if let Some(mut p) = perf {
            let _ = p.wait();
            println!("proxy_bench: perf data written to target/proxy-bench.perf.data");
        }
        let (dp50, dp99) = (d.pct(0.50), d.pct(0.99));
        let (rp50, rp99) = (r.pct(0.50), r.pct(0.99));
        let thr = 100.0 * r.rps() / d.rps();
        println!(
            "proxy_bench: c={n:<3} added p50 {:>7.1} us, added p99 {:>7.1} us, relay/direct throughput {:>5.1}%",
            rp50 - dp50,
            rp99 - dp99,
            thr
        );
        if n == 1 {
            verdicts.push((
                format!(
                    "c=1 added p50 {:.1} us <= {TARGET_ADDED_P50_C1_US} us",
                    rp50 - dp50
                ),
                rp50 - dp50 <= TARGET_ADDED_P50_C1_US,
            ));
            verdicts.push((
                format!(
                    "c=1 added p99 {:.1} us <= {TARGET_ADDED_P99_C1_US} us",
                    rp99 - dp99
                ),
                rp99 - dp99 <= TARGET_ADDED_P99_C1_US,
            ));
        }
        if n == 64 {
            verdicts.push((
                format!("c=64 throughput {thr:.1}% of direct >= {TARGET_THROUGHPUT_C64_PCT}%"),
                thr >= TARGET_THROUGHPUT_C64_PCT,
            ));
        }
        if d.errors + r.errors > 0 {
            verdicts.push((
                format!("c={n} no errors (direct {}, relay {})", d.errors, r.errors),
                false,
            ));
        }
    }

    // Streaming: time to the first body chunk carrying `data:`, concurrency 1.
    let sd = rt.block_on(run_phase(&direct, STREAM_BODY, 1, measure, true));
    let sr = rt.block_on(run_phase(&via_relay, STREAM_BODY, 1, measure, true));
    println!(
        "proxy_bench: {:<8} {:>4} {:>9} {:>8} {:>8} {:>8} {:>8} {:>6}",
        "stream", "conc", "req/s", "ttfb_p50", "ttfb_p90", "ttfb_p99", "ttfb_max", "errors"
    );
    for (t, s) in [(&direct, &sd), (&via_relay, &sr)] {
        println!(
            "proxy_bench: {:<8} {:>4} {:>9.0} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>6}",
            t.name,
            1,
            s.rps(),
            s.ttfb_pct(0.50),
            s.ttfb_pct(0.90),
            s.ttfb_pct(0.99),
            s.ttfb_pct(1.0),
            s.errors
        );
    }
    let added_ttfb50 = sr.ttfb_pct(0.50) - sd.ttfb_pct(0.50);
    let added_ttfb99 = sr.ttfb_pct(0.99) - sd.ttfb_pct(0.99);
    println!(
        "proxy_bench: stream c=1 added ttfb p50 {added_ttfb50:.1} us, added ttfb p99 {added_ttfb99:.1} us"
    );
    verdicts.push((
        format!("stream c=1 added ttfb p50 {added_ttfb50:.1} us <= {TARGET_TTFB_ADDED_P50_US} us"),
        added_ttfb50 <= TARGET_TTFB_ADDED_P50_US,
    ));
    if sd.errors + sr.errors > 0 {
        verdicts.push((
            format!(
                "stream no errors (direct {}, relay {})",
                sd.errors, sr.errors
            ),
            false,
        ));
    }

    // Memory, sampled right after the c=64 relay phase.
    println!("proxy_bench: relay memory after c=64: {rss_line}");
    println!("proxy_bench: relay memory at the end: {}", rss(relay.pid()));
    // VmHWM sampled right after the c=64 phase: the peak up to and including that load.
    let rss_mib = peak_kib_c64.map_or(f64::NAN, |k| k as f64 / 1024.0);
    verdicts.push((
        format!("relay peak RSS through c=64 (VmHWM) {rss_mib:.1} MiB <= {TARGET_RSS_MIB} MiB"),
        rss_mib <= TARGET_RSS_MIB,
    ));

    let failed = verdicts.iter().filter(|(_, ok)| !ok).count();
    for (what, ok) in &verdicts {
        println!("proxy_bench: {} {what}", if *ok { "PASS" } else { "FAIL" });
    }
    println!(
        "proxy_bench: {} of {} targets met{}",
        verdicts.len() - failed,
        verdicts.len(),
        if failed > 0 {
            " — SOME TARGETS FAILED"
        } else {
            ""
        }
    );
    drop(relay);
}

fn print_row(t: &Target, n: usize, s: &Stats) {
    println!(
        "proxy_bench: {:<8} {:>4} {:>9.0} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>6}",
        t.name,
        n,
        s.rps(),
        s.pct(0.50),
        s.pct(0.90),
        s.pct(0.99),
        s.pct(1.0),
        s.errors
    );
}

// ---------------------------------------------------------------------------------------------
// Load generator
// ---------------------------------------------------------------------------------------------

struct Target {
    name: &'static str,
    addr: SocketAddr,
    bearer: String,
}

impl Target {
    fn new(name: &'static str, addr: SocketAddr, bearer: &str) -> Target {
        Target {
            name,
            addr,
            bearer: bearer.to_owned(),
        }
    }

    fn request(&self, body: &str) -> Vec<u8> {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            self.addr,
            self.bearer,
            body.len()
        )
        .into_bytes()
    }
}

#[derive(Default)]
struct Stats {
    /// Whole-response latencies of requests inside the measured window, nanoseconds, sorted.
    lat: Vec<u64>,
    /// Time to the first `data:` (streaming only), nanoseconds, sorted.
    ttfb: Vec<u64>,
    errors: u64,
    window: Duration,
}

impl Stats {
    fn rps(&self) -> f64 {
        self.lat.len() as f64 / self.window.as_secs_f64()
    }

    fn pct(&self, q: f64) -> f64 {
        percentile(&self.lat, q)
    }

    fn ttfb_pct(&self, q: f64) -> f64 {
        percentile(&self.ttfb, q)
    }
}

/// Nearest-rank percentile of sorted nanoseconds, in microseconds.
fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

/// `n` closed-loop workers for warm-up + `measure`; only requests started and finished inside
/// the measured window count.
async fn run_phase(t: &Target, body: &str, n: usize, measure: Duration, stream: bool) -> Stats {
    let req = Arc::new(t.request(body));
    let start = Instant::now() + WARMUP;
    let end = start + measure;
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        tasks.push(tokio::spawn(worker(
            t.addr,
            req.clone(),
            start,
            end,
            stream,
        )));
    }
    let mut all = Stats {
        window: measure,
        ..Stats::default()
    };
    for task in tasks {
        let s = task.await.unwrap();
        all.lat.extend(s.lat);
        all.ttfb.extend(s.ttfb);
        all.errors += s.errors;
    }
    all.lat.sort_unstable();
    all.ttfb.sort_unstable();
    all
}

/// Exactly `count` requests over `conc` connections; the number of errors.
async fn count_phase(t: &Target, body: &str, count: usize, conc: usize, stream: bool) -> u64 {
    let req = Arc::new(t.request(body));
    let mut tasks = Vec::with_capacity(conc);
    for i in 0..conc {
        let n = count / conc + usize::from(i < count % conc);
        let (addr, req) = (t.addr, req.clone());
        tasks.push(tokio::spawn(async move {
            let mut errors = 0;
            let mut conn: Option<Client> = None;
            for _ in 0..n {
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => conn.insert(Client::connect(addr).await.unwrap()),
                };
                match c.send(&req, stream).await {
                    Ok(r) if r.status == 200 && !r.close => {}
                    Ok(r) => {
                        errors += u64::from(r.status != 200);
                        conn = None;
                    }
                    Err(_) => {
                        errors += 1;
                        conn = None;
                    }
                }
            }
            errors
        }));
    }
    let mut errors = 0;
    for task in tasks {
        errors += task.await.unwrap();
    }
    errors
}

async fn worker(
    addr: SocketAddr,
    req: Arc<Vec<u8>>,
    start: Instant,
    end: Instant,
    stream: bool,
) -> Stats {
    let mut s = Stats {
        lat: Vec::with_capacity(1 << 16),
        ..Stats::default()
    };
    let mut conn: Option<Client> = None;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Client::connect(addr).await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    s.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        match c.send(&req, stream).await {
            Ok(r) => {
                let t1 = Instant::now();
                if r.status != 200 {
                    s.errors += 1;
                }
                if t0 >= start && t1 <= end {
                    s.lat.push((t1 - t0).as_nanos() as u64);
                    if let Some(f) = r.first_data {
                        s.ttfb.push((f - t0).as_nanos() as u64);
                    }
                }
                if r.close {
                    conn = None;
                }
            }
            Err(_) => {
                s.errors += 1;
                conn = None;
            }
        }
    }
    s
}

/// A minimal HTTP/1.1 client connection: one request at a time, keep-alive.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

struct Response {
    status: u16,
    body: Vec<u8>,
    /// When the first body bytes containing `data:` arrived (only when asked for).
    first_data: Option<Instant>,
    close: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_owned())
}

impl Client {
    async fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Reads more bytes into `buf`; EOF is an error unless `eof_ok`.
    async fn fill(&mut self, eof_ok: bool) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 && !eof_ok {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(n)
    }

    async fn send(&mut self, req: &[u8], want_first_data: bool) -> std::io::Result<Response> {
        self.buf.clear();
        self.stream.write_all(req).await?;

        // Head.
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill(false).await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| bad("head not utf-8"))?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let mut content_length: Option<usize> = None;
        let mut chunked = false;
        let mut close = false;
        for line in head.split("\r\n").skip(1) {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                content_length = v.parse().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.to_ascii_lowercase().contains("chunked");
            } else if k.eq_ignore_ascii_case("connection") {
                close = v.eq_ignore_ascii_case("close");
            }
        }

        let mut first_data = None;
        let check_data = |buf: &[u8], first_data: &mut Option<Instant>| {
            if want_first_data && first_data.is_none() && find(&buf[head_end..], b"data:").is_some()
            {
                *first_data = Some(Instant::now());
            }
        };
        check_data(&self.buf, &mut first_data);

        let body = if chunked {
            // Walk chunk by chunk; `pos` is the start of the next chunk-size line.
            let mut body = Vec::new();
            let mut pos = head_end;
            loop {
                let Some(eol) = find(&self.buf[pos..], b"\r\n") else {
                    self.fill(false).await?;
                    check_data(&self.buf, &mut first_data);
                    continue;
                };
                let size_str = std::str::from_utf8(&self.buf[pos..pos + eol])
                    .map_err(|_| bad("chunk size"))?;
                let size_str = size_str.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_str, 16).map_err(|_| bad("chunk size"))?;
                let data_start = pos + eol + 2;
                // Chunk data plus its CRLF (for the last chunk: the final CRLF, no trailers).
                while self.buf.len() < data_start + size + 2 {
                    self.fill(false).await?;
                    check_data(&self.buf, &mut first_data);
                }
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&self.buf[data_start..data_start + size]);
                pos = data_start + size + 2;
            }
            body
        } else if let Some(len) = content_length {
            while self.buf.len() < head_end + len {
                self.fill(false).await?;
                check_data(&self.buf, &mut first_data);
            }
            self.buf[head_end..head_end + len].to_vec()
        } else {
            // Delimited by EOF.
            close = true;
            while self.fill(true).await? > 0 {
                check_data(&self.buf, &mut first_data);
            }
            self.buf[head_end..].to_vec()
        };
        Ok(Response {
            status,
            body,
            first_data,
            close,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// relay process
// ---------------------------------------------------------------------------------------------

/// The optimised `relay` binary: `PROXY_BENCH_RELAY`, else `cargo build --profile profiling
/// --bin relay` (release code with debug info; a no-op when up to date) and
/// `target/profiling/relay`.
fn relay_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PROXY_BENCH_RELAY") {
        return PathBuf::from(p);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("proxy bench: cargo build --profile profiling --bin relay");
    let status = Command::new(cargo)
        .args(["build", "--profile", "profiling", "--bin", "relay"])
        .current_dir(manifest)
        .status()
        .expect("run cargo build --profile profiling --bin relay");
    assert!(
        status.success(),
        "cargo build --profile profiling --bin relay failed"
    );
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("target"));
    let bin = target_dir.join("profiling").join("relay");
    assert!(bin.exists(), "{} not found", bin.display());
    bin
}

fn bench_config(base_url: &str) -> String {
    format!(
        r#"kind: Host
name: openai
base_url: {base_url}
timeout: 5s
keys:
  - name: primary
    env: RELAY_TEST_OPENAI_KEY
---
kind: Model
name: gpt-test
pricing: {{ input_per_mtok: 1.0, output_per_mtok: 2.0, cache_read_per_mtok: 0.5 }}
---
kind: Binding
name: gpt-test-openai
model: gpt-test
host: openai
adapter: openai
upstream: gpt-upstream-v1
---
kind: Policy
name: default
models: ["*"]
"#
    )
}

struct RelayProc {
    child: Child,
    addr: SocketAddr,
    key: String,
    logs: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

fn relay_cmd(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for v in RELAY_VARS {
        cmd.env_remove(v);
    }
    cmd
}

impl RelayProc {
    fn start(bin: &Path, mock: SocketAddr) -> RelayProc {
        let dir = tempfile::tempdir().unwrap();
        let config_dir = dir.path().join("config");
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&config_dir).unwrap();
        std::fs::create_dir_all(&data_dir).unwrap();
        std::fs::write(
            config_dir.join("bench.yaml"),
            bench_config(&format!("http://{mock}/v1")),
        )
        .unwrap();

        let out = relay_cmd(bin)
            .args([
                "keys",
                "create",
                "--policy",
                "default",
                "--json",
                "--config-dir",
            ])
            .arg(&config_dir)
            .env("RELAY_DATA_DIR", &data_dir)
            .stdin(Stdio::null())
            .output()
            .expect("run relay keys create");
        assert!(
            out.status.success(),
            "relay keys create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let key = v["key"]
            .as_str()
            .expect("key in keys create output")
            .to_owned();

        let mut child = relay_cmd(bin)
            .arg("serve")
            .env("RELAY_CONFIG_DIR", &config_dir)
            .env("RELAY_DATA_DIR", &data_dir)
            .env("RELAY_BIND", "127.0.0.1")
            .env("RELAY_PORT", "0")
            .env("RELAY_CONTROL_PORT", "off")
            .env("RELAY_LOG", "warn,relay::serve=info")
            .env("RELAY_TEST_OPENAI_KEY", "sk-upstream-openai")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn relay serve");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });

        let marker = "data plane listening on http://";
        let deadline = Instant::now() + Duration::from_secs(120);
        let addr = loop {
            let found = logs.lock().unwrap().iter().find_map(|l| {
                let rest = &l[l.find(marker)? + marker.len()..];
                let a = rest
                    .split_whitespace()
                    .next()?
                    .trim_end_matches(|c: char| !c.is_ascii_digit());
                a.parse::<SocketAddr>().ok()
            });
            if let Some(a) = found {
                break a;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "relay exited early with {status}:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "relay did not start:\n{}",
                logs.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        RelayProc {
            child,
            addr,
            key,
            logs,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// SIGTERM, then waits (up to a minute) for relay to exit on its own, so that a wrapper
    /// such as valgrind can write its report.
    fn terminate(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_value_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

fn rss(pid: u32) -> String {
    let mib = |f| rss_value_kib(pid, f).map_or(f64::NAN, |k| k as f64 / 1024.0);
    format!(
        "VmRSS {:.1} MiB, VmHWM (peak) {:.1} MiB",
        mib("VmRSS:"),
        mib("VmHWM:")
    )
}

/// `perf record -g` on relay for `dur` (only with `PROXY_BENCH_PERF`).
fn start_perf(pid: u32, dur: Duration) -> Child {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/proxy-bench.perf.data");
    Command::new("perf")
        .args(["record", "-g", "-q", "-o"])
        .arg(out)
        .args(["-p", &pid.to_string(), "--", "sleep"])
        .arg(format!("{}", dur.as_secs_f64()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn perf record")
}
