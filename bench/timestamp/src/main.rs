//! The access line's RFC 3339 timestamp: the hand-written calendar lb used against humantime,
//! per cache miss (once a second) and per line (with the once-a-second cache). Prints ns/op for
//! three rounds and checks both give the same text.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn push_padded(buf: &mut String, n: u32, width: u32) {
    let mut divisor = 10u32.pow(width.saturating_sub(1));
    while divisor > 0 {
        buf.push(char::from(b'0' + ((n / divisor) % 10) as u8));
        divisor /= 10;
    }
}
fn civil_from_days(days: u64) -> (u32, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (year_of_era + era * 400 + u64::from(month <= 2)) as u32;
    (year, month, day)
}
fn hand_second(buf: &mut String, secs: u64) {
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = (secs % 86_400) as u32;
    push_padded(buf, year, 4);
    buf.push('-');
    push_padded(buf, month, 2);
    buf.push('-');
    push_padded(buf, day, 2);
    buf.push('T');
    push_padded(buf, of_day / 3600, 2);
    buf.push(':');
    push_padded(buf, of_day / 60 % 60, 2);
    buf.push(':');
    push_padded(buf, of_day % 60, 2);
}
fn crate_second(buf: &mut String, secs: u64) {
    let time = UNIX_EPOCH + Duration::from_secs(secs.min(253_402_300_799));
    let _ = write!(buf, "{}", humantime::format_rfc3339_seconds(time));
    buf.pop();
}
fn crate_micros(buf: &mut String, now: SystemTime) {
    let _ = write!(buf, "{}", humantime::format_rfc3339_micros(now));
}
/// The per-line path: cached second + micros, with either formatter on a miss.
fn cached(buf: &mut String, now: SystemTime, cache: &mut (u64, String), f: fn(&mut String, u64)) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    if cache.0 != secs {
        cache.1.clear();
        f(&mut cache.1, secs);
        cache.0 = secs;
    }
    buf.push_str(&cache.1);
    buf.push('.');
    push_padded(buf, since.subsec_micros(), 6);
    buf.push('Z');
}

fn main() {
    const N: u64 = 3_000_000;
    let base = 1_796_016_022u64;
    let mut buf = String::with_capacity(64);
    for round in 0..3 {
        let mut report = |name: &str, f: &mut dyn FnMut(u64, &mut String)| {
            let start = Instant::now();
            for i in 0..N {
                buf.clear();
                f(black_box(i), &mut buf);
                black_box(&buf);
            }
            println!(
                "round {round} {name:40} {:7.1} ns/op",
                start.elapsed().as_nanos() as f64 / N as f64
            );
        };
        report("hand-written second (cache miss)", &mut |i, b| {
            hand_second(b, base + i)
        });
        report("humantime second (cache miss)", &mut |i, b| {
            crate_second(b, base + i)
        });
        report("humantime rfc3339_micros, no cache", &mut |i, b| {
            crate_micros(
                b,
                UNIX_EPOCH + Duration::new(base, (i % 1_000_000) as u32 * 1000),
            )
        });
        let mut c1 = (u64::MAX, String::new());
        report("per line, cache + hand-written", &mut |i, b| {
            cached(
                b,
                UNIX_EPOCH + Duration::new(base + i / 50_000, (i % 1_000_000) as u32 * 1000),
                &mut c1,
                hand_second,
            )
        });
        let mut c2 = (u64::MAX, String::new());
        report("per line, cache + humantime", &mut |i, b| {
            cached(
                b,
                UNIX_EPOCH + Duration::new(base + i / 50_000, (i % 1_000_000) as u32 * 1000),
                &mut c2,
                crate_second,
            )
        });
    }
    // Same text from both.
    for s in [0u64, 951_782_400, base, 4_102_444_799] {
        let (mut a, mut b) = (String::new(), String::new());
        hand_second(&mut a, s);
        crate_second(&mut b, s);
        assert_eq!(a, b);
    }
}
