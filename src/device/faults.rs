//! Failures on the device's own thread, turned into errors.
//!
//! CubeCL (burn's GPU backends) runs each device on a thread of its own and catches a panic
//! there, logs it and goes on: a buffer that does not fit in the device's memory, for one,
//! panics in the device thread (cubecl-wgpu 0.10 `initialize_memory` unwraps its allocation),
//! after which every tensor that depended on it holds whatever memory it was given, and reading
//! it returns no error. On lavapipe, cartoonizing a 640x427 photo that way wrote a garbage image
//! and reported success.
//!
//! [`watch`] chains a panic hook that keeps the first panic of a device thread: CubeCL 0.10
//! (cubecl-common's device channel) names it `DS{U|D}-{type}-{index}` (device service,
//! upstream or downstream; `DSD-4-0` on Vulkan). Other threads' panics are not device faults:
//! the main thread's and a test's stop their own thread, a rayon worker's reaches its caller,
//! toonsmith's own threads are named and catch theirs ([`crate::data::UnpairedData::prefetch`]).
//! [`check`] turns a kept panic into [`Error::Device`]; the library calls it where results
//! leave the device (a cartoon, a training step's losses, a checkpoint, FID features). A fault
//! is kept for the rest of the process: the device's state after it is unknown.

use std::panic::PanicHookInfo;
use std::sync::{Once, OnceLock};

use crate::error::{Error, Result};

static INSTALL: Once = Once::new();
static FIRST: OnceLock<String> = OnceLock::new();

/// Starts recording panics of device threads (once per process; the hook in place before is
/// kept and still runs). Called by the library's constructors of device work
/// ([`crate::infer::Cartoonizer::new`], the trainer, feature networks); cheap to call again.
pub fn watch() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if is_device_thread(std::thread::current().name()) {
                let _ = FIRST.set(describe(info));
            }
            previous(info);
        }));
    });
}

/// `Err(Error::Device)` naming `during` (what toonsmith was doing, in words) if a device
/// thread has failed since [`watch`] was first called.
pub fn check(during: &str) -> Result<()> {
    match FIRST.get() {
        None => Ok(()),
        Some(reason) => Err(Error::Device {
            during: during.to_string(),
            reason: reason.clone(),
        }),
    }
}

/// Whether `err` is a device fault, after which going on to the next input is pointless.
pub fn is_fault(err: &Error) -> bool {
    matches!(err, Error::Device { .. })
}

/// Whether a thread of this name is one of CubeCL's device threads.
fn is_device_thread(name: Option<&str>) -> bool {
    name.is_some_and(|name| ["DSU-", "DSD-"].iter().any(|p| name.starts_with(p)))
}

/// A device thread's panic message as a user reads it: CubeCL's allocations fail as unwraps
/// whose error ends with a line about backtraces; the error itself is what matters.
fn tidy(message: &str) -> String {
    message
        .strip_prefix("called `Result::unwrap()` on an `Err` value: ")
        .unwrap_or(message)
        .lines()
        .filter(|line| line.trim() != "No backtrace available")
        .collect::<Vec<_>>()
        .join("; ")
}

/// The panic's message and where it was raised.
fn describe(info: &PanicHookInfo<'_>) -> String {
    let message = tidy(&crate::error::panic_message(info.payload()));
    match info.location() {
        Some(at) => format!("{message} (at {}:{})", at.file(), at.line()),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::{is_device_thread, tidy};

    #[test]
    fn cubecls_allocation_panic_reads_as_its_error() {
        let raw = "called `Result::unwrap()` on an `Err` value: can't allocate buffer of size: \
                   141066240\nNo backtrace available";
        assert_eq!(tidy(raw), "can't allocate buffer of size: 141066240");
        assert_eq!(tidy("kernel failed\nline two"), "kernel failed; line two");
    }

    #[test]
    fn device_threads_are_told_from_the_programs() {
        for name in ["DSD-4-0", "DSU-0-1"] {
            assert!(is_device_thread(Some(name)), "{name}");
        }
        assert!(!is_device_thread(None), "unnamed: a rayon worker");
        for name in [
            "main",
            "device::faults::tests::x",
            "DS",
            "DSX-1-0",
            "worker",
        ] {
            assert!(!is_device_thread(Some(name)), "{name}");
        }
    }
}
