//! The host convolutions' time, call by call, summed per kind of call: the bench's table of
//! where a training step or a forward spends its convolution time
//! (`TOONSMITH_BENCH_CALLS=1 cargo bench --bench speed`). Off unless [`enable`]d; then each
//! timed call costs a clock read, a label and a lock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::conv::ConvShape;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Calls and milliseconds per label.
static TOTALS: Mutex<BTreeMap<String, (usize, f64)>> = Mutex::new(BTreeMap::new());

/// Starts timing calls.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// One kind of call: how many were made and their milliseconds in all.
#[derive(Clone, Debug, PartialEq)]
pub struct Calls {
    /// What was called, and on what shape.
    pub label: String,
    /// How many such calls.
    pub count: usize,
    /// Their time in all.
    pub ms: f64,
}

/// The calls timed since the last `take`, longest first; starts again from nothing.
pub fn take() -> Vec<Calls> {
    let totals = std::mem::take(&mut *lock());
    let mut calls: Vec<Calls> = totals
        .into_iter()
        .map(|(label, (count, ms))| Calls { label, count, ms })
        .collect();
    calls.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    calls
}

fn lock() -> std::sync::MutexGuard<'static, BTreeMap<String, (usize, f64)>> {
    TOTALS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `f`, timed under `label()` when enabled.
pub(crate) fn time<T>(label: impl FnOnce() -> String, f: impl FnOnce() -> T) -> T {
    if !ENABLED.load(Ordering::Relaxed) {
        return f();
    }
    let start = Instant::now();
    let out = f();
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let mut totals = lock();
    let entry = totals.entry(label()).or_insert((0, 0.0));
    entry.0 += 1;
    entry.1 += ms;
    out
}

/// A label for `what` on `images` images of the convolution `s` at `stride`:
/// `"forward 64->32 7x7/1 at 256x256 x2"`.
pub(crate) fn label(what: &str, s: &ConvShape, stride: usize, images: usize) -> String {
    let ConvShape {
        c_in,
        c_out,
        h,
        w,
        k,
        ..
    } = *s;
    format!("{what} {c_in}->{c_out} {k}x{k}/{stride} at {h}x{w} x{images}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_summed_per_label_and_taken_longest_first() {
        let s = ConvShape {
            c_in: 4,
            c_out: 8,
            h: 5,
            w: 6,
            k: 3,
            pad: 1,
        };
        assert_eq!(label("forward", &s, 2, 3), "forward 4->8 3x3/2 at 5x6 x3");
        // Disabled: nothing is recorded, `f` still runs.
        assert_eq!(time(|| "off".into(), || 7), 7);
        enable();
        let sleep = |ms| std::thread::sleep(std::time::Duration::from_millis(ms));
        for ms in [2, 3] {
            time(|| "short".into(), || sleep(ms));
        }
        time(|| "long".into(), || sleep(12));
        let calls = take();
        let mine: Vec<(&str, usize)> = calls
            .iter()
            .filter(|c| ["short", "long", "off"].contains(&c.label.as_str()))
            .map(|c| (c.label.as_str(), c.count))
            .collect();
        assert_eq!(mine, [("long", 1), ("short", 2)]);
        let short = calls.iter().find(|c| c.label == "short").unwrap();
        assert!(short.ms >= 5.0, "{short:?}");
    }
}
