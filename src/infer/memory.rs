//! How many pixels a photo may have to run through G whole rather than in tiles, and how large
//! its tiles and their cache may be, from the memory the system has free.
//!
//! Tiled inference ([`super::tiled`]) gives the same cartoon in bounded memory but runs each
//! convolution up to twice and repeats the halos: a 3840x2160 photo took 10.3 s whole on 2
//! cores, 22.5 s in tiles within 4.5 GiB and 41 s within 1.3 GiB (`docs/performance.md`,
//! "Tiled inference"). So where the whole forward fits, it is the better choice; the
//! measured peak of the whole forward on the CPU backend decides whether it fits. On a GPU,
//! where every tensor is one buffer, the device's largest buffer bounds both the photos that
//! run whole and the tiles.

use crate::device;

/// The threshold below which photos always run whole: 1920x1080 (2.07 MP) and smaller, as
/// [`super::Cartoonizer::new`] sets it.
pub const MIN_TILE_ABOVE: usize = 2_100_000;

/// Peak bytes per input pixel of G's whole forward on the CPU backend, from measured peak
/// resident sizes with a fifth added: one photo through `toonsmith cartoonize`
/// (`/usr/bin/time`), 1920x1080 1.38 GiB, 3840x2160 7.82 GiB (980 B per pixel over the base);
/// six 3840x2160 forwards in one process (the bench's child, as a folder of such photos runs)
/// 7.79 GiB. (Before the host kernels read shared tensors in place, session 26: 9.78 and
/// 11.72 GiB, and this was 1500.)
pub const WHOLE_BYTES_PER_PIXEL: u64 = 1200;

/// Fixed part of that peak: the model, the program, the decoded photo's buffers.
pub const WHOLE_BASE_BYTES: u64 = 256 << 20;

/// Bytes of one f32 value.
const F32_BYTES: u64 = 4;

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
/// available memory ([`tile_above_for`]); on a GPU [`MIN_TILE_ABOVE`] (its memory is not read),
/// or less where the device's largest buffer cannot hold G's widest full-resolution tensor of
/// `channels` channels for a larger photo ([`whole_pixels_for_buffer`]).
pub fn auto_tile_above(channels: usize) -> usize {
    if device::is_cpu_backend::<device::Selected>() {
        return available_bytes().map_or(MIN_TILE_ABOVE, tile_above_for);
    }
    match largest_buffer() {
        Some(largest) => whole_pixels_for_buffer(largest, channels).min(MIN_TILE_ABOVE),
        None => MIN_TILE_ABOVE,
    }
}

/// Tile core side (pixels) and cache (bytes) where neither the caller nor a memory budget
/// chooses them.
pub const DEFAULT_TILE_CORE: usize = 512;
/// See [`DEFAULT_TILE_CORE`].
pub const DEFAULT_TILE_CACHE: usize = 1 << 30;

/// Tile cores [`tiling_within`] chooses from, largest first. A larger core repeats less halo
/// (a 1024 core with its 56-pixel halos computes 1.23 times its pixels, a 512 core 1.49) and
/// needs fewer bytes of kept states per photo pixel; 2048 was slower at 3840x2160 (25.9 s at a
/// 2 GiB cache against 23.7 s for 1024 at 2.1 GiB: its tiles' own working memory crowds out
/// the cache).
const TILE_CORES: [usize; 2] = [1024, DEFAULT_TILE_CORE];

/// Bytes per tile pixel (halos included) of tiled inference beyond its cache, rounded up from
/// measured peaks: a 3840x2160 photo with `--tile-cache 0` peaked at 0.62 GiB with 512 cores and
/// 1.25 GiB with 1024 cores, about 700 bytes per tile pixel over the model and the photo.
pub const TILE_BYTES_PER_PIXEL: u64 = 1000;

/// Bytes per photo pixel that tiled inference holds whatever the tiles: the decoded photo, its
/// f32 tensor and the output image.
pub const PHOTO_BYTES_PER_PIXEL: u64 = 24;

