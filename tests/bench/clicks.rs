//! Benchmark: the redirect's click path on its own — `Clicks::record` per
//! redirect and the flusher's `take_batches` per click — on a mix of
//! requests like real ones (a few browsers and a bot, referrers from a few
//! sites and none, a few hundred client addresses, 2,000 links), against
//! the least code that counts a click per link in the same run (a lock and
//! a map increment: the reference). No servers, no network: what is
//! measured is CPU only, so under `valgrind --tool=callgrind
//! --toggle-collect='*Clicks*record*'` the instructions per record are
//! repeatable to the instruction (see docs/benchmarks.md).
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-clicks`

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Parser;
use http::{HeaderMap, HeaderValue};
use tinyurl_redirect::clicks::{ClickSettings, Clicks};

#[derive(Parser)]
#[command(
    name = "bench-clicks",
    about = "the redirect's click path (record and flush) against a bare per-link counter"
)]
struct Args {
    /// Records per round.
    #[arg(long, default_value_t = 2_000_000)]
    records: usize,
    /// Interleaved rounds (reference, click path, …); the median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Distinct links visited.
    #[arg(long, default_value_t = 2_000)]
    links: usize,
    /// Records between flushes (a flush interval's worth of redirects).
    #[arg(long, default_value_t = 100_000)]
    flush_every: usize,
}

const AGENTS: [&str; 5] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
];

const REFERRERS: [Option<&str>; 6] = [
    None,
    Some("https://news.example.com/item?id=1"),
    Some("https://www.google.com/"),
    Some("https://t.co/AbCdEf123"),
    Some("https://m.facebook.com/story.php?story_fbid=12345&id=678"),
    Some("android-app://com.slack/"),
];

/// Distinct requests cycled through (headers and peer).
const REQUESTS: usize = 4_096;

struct Request {
    headers: HeaderMap,
    peer: IpAddr,
}

fn requests() -> Vec<Request> {
    (0..REQUESTS)
        .map(|index| {
            let mut headers = HeaderMap::new();
            headers.insert(
                http::header::USER_AGENT,
                HeaderValue::from_static(AGENTS[index % AGENTS.len()]),
            );
            if let Some(referrer) = REFERRERS[(index / 7) % REFERRERS.len()] {
                headers.insert(http::header::REFERER, HeaderValue::from_static(referrer));
            }
            headers.insert(http::header::HOST, HeaderValue::from_static("sho.rt"));
            let host = u8::try_from(index % 250).unwrap_or(0);
            let peer = IpAddr::V4(Ipv4Addr::new(198, 51, 100, host + 1));
            Request { headers, peer }
        })
        .collect()
}

/// Nanoseconds per record of the click path, and per click of its flushes.
fn click_path(args: &Args, codes: &[String], requests: &[Request]) -> (f64, f64) {
    let clicks = Clicks::new(ClickSettings {
        max_keys: 100_000,
        ..ClickSettings::default()
    });
    let mut recording = Duration::ZERO;
    let mut flushing = Duration::ZERO;
    let mut done = 0;
    while done < args.records {
        let slice = args.flush_every.min(args.records - done);
        let started = Instant::now();
        for offset in done..done + slice {
            let request = &requests[offset.wrapping_mul(7) % requests.len()];
            let code = &codes[offset % codes.len()];
            clicks.record(code, &request.headers, Some(request.peer), None);
        }
        recording += started.elapsed();
        let started = Instant::now();
        black_box(clicks.take_batches());
        flushing += started.elapsed();
        done += slice;
    }
    let per = |spent: Duration| spent.as_nanos() as f64 / args.records as f64;
    (per(recording), per(flushing))
}

/// Nanoseconds per record of the reference: a click counted per link under
/// a lock, nothing else read of the request.
fn reference(args: &Args, codes: &[String]) -> f64 {
    let counts: Mutex<HashMap<&str, u64>> = Mutex::new(HashMap::new());
    let started = Instant::now();
    for offset in 0..args.records {
        let code = codes[offset % codes.len()].as_str();
        if let Ok(mut counts) = counts.lock() {
            *counts.entry(code).or_default() += 1;
        }
    }
    let spent = started.elapsed();
    black_box(&counts);
    spent.as_nanos() as f64 / args.records as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let args = Args::parse();
    let codes: Vec<String> = (0..args.links.max(1))
        .map(|index| format!("bench{index:05}"))
        .collect();
    let requests = requests();
    let (mut references, mut records, mut flushes) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.rounds.max(1) {
        references.push(reference(&args, &codes));
        let (record, flush) = click_path(&args, &codes, &requests);
        records.push(record);
        flushes.push(flush);
    }
    let (reference, record, flush) = (median(references), median(records), median(flushes));
    println!(
        "| measured | ns per click (median of {} rounds) | ratio to the reference |",
        args.rounds.max(1)
    );
    println!("|---|---:|---:|");
    println!("| reference: a per-link counter under a lock | {reference:.1} | 1.00× |");
    println!(
        "| `Clicks::record` (on the request path) | {record:.1} | {:.2}× |",
        record / reference
    );
    println!(
        "| `take_batches` (the flusher, every {} records) | {flush:.1} | {:.2}× |",
        args.flush_every,
        flush / reference
    );
    println!(
        "\n{} records per round over {} links and {REQUESTS} distinct requests; one thread.",
        args.records,
        codes.len()
    );
}
