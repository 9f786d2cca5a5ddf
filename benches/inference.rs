//! Generator forward on CPU: toonsmith next to the PyTorch reference users would otherwise run
//! (`../shared/reference/tsa_pytorch.py`, or `TSA_REFERENCE=path`), in the same run, as a ratio.
//!
//!     cargo bench --bench inference                    # 256x256 and 1920x1080
//!     TOONSMITH_BENCH_SIZES=256x256,2160x3840 cargo bench --bench inference
//!
//! Each size runs in a child process (this binary re-executed) under `/usr/bin/time`, so the
//! peak resident memory of each side is measured alone. Results are printed and written to
//! `target/bench-inference.json`.

use std::process::Command;
use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use toonsmith::device::{CpuBackend, CPU};
use toonsmith::model::GeneratorConfig;

/// The allocator of the `toonsmith` program, so the numbers are the program's.
#[path = "../src/bin/toonsmith/allocator.rs"]
mod allocator;

const RUNS: usize = 5;

fn child(h: usize, w: usize) {
    allocator::keep_freed_memory();
    let g = GeneratorConfig::default().init::<CpuBackend>(&CPU);
    let x = Tensor::<CpuBackend, 4>::random([1, 3, h, w], Distribution::Uniform(-1.0, 1.0), &CPU);
    let _ = g.forward(x.clone()).into_data(); // warm-up
    let mut times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            let _ = g.forward(x.clone()).into_data();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!("{} {} {}", times[RUNS / 2], times[0], times[RUNS - 1]);
}

/// Runs `cmd` under `/usr/bin/time -f %M`, returning stdout and the peak RSS in MiB.
fn timed(cmd: &mut Command) -> (String, f64) {
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("PEAK_KB %M")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .output()
        .expect("run /usr/bin/time");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kb: f64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("PEAK_KB "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        kb / 1024.0,
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(args[i + 1].parse().unwrap(), args[i + 2].parse().unwrap());
        return;
    }
    let sizes =
        std::env::var("TOONSMITH_BENCH_SIZES").unwrap_or_else(|_| "256x256,1080x1920".into());
    let reference = std::env::var("TSA_REFERENCE").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/reference/tsa_pytorch.py"
        )
        .into()
    });
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let me = std::env::current_exe().unwrap();
    let mut results = Vec::new();
    println!(
        "{:>10} {:>14} {:>14} {:>8} {:>12} {:>12}",
        "size", "toonsmith ms", "pytorch ms", "ratio", "ts peak MiB", "pt peak MiB"
    );
    for size in sizes.split(',') {
        let (h, w) = size.split_once('x').expect("HxW");
        let (h, w): (usize, usize) = (h.parse().unwrap(), w.parse().unwrap());
        let (out, ts_mem) =
            timed(Command::new(&me).args(["--child", &h.to_string(), &w.to_string()]));
        let ts: Vec<f64> = out
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let (out, pt_mem) = timed(Command::new("python3").arg(&reference).args([
            "--quick",
            "--device",
            "cpu",
            "--threads",
            &threads.to_string(),
            "--no-train",
            "--sizes",
            size,
        ]));
        let key = format!("infer_ms_fp32_{h}x{w}");
        let pt = serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|v| v.get(&key)?.as_f64())
            .unwrap_or(f64::NAN);
        let ts_median = ts.first().copied().unwrap_or(f64::NAN);
        println!(
            "{size:>10} {ts_median:>14.1} {pt:>14.1} {:>8.2} {ts_mem:>12.0} {pt_mem:>12.0}",
            ts_median / pt
        );
        results.push(serde_json::json!({
            "size": size, "toonsmith_ms": {"median": ts.first(), "min": ts.get(1), "max": ts.get(2)},
            "pytorch_ms_median": pt, "ratio": ts_median / pt,
            "toonsmith_peak_mib": ts_mem, "pytorch_peak_mib": pt_mem, "threads": threads,
        }));
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-inference.json");
    let _ = std::fs::write(
        path,
        serde_json::to_string_pretty(&results).unwrap_or_default(),
    );
    println!("written to {path}");
}