/// Share of what the tiles leave of a budget that [`tiling_within`] gives the cache: a
/// 7680x4320 photo given all of it (16.1 GB of a 17.2 GiB budget) peaked at 18.9 GiB, the
/// allocator holding freed buffers of the tiles' many sizes beside the kept ones.
pub const CACHE_SHARE: f64 = 0.8;

/// Estimated peak bytes of one tile's passes with cores of `core` and halos of `halo` pixels,
/// the model and program included, without the photo and the cache.
pub fn tile_working_bytes(core: usize, halo: usize) -> u64 {
    let side = (core + 2 * halo) as u64;
    WHOLE_BASE_BYTES + TILE_BYTES_PER_PIXEL * side * side
}

/// The tile core and cache for a photo of `pixels` run in tiles with halos of `halo` within
/// `budget` bytes; a `core` or `cache` the caller gave is kept. Cache is what tiled inference
/// speeds up with (`super::tiled`: kept states and LN inputs spare recomputation), so the core
/// is the largest of `TILE_CORES` whose working memory leaves at least as much again for the
/// cache, and the cache is [`CACHE_SHARE`] of the rest of the budget. 3840x2160 on 2 cores
/// (`docs/performance.md`, "Tiled inference"): 512 / 1 GiB (the fixed defaults) 41 s at 1.3
/// GiB peak; 1024 / 2.29 GiB 22.5 s at 3.2 GiB; 1024 / 8 GiB 17.6 s at 7.2 GiB (whole: 10.3 s
/// at 7.8 GiB).
pub fn tiling_within(
    budget: u64,
    pixels: usize,
    halo: usize,
    core: Option<usize>,
    cache: Option<usize>,
) -> (usize, usize) {
    let room = budget.saturating_sub(PHOTO_BYTES_PER_PIXEL * pixels as u64);
    let core = core.unwrap_or_else(|| {
        TILE_CORES
            .into_iter()
            .find(|&c| 2 * tile_working_bytes(c, halo) <= room)
            .unwrap_or(DEFAULT_TILE_CORE)
    });
    let cache = cache.unwrap_or_else(|| {
        let rest = room.saturating_sub(tile_working_bytes(core, halo));
        (rest as f64 * CACHE_SHARE) as usize
    });
    (core, cache)
}

/// The memory tiled inference may take unless told: on the CPU backend
/// [`SHARE_OF_AVAILABLE`] of the available memory (the share a whole forward may take); on a
/// GPU, or where the available memory is not known, none (the fixed defaults apply).
pub fn auto_tile_budget() -> Option<u64> {
    if !device::is_cpu_backend::<device::Selected>() {
        return None;
    }
    available_bytes().map(|available| (available as f64 * SHARE_OF_AVAILABLE) as u64)
}

/// The selected backend's largest buffer on its default device ([`device::largest_buffer`]).
fn largest_buffer() -> Option<u64> {
    device::largest_buffer(&device::default_device())
}

/// The most (padded) pixels a photo may have for G's whole forward on a device whose largest
/// buffer is `largest_buffer` bytes: each tensor is one buffer, and the widest one at full
/// resolution has `channels` f32 channels.
pub fn whole_pixels_for_buffer(largest_buffer: u64, channels: usize) -> usize {
    (largest_buffer / (F32_BYTES * channels.max(1) as u64)) as usize
}

/// `core`, or the largest multiple of `multiple` below it whose tiles (the core and `halo`
/// pixels on each side, square) stay within [`whole_pixels_for_buffer`] of the device's
/// largest buffer; never below `multiple`. Unchanged on the CPU backend.
pub fn fit_tile_core(core: usize, halo: usize, channels: usize, multiple: usize) -> usize {
    match largest_buffer() {
        Some(largest) => tile_core_for_buffer(
            core,
            halo,
            whole_pixels_for_buffer(largest, channels),
            multiple,
        ),
        None => core,
    }
}

