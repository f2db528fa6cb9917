//! The Rust figure of the Python benchmark (bench/gateway.py): the same
//! gateway path (token text → verified → authorized) on the same token,
//! timed in Rust, so the Python figure minus this one is the binding's
//! overhead.
//!
//! stdin: the root public key on line 1, the token text on line 2.
//! stdout: one JSON object, `{"cold_ns": ..., "cached_ns": ...}`, each the
//! median per-call time over `BATCHES` batches of `CALLS` calls.

use std::io::Read;
use std::time::Instant;

use baton::{ArgValue, Keyset, PublicKey, Request, Verifier};

const BATCHES: usize = 31;
const CALLS: u32 = 200;
const AT: u64 = 1_800_000_600;

fn request() -> Request {
    Request::new("refund.issue", AT)
        .and_then(|r| r.resource("customer:4821"))
        .and_then(|r| r.arg("amount", ArgValue::Int(500)))
        .expect("a valid request")
}

fn median_ns(verifier: &Verifier, text: &str) -> f64 {
    let mut per_call: Vec<f64> = (0..BATCHES)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..CALLS {
                // The request is built inside the loop, as the Python
                // caller builds it on every call.
                let (_, auth) = verifier
                    .authorize_text(std::hint::black_box(text), &request())
                    .expect("the benchmark token is allowed");
                std::hint::black_box(auth);
            }
            start.elapsed().as_nanos() as f64 / f64::from(CALLS)
        })
        .collect();
    per_call.sort_by(f64::total_cmp);
    per_call[BATCHES / 2]
}

fn main() {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .expect("read stdin");
    let mut lines = input.lines();
    let key = PublicKey::from_text(lines.next().expect("line 1: the public key")).expect("a key");
    let text = lines.next().expect("line 2: the token").to_owned();
    let cold = Verifier::new(Keyset::new().with(key));
    let cached = Verifier::new(Keyset::new().with(key)).with_cache(1024);
    // Warm up both (and fill the cache).
    median_ns(&cold, &text);
    median_ns(&cached, &text);
    let cold_ns = median_ns(&cold, &text);
    let cached_ns = median_ns(&cached, &text);
    println!("{{\"cold_ns\": {cold_ns:.1}, \"cached_ns\": {cached_ns:.1}}}");
}
