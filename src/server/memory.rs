//! Gives memory the server no longer uses back to the kernel.
//!
//! glibc's allocator returns freed memory to the kernel only from the top
//! of a heap. Under a long steady load, freed chunks in the middle of the
//! heaps (and of the one other arena `MALLOC_ARENA_MAX=2` allows) stay
//! resident, so RSS creeps up while the live heap does not. `malloc_trim`
//! releases every whole free page in every arena; run now and then, it
//! keeps RSS near the live heap.
#![allow(unsafe_code)] // one call into the C library: the narrow FFI edge of the server's memory.

use std::time::Duration;

/// How often the server trims: often enough that RSS follows the live
/// heap, rarely enough that the walk over the heaps costs nothing measurable.
pub const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Releases the allocator's free pages; true if any were released.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() -> bool {
    // SAFETY: malloc_trim takes no pointers; it works on the allocator's
    // own state under the allocator's own locks, and may run on any thread
    // while others allocate.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other C libraries have no such call; their allocators decide alone.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_memory_in_the_middle_of_the_heap_is_released() {
        // Many small blocks, then every other one freed: the holes are in
        // the middle of the heap, where only a trim returns them.
        let mut blocks: Vec<Vec<u8>> = (0..4096).map(|_| vec![1u8; 8192]).collect();
        let kept: Vec<Vec<u8>> = blocks
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, b)| std::mem::take(b))
            .collect();
        drop(blocks);
        assert!(super::trim(), "nothing was released");
        assert_eq!(kept.len(), 2048);
        assert!(kept.iter().all(|b| b[8191] == 1));
    }
}