/// `core`, or the largest multiple of `multiple` below it whose square tiles with `halo` on
/// each side have at most `max_pixels` pixels; never below `multiple`.
pub fn tile_core_for_buffer(core: usize, halo: usize, max_pixels: usize, multiple: usize) -> usize {
    let side = max_pixels.isqrt();
    if (core + 2 * halo) <= side {
        return core;
    }
    let fitting = side.saturating_sub(2 * halo) / multiple * multiple;
    fitting.max(multiple)
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
        assert!(whole_forward_bytes(1920 * 1080) as f64 >= 1.38 * GIB as f64);
        assert!(whole_forward_bytes(3840 * 2160) as f64 >= 7.82 * GIB as f64);
    }

    #[test]
    fn tiles_and_cache_share_the_budget() {
        let uhd = 3840 * 2160;
        let halo = 56;
        // 6 GiB: 1024 cores (working memory 1.45 GiB), a share of the rest as cache.
        let (core, cache) = tiling_within(6 * GIB, uhd, halo, None, None);
        assert_eq!(core, 1024);
        let total = PHOTO_BYTES_PER_PIXEL * uhd as u64 + tile_working_bytes(core, halo);
        assert_eq!(cache, ((6 * GIB - total) as f64 * CACHE_SHARE) as usize);
        // 3 GiB: 1024 cores would leave less cache than their own working memory.
        let (core, cache) = tiling_within(3 * GIB, uhd, halo, None, None);
        assert_eq!(core, 512);
        assert!(cache as u64 > tile_working_bytes(512, halo), "{cache}");
        // Less than one tile needs: the smallest core, no cache.
        assert_eq!(tiling_within(GIB / 4, uhd, halo, None, None), (512, 0));
        // What the caller gives is kept; the cache takes its share of what the core leaves.
        assert_eq!(
            tiling_within(6 * GIB, uhd, halo, Some(256), Some(7)),
            (256, 7)
        );
        let (core, cache) = tiling_within(6 * GIB, uhd, halo, Some(512), None);
        assert_eq!(core, 512);
        let rest = 6 * GIB - PHOTO_BYTES_PER_PIXEL * uhd as u64 - tile_working_bytes(512, halo);
        assert_eq!(cache, (rest as f64 * CACHE_SHARE) as usize);
        // Budget, working memory and cache: never more than the budget.
        for budget in [GIB, 2 * GIB, 5 * GIB, 40 * GIB] {
            let (core, cache) = tiling_within(budget, uhd, halo, None, None);
            let used =
                PHOTO_BYTES_PER_PIXEL * uhd as u64 + tile_working_bytes(core, halo) + cache as u64;
            assert!(cache == 0 || used <= budget, "{budget}: {used}");
        }
    }

    #[test]
    fn the_tile_estimate_covers_the_measured_peaks() {
        // 3840x2160 with no cache: 0.62 GiB peak at 512 cores, 1.25 GiB at 1024.
        let photo = PHOTO_BYTES_PER_PIXEL * 3840 * 2160;
        assert!((photo + tile_working_bytes(512, 56)) as f64 >= 0.62 * GIB as f64);
        assert!((photo + tile_working_bytes(1024, 56)) as f64 >= 1.25 * GIB as f64);
    }

    #[test]
    fn buffers_bound_whole_photos_and_tiles() {
        let lavapipe = 128 << 20;
        // The paper's G (64 channels at full resolution): 524288 pixels in 128 MiB, so a
        // 640x428 photo runs whole and 1920x1080 does not.
        let whole = whole_pixels_for_buffer(lavapipe, 64);
        assert_eq!(whole, 524_288);
        assert!((640 * 428..1920 * 1080).contains(&whole));
        // The official G's 128 channels halve it.
        assert_eq!(whole_pixels_for_buffer(lavapipe, 128), 262_144);
        // Tiles of 512 + 2 x 56 = 624 pixels fit in 724 x 724; with 128 channels (512 pixels)
        // the core shrinks to 512 - 2 x 72 = 368, a multiple of 4.
        assert_eq!(tile_core_for_buffer(512, 56, whole, 4), 512);
        let official = tile_core_for_buffer(512, 72, whole_pixels_for_buffer(lavapipe, 128), 4);
        assert_eq!(official, 368);
        assert!((official + 2 * 72).pow(2) <= 262_144);
        // A buffer too small for any tile still leaves the smallest core.
        assert_eq!(tile_core_for_buffer(512, 56, 1000, 4), 4);
    }
}
