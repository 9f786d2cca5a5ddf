//! How many pixels a photo may have to run through G whole rather than in tiles, from the
//! memory the system has free.
//!
//! Tiled inference ([`super::tiled`]) gives the same cartoon in bounded memory but runs each
//! convolution up to twice: a 3840x2160 photo took 84.7 s tiled and 25.5 s whole on 2 cores
//! (`docs/performance.md`, "Tiled inference"). So where the whole forward fits, it is the better choice; the
//! measured peak of the whole forward on the CPU backend decides whether it fits.

use crate::device;

/// The threshold below which photos always run whole: 1920x1080 (2.07 MP) and smaller, as
/// [`super::Cartoonizer::new`] sets it.
pub const MIN_TILE_ABOVE: usize = 2_100_000;

/// Peak bytes per input pixel of G's whole forward on the CPU backend, rounded up from measured
/// peak resident sizes: one photo through `toonsmith cartoonize` (`/usr/bin/time`), 1920x1080
/// 2.69 GiB, 3840x2160 9.78 GiB (1270 B per pixel); six 3840x2160 forwards in one process
/// (`cargo bench --bench speed`, as a folder of such photos runs) 11.72 GiB (1485 B per pixel:
/// freed memory is kept for reuse, not all of it reusable).
pub const WHOLE_BYTES_PER_PIXEL: u64 = 1500;

/// Fixed part of that peak: the model, the program, the decoded photo's buffers.
pub const WHOLE_BASE_BYTES: u64 = 256 << 20;

/// Share of the available memory a whole forward may take; the rest is left to the rest of
/// the system and to the estimate's error.
pub const SHARE_OF_AVAILABLE: f64 = 0.75;

/// The estimated peak bytes of a whole forward over `pixels` (padded) input pixels.
pub fn whole_forward_bytes(pixels: usize) -> u64 {
    WHOLE_BASE_BYTES + WHOLE_BYTES_PER_PIXEL * pixels as u64
}

/// The largest pixel count whose whole forward fits in [`SHARE_OF_AVAILABLE`] of `available`
/// bytes, and never less than [`MIN_TILE_ABOVE`].
pub fn tile_above_for(available: u64) -> usize {
    let budget = (available as f64 * SHARE_OF_AVAILABLE) as u64;
    let pixels = budget.saturating_sub(WHOLE_BASE_BYTES) / WHOLE_BYTES_PER_PIXEL;
    (pixels as usize).max(MIN_TILE_ABOVE)
}

/// The threshold `toonsmith cartoonize` uses unless told: on the CPU backend what fits in the
/// available memory ([`tile_above_for`]), elsewhere (GPU memory is not read) [`MIN_TILE_ABOVE`].
pub fn auto_tile_above() -> usize {
    match available_bytes() {
        Some(bytes) if device::is_cpu_backend::<device::Selected>() => tile_above_for(bytes),
        _ => MIN_TILE_ABOVE,
    }
}

/// The memory the system can give without swapping (`MemAvailable` of `/proc/meminfo`), or
/// `None` where that is not known (not Linux, an old kernel).
pub fn available_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_available(&text))
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))?;
    let mut words = line.split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => Some(value * 1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn mem_available_is_read_in_bytes() {
        let text = "MemTotal:       24608148 kB\nMemFree:         1000000 kB\n\
                    MemAvailable:   20000000 kB\nBuffers:          123 kB\n";
        assert_eq!(mem_available(text), Some(20_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 5 kB\n"), None);
        assert_eq!(mem_available("MemAvailable: lots kB\n"), None);
        assert_eq!(mem_available("MemAvailable: 5 pages\n"), None);
    }

    #[test]
    fn whole_photos_up_to_what_fits() {
        let uhd = 3840 * 2160;
        // 20 GiB free: a 3840x2160 photo (about 11.8 GiB estimated) runs whole, 7680x4320 not.
        let roomy = tile_above_for(20 * GIB);
        assert!(roomy >= uhd && roomy < 4 * uhd, "{roomy}");
        // 8 GiB free: 3840x2160 runs in tiles.
        assert!(tile_above_for(8 * GIB) < uhd);
        // Little or nothing free: never below the fixed default.
        assert_eq!(tile_above_for(GIB), MIN_TILE_ABOVE);
        assert_eq!(tile_above_for(0), MIN_TILE_ABOVE);
        // What fits stays inside the share.
        let chosen = tile_above_for(20 * GIB);
        assert!(whole_forward_bytes(chosen) as f64 <= 20.0 * GIB as f64 * SHARE_OF_AVAILABLE);
        assert!(whole_forward_bytes(chosen + 1000) as f64 > 20.0 * GIB as f64 * SHARE_OF_AVAILABLE);
    }

    #[test]
    fn the_estimate_covers_the_measured_peaks() {
        // Measured peaks (`WHOLE_BYTES_PER_PIXEL`): the estimate must not be below them.
        assert!(whole_forward_bytes(1920 * 1080) as f64 >= 2.69 * GIB as f64);
        assert!(whole_forward_bytes(3840 * 2160) as f64 >= 11.72 * GIB as f64);
    }
}
