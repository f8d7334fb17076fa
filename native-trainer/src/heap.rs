//! Keeps freed memory for the next step instead of handing it back to the
//! kernel.
//!
//! With glibc's defaults every buffer over its mmap threshold (128 KiB,
//! rising to at most 32 MiB) is a fresh mapping, and freed heap memory is
//! returned once 128 KiB sit at its top. Each training or attack step
//! allocates and frees the same activations again, so the kernel zeroed and
//! faulted in 0.4-1.8 million pages per `atop bench` run. Served from the
//! heap and kept, the same run takes 12 thousand faults on flex (68
//! thousand on LibTorch, which allocates through the same malloc), and the
//! AE's steps take 0.63-0.78x their time on flex, 0.68-0.82x on LibTorch
//! (docs/results/performance-profile.md, sixth profile). The cost: the
//! process's resident memory stays near its peak instead of falling back
//! between steps.

/// Buffers up to this size come from the heap (glibc's largest mapping-free
/// size by default is 32 MiB; the inpainter's 256x256 activations at batch
/// 64 are hundreds of MiB).
const MMAP_THRESHOLD: i32 = 1 << 30;
/// Freed memory at the heap's top is given back beyond this much.
const TRIM_THRESHOLD: i32 = 1 << 30;
/// Extra memory asked for whenever the heap grows, so that growth is rare.
const TOP_PAD: i32 = 64 << 20;

/// Applies the settings above unless the user tuned malloc through the
/// environment (`MALLOC_*` variables or `GLIBC_TUNABLES`), whose settings
/// then stand. Returns whether they were applied.
pub fn keep_freed_memory() -> bool {
    !tuned_by_environment(std::env::vars_os().map(|(name, _)| name)) && set_malloc_options()
}

fn tuned_by_environment(names: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    names.into_iter().any(|name| {
        let name = name.to_string_lossy();
        name.starts_with("MALLOC_") || name == "GLIBC_TUNABLES"
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_malloc_options() -> bool {
    let options = [
        (libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (libc::M_TOP_PAD, TOP_PAD),
    ];
    // SAFETY: mallopt only sets allocator parameters, under glibc's own
    // lock; `main` calls it first, so every buffer is served under them.
    options
        .iter()
        .all(|&(option, value)| unsafe { libc::mallopt(option, value) } == 1)
}

/// Other C libraries keep their own policies.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_malloc_options() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malloc_settings_from_the_environment_stand() {
        let names = |list: &[&str]| list.iter().map(|n| n.into()).collect::<Vec<_>>();
        assert!(tuned_by_environment(names(&["PATH", "MALLOC_ARENA_MAX"])));
        assert!(tuned_by_environment(names(&["GLIBC_TUNABLES"])));
        assert!(!tuned_by_environment(names(&["PATH", "HOME", "MY_MALLOC"])));
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_every_setting() {
        assert!(set_malloc_options(), "mallopt refused a value");
    }
}
