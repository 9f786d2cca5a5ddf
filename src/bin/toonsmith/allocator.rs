//! The program's allocator: mimalloc, keeping freed memory.
//!
//! Inference frees and allocates activations of tens to hundreds of MB at every layer. glibc
//! hands such blocks back to the OS at each free, and mimalloc purges them on its own schedule,
//! so new tensors fault their pages in and zero them again: a 1920x1080 forward spent about half
//! its time there (12.1 s with glibc, 9.5 s with mimalloc's defaults, 5.4 s when freed memory is
//! kept; `docs/performance.md`). The price is that the resident size stays at its peak until
//! the process ends, which for a command-line run is when it would have mattered least.

/// Index of `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (libmimalloc-sys 0.1.49,
/// pinned by Cargo.lock; its Rust bindings do not name this option).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps freed memory for reuse instead of returning it to the OS, unless the user set
/// `MIMALLOC_PURGE_DELAY` themselves.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mimalloc allows setting options at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_option_index_is_the_purge_delay() {
        // purge_delay's default is 1000 (ms) in mimalloc 3; its neighbours default to 0 and 1.
        let value = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert!(value == 1000 || value == -1, "option 15 is {value}");
    }
}
