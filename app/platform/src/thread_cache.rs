//! The global allocator of the musl builds (what `dist` ships): musl's own
//! `malloc`, behind a small per-thread cache of freed blocks.
//!
//! musl's allocator (mallocng) takes one process-wide lock on every
//! `malloc` and `free`. With a request answered on one worker thread while
//! another worker answers the next, every allocation of the request path
//! meets the other thread on that lock; the static binary answered about
//! 0.7 times the requests of the glibc build of the same code, whose
//! allocator has per-thread arenas and caches.
//!
//! The cache keeps that lock off the request path without replacing the
//! allocator. Every block still comes from musl's `malloc` and goes back to
//! its `free`; in between, a freed small block is kept on a free list of
//! the freeing thread, one list per size class, and the next allocation of
//! that class on that thread takes it back without a lock. Rust passes the
//! size on every free, so no header is needed to find the class. A block
//! freed on another thread than the one that allocated it is simply kept
//! by the thread that freed it: musl's `free` accepts any block from any
//! thread, so the cache never has to send it back.
//!
//! Bounds: blocks up to `LARGEST_CLASS` bytes are cached, at most
//! `CLASS_BUDGET` bytes (and at most `MAX_BLOCKS` blocks) per class and
//! thread, so a thread holds at most about a megabyte it does not use. A
//! thread that exits gives its blocks back to musl: a pthread key's
//! destructor (which needs no allocation to set up, unlike std's thread
//! local destructors on musl) empties its lists. One case escapes it: a
//! thread whose first cached free happens in the last round of pthread-key
//! destructors (another key's destructor freeing, after re-arming itself
//! three times) registers too late, and what it caches then stays. That is
//! at most one class's capacity per such thread (32 blocks of 48 bytes in
//! the test that makes it happen), and no thread of the service frees for
//! the first time that late.
//!
//! No memory is ever handed out twice or written after `free`: a block is
//! either on exactly one free list or in use, and the list links live in
//! the free blocks themselves, whose smallest class is 16 bytes. A caller's
//! double free would break that; debug builds (and so the tests) abort at
//! the second free of a block still on its list.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Size classes: 16-byte steps up to 128 bytes, then four per power of two
/// up to this size. Larger blocks (hyper's 16 KiB buffers are the largest
/// the request path makes) go to musl at once.
const LARGEST_CLASS: usize = 16 * 1024;
const CLASSES: usize = class_index(LARGEST_CLASS) + 1;
/// Every class size is a multiple of 16, and musl's `malloc` aligns to 16:
/// layouts that need more go to `System`, which handles them.
const CLASS_ALIGN: usize = 16;
/// Bytes a thread keeps per class, and blocks at most per class.
const CLASS_BUDGET: usize = 32 * 1024;
const MAX_BLOCKS: u32 = 32;

/// The index of the smallest class that holds `size` (1..=LARGEST_CLASS).
const fn class_index(size: usize) -> usize {
    if size <= 128 {
        return size.div_ceil(16) - 1;
    }
    // size is in (2^power, 2^(power+1)], split into four steps of 2^(power-2).
    let power = (usize::BITS - 1 - (size - 1).leading_zeros()) as usize;
    8 + (power - 7) * 4 + ((size - 1 - (1 << power)) >> (power - 2))
}

/// The size of the blocks of class `index`.
const fn class_size(index: usize) -> usize {
    if index < 8 {
        return (index + 1) * 16;
    }
    let power = 7 + (index - 8) / 4;
    (1 << power) + ((index - 8) % 4 + 1) * (1 << (power - 2))
}

const fn class_capacity(index: usize) -> u32 {
    let blocks = CLASS_BUDGET / class_size(index);
    if blocks < 2 {
        2
    } else if blocks > MAX_BLOCKS as usize {
        MAX_BLOCKS
    } else {
        blocks as u32
    }
}

/// The class of a layout, if blocks of that layout are cached.
fn class_of(layout: Layout) -> Option<usize> {
    (layout.size() <= LARGEST_CLASS && layout.align() <= CLASS_ALIGN)
        .then(|| class_index(layout.size().max(1)))
}

/// The layout musl is asked for when a block of `class` is made.
fn class_layout(class: usize) -> Layout {
    Layout::from_size_align(class_size(class), CLASS_ALIGN).expect("class sizes are valid")
}

/// A free block, linked through its own first word.
struct FreeBlock {
    next: *mut FreeBlock,
}

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    /// The thread has not cached anything yet.
    Fresh,
    /// Blocks are cached; the thread's exit will give them back.
    Caching,
    /// The thread is exiting (or could not register its exit): every call
    /// goes straight to musl.
    Passing,
}

struct ThreadCache {
    phase: Phase,
    heads: [*mut FreeBlock; CLASSES],
    lengths: [u32; CLASSES],
}

impl ThreadCache {
    const fn new() -> ThreadCache {
        ThreadCache {
            phase: Phase::Fresh,
            heads: [ptr::null_mut(); CLASSES],
            lengths: [0; CLASSES],
        }
    }

    fn take(&mut self, class: usize) -> *mut u8 {
        let head = self.heads[class];
        if head.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: a block on a free list is owned by the list, and its first
        // word holds the link written when it was put there.
        self.heads[class] = unsafe { (*head).next };
        self.lengths[class] -= 1;
        #[cfg(test)]
        tests::CACHED.fetch_sub(1, Ordering::Relaxed);
        head.cast()
    }

    /// Keeps `block` if its class has room and the thread is caching;
    /// otherwise hands it back.
    fn keep(&mut self, class: usize, block: *mut u8) -> Result<(), *mut u8> {
        if self.phase == Phase::Fresh {
            self.phase = if register_thread_exit() {
                Phase::Caching
            } else {
                Phase::Passing
            };
        }
        if self.phase != Phase::Caching || self.lengths[class] >= class_capacity(class) {
            return Err(block);
        }
        #[cfg(debug_assertions)]
        self.abort_if_listed(class, block);
        let block = block.cast::<FreeBlock>();
        // SAFETY: the block is at least 16 bytes, aligned to 16, and ours
        // from here on: its owner freed it.
        unsafe {
            block.write(FreeBlock {
                next: self.heads[class],
            })
        };
        self.heads[class] = block;
        self.lengths[class] += 1;
        #[cfg(test)]
        tests::CACHED.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A block freed twice would be handed out twice, and the damage seen
    /// much later and far away; debug builds (and the tests) stop at the
    /// second free instead. Release builds do not look: the list holds at
    /// most `MAX_BLOCKS` blocks, but a walk per free is still a walk.
    #[cfg(debug_assertions)]
    fn abort_if_listed(&self, class: usize, block: *mut u8) {
        let mut listed = self.heads[class];
        while !listed.is_null() {
            if listed.cast::<u8>() == block {
                let message: &[u8] =
                    b"thread_cache: a block was freed twice (double free); aborting\n";
                // SAFETY: write(2) and abort(3) allocate nothing; the buffer
                // outlives the call.
                unsafe {
                    libc::write(2, message.as_ptr().cast(), message.len());
                    libc::abort();
                }
            }
            // SAFETY: blocks on the list hold their link in the first word.
            listed = unsafe { (*listed).next };
        }
    }

    /// Gives every cached block back to musl and caches nothing more.
    fn release(&mut self) {
        self.phase = Phase::Passing;
        for class in 0..CLASSES {
            loop {
                let block = self.take(class);
                if block.is_null() {
                    break;
                }
                // SAFETY: the block came from `System.alloc` with this layout.
                unsafe { System.dealloc(block, class_layout(class)) };
            }
        }
    }
}

thread_local! {
    // Constant-initialised and without `Drop`, so that reaching it never
    // allocates or registers anything: it is plain thread-local memory.
    static CACHE: UnsafeCell<ThreadCache> = const { UnsafeCell::new(ThreadCache::new()) };
}

/// Runs `f` on this thread's cache. The allocator's methods are never
/// re-entered on one thread (nothing in them allocates), so the mutable
/// borrow is unique.
fn with_cache<R>(f: impl FnOnce(&mut ThreadCache) -> R) -> R {
    // SAFETY: see above; the cache is this thread's own.
    CACHE.with(|cache| f(unsafe { &mut *cache.get() }))
}

/// The pthread key whose destructor empties an exiting thread's cache:
/// 0 until made, then key + 1, or `usize::MAX` if none could be made.
static EXIT_KEY: AtomicUsize = AtomicUsize::new(0);

extern "C" fn thread_exits(_: *mut libc::c_void) {
    with_cache(ThreadCache::release);
}

/// Arranges for this thread's cache to be emptied when it exits; false if
/// that cannot be arranged, and then the thread caches nothing.
fn register_thread_exit() -> bool {
    let mut key = EXIT_KEY.load(Ordering::Acquire);
    if key == 0 {
        let mut made: libc::pthread_key_t = 0;
        // SAFETY: `made` is written by pthread_key_create; the destructor is
        // an `extern "C"` function that lives as long as the process.
        let created = unsafe { libc::pthread_key_create(&mut made, Some(thread_exits)) } == 0;
        let candidate = if created {
            made as usize + 1
        } else {
            usize::MAX
        };
        key = match EXIT_KEY.compare_exchange(0, candidate, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => candidate,
            Err(winner) => {
                if created {
                    // SAFETY: the key was made above and never used.
                    unsafe { libc::pthread_key_delete(made) };
                }
                winner
            }
        };
    }
    if key == usize::MAX {
        return false;
    }
    // The destructor only runs for a thread whose value is not null.
    // SAFETY: the key exists; the value is never dereferenced.
    unsafe { libc::pthread_setspecific((key - 1) as libc::pthread_key_t, ptr::dangling()) == 0 }
}

/// musl's allocator with a per-thread cache of small freed blocks.
pub struct ThreadCached;

// SAFETY: every block handed out comes from `System` with a layout at least
// as large and as aligned as the one asked for (its class's), is given out
// once (taken off the one list it was on), and goes back to `System` with
// the layout it was made with, or onto one list.
unsafe impl GlobalAlloc for ThreadCached {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout) else {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.alloc(layout) };
        };
        let block = with_cache(|cache| cache.take(class));
        if block.is_null() {
            // SAFETY: a class layout has a non-zero size.
            unsafe { System.alloc(class_layout(class)) }
        } else {
            block
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout) else {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.alloc_zeroed(layout) };
        };
        let block = with_cache(|cache| cache.take(class));
        if block.is_null() {
            // SAFETY: a class layout has a non-zero size.
            unsafe { System.alloc_zeroed(class_layout(class)) }
        } else {
            // SAFETY: the block holds at least `layout.size()` bytes.
            unsafe { ptr::write_bytes(block, 0, layout.size()) };
            block
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(class) = class_of(layout) else {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.dealloc(block, layout) };
        };
        if let Err(block) = with_cache(|cache| cache.keep(class, block)) {
            // SAFETY: the block was made with its class's layout.
            unsafe { System.dealloc(block, class_layout(class)) }
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align(new_size, layout.align())
            .expect("the caller passes a valid new size");
        match (class_of(layout), class_of(new_layout)) {
            (Some(old), Some(new)) if old == new => block,
            (old, new) => {
                // The block is a `System` block of its class's size (or of
                // its own size if not cached); it grows or shrinks there,
                // to the new class's size if the new size is cached, so
                // that it can join that class's list when freed.
                let made_with = old.map_or(layout, class_layout);
                let new_size = new.map_or(new_size, class_size);
                // SAFETY: `made_with` is the layout the block was made with,
                // and `new_size` is non-zero and valid for its alignment.
                unsafe { System.realloc(block, made_with, new_size) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks on every thread's lists, for the tests only.
    pub(super) static CACHED: std::sync::atomic::AtomicIsize =
        std::sync::atomic::AtomicIsize::new(0);

    #[test]
    fn every_size_falls_in_the_smallest_class_that_holds_it() {
        assert_eq!(CLASSES, 36);
        for size in 1..=LARGEST_CLASS {
            let class = class_index(size);
            assert!(class_size(class) >= size, "{size} in class {class}");
            if class > 0 {
                assert!(
                    class_size(class - 1) < size,
                    "{size} fits class {}",
                    class - 1
                );
            }
            assert_eq!(class_size(class) % CLASS_ALIGN, 0);
        }
        for (size, class, capacity) in [
            (1, 0, 32),
            (16, 0, 32),
            (17, 1, 32),
            (128, 7, 32),
            (129, 8, 32),
            (160, 8, 32),
            (256, 11, 32),
            (1024, 19, 32),
            (1025, 20, 25),
            (16384, 35, 2),
        ] {
            assert_eq!(class_index(size), class, "class of {size}");
            assert_eq!(class_capacity(class), capacity, "capacity of class {class}");
        }
    }

    #[test]
    fn freed_blocks_are_reused_by_the_same_thread_up_to_the_class_capacity() {
        let layout = Layout::from_size_align(100, 8).unwrap();
        let capacity = class_capacity(class_of(layout).unwrap()) as usize;
        // SAFETY: blocks are used within their layout and freed once.
        unsafe {
            let blocks: Vec<*mut u8> = (0..capacity + 5)
                .map(|_| ThreadCached.alloc(layout))
                .collect();
            for &block in &blocks {
                block.write_bytes(0xAB, layout.size());
                ThreadCached.dealloc(block, layout);
            }
            // The last ones freed beyond the capacity went back to musl; the
            // cache hands back the `capacity` it kept, newest first.
            let kept: Vec<*mut u8> = blocks[..capacity].iter().rev().copied().collect();
            let again: Vec<*mut u8> = (0..capacity).map(|_| ThreadCached.alloc(layout)).collect();
            assert_eq!(again, kept);
            let zeroed = {
                ThreadCached.dealloc(again[0], layout);
                ThreadCached.alloc_zeroed(layout)
            };
            assert_eq!(zeroed, again[0]);
            assert!(
                std::slice::from_raw_parts(zeroed, layout.size())
                    .iter()
                    .all(|b| *b == 0)
            );
            for block in again {
                ThreadCached.dealloc(block, layout);
            }
        }
    }

    #[test]
    fn realloc_keeps_the_contents_across_classes_and_to_and_from_large_blocks() {
        // SAFETY: each block is used within its current size and freed once.
        unsafe {
            let mut layout = Layout::from_size_align(10, 1).unwrap();
            let block = ThreadCached.alloc(layout);
            for i in 0..10 {
                *block.add(i) = i as u8;
            }
            let mut block = block;
            for new_size in [12, 100, 5_000, 100_000, 3_000, 20] {
                block = ThreadCached.realloc(block, layout, new_size);
                assert!(!block.is_null());
                let kept = std::slice::from_raw_parts(block, 10);
                assert_eq!(kept, &(0..10).collect::<Vec<u8>>()[..], "after {new_size}");
                block.add(new_size - 1).write(0xFF);
                layout = Layout::from_size_align(new_size, 1).unwrap();
            }
            ThreadCached.dealloc(block, layout);
        }
    }

    #[test]
    fn over_aligned_and_large_layouts_bypass_the_cache() {
        for (size, align) in [(64, 32), (64, 4096), (LARGEST_CLASS + 1, 8)] {
            let layout = Layout::from_size_align(size, align).unwrap();
            assert_eq!(class_of(layout), None);
            // SAFETY: allocated and freed with the same layout.
            unsafe {
                let block = ThreadCached.alloc(layout);
                assert_eq!(block as usize % align, 0);
                ThreadCached.dealloc(block, layout);
            }
        }
    }

    /// Runs the test `name` of this module again in a child process of
    /// this test binary, with `marker` set so that it does its dangerous
    /// part: for what would end or spoil this process.
    fn in_a_child(name: &str, marker: &str) -> std::process::Output {
        // A test's name is its module path without the crate's name.
        let (_crate, module) = module_path!().split_once("::").unwrap();
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &format!("{module}::{name}"), "--nocapture"])
            .env(marker, "1")
            .output()
            .unwrap()
    }

    /// A block freed twice stops the process at the second free (in debug
    /// builds): run in a child process of this test binary, which must die
    /// of SIGABRT with the message.
    #[test]
    #[cfg(debug_assertions)]
    // Miri runs no child process; it finds a double free by itself.
    #[cfg_attr(miri, ignore)]
    fn a_double_free_aborts_in_debug_builds() {
        const CHILD: &str = "THREAD_CACHE_DOUBLE_FREE_CHILD";
        if std::env::var_os(CHILD).is_some() {
            let layout = Layout::from_size_align(48, 8).unwrap();
            // SAFETY: deliberately wrong, freed twice: the point of the test.
            unsafe {
                let block = ThreadCached.alloc(layout);
                ThreadCached.dealloc(block, layout);
                ThreadCached.dealloc(block, layout);
            }
            return;
        }
        let output = in_a_child("a_double_free_aborts_in_debug_builds", CHILD);
        use std::os::unix::process::ExitStatusExt;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.signal(), Some(libc::SIGABRT), "{stderr}");
        assert!(
            stderr.contains("thread_cache: a block was freed twice (double free); aborting"),
            "{stderr}"
        );
    }

    /// The one leak the cache can have, pinned to its bound: a thread whose
    /// first cached free happens in the last round of pthread-key
    /// destructors registers its exit destructor too late to run, so what
    /// it caches then is never given back. Made on purpose here, in a child
    /// process of this test binary: a raw pthread (no Rust allocation of its
    /// own) with a key whose destructor re-arms itself until the last round
    /// (`PTHREAD_DESTRUCTOR_ITERATIONS`, 4 on glibc and musl), then frees
    /// more blocks of one class than the class holds. At most the class's
    /// capacity stays cached; the rest go back to musl.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_first_free_in_the_last_destructor_round_keeps_at_most_one_class_capacity() {
        const CHILD: &str = "THREAD_CACHE_LAST_ROUND_CHILD";
        const ROUNDS: usize = 4;
        const FREED: usize = 40;
        static BLOCKS: [std::sync::atomic::AtomicPtr<u8>; FREED] =
            [const { std::sync::atomic::AtomicPtr::new(ptr::null_mut()) }; FREED];
        static KEY: AtomicUsize = AtomicUsize::new(0);
        static FREED_IN_ROUND: AtomicUsize = AtomicUsize::new(0);
        let layout = Layout::from_size_align(48, 8).unwrap();

        extern "C" fn rearm(value: *mut libc::c_void) {
            let round = value as usize;
            let key = KEY.load(Ordering::SeqCst) as libc::pthread_key_t;
            if round < ROUNDS {
                // SAFETY: the key exists; the value is a counter, never read
                // as memory.
                unsafe { libc::pthread_setspecific(key, ptr::without_provenance(round + 1)) };
                return;
            }
            FREED_IN_ROUND.store(round, Ordering::SeqCst);
            let layout = Layout::from_size_align(48, 8).unwrap();
            // SAFETY: each block was allocated with this layout by the main
            // thread and is freed once, here.
            unsafe {
                for block in &BLOCKS {
                    ThreadCached.dealloc(block.load(Ordering::SeqCst), layout);
                }
            }
        }
        extern "C" fn start(_: *mut libc::c_void) -> *mut libc::c_void {
            let mut key: libc::pthread_key_t = 0;
            // SAFETY: plain pthread calls with a destructor that lives as
            // long as the process.
            unsafe {
                libc::pthread_key_create(&mut key, Some(rearm));
                KEY.store(key as usize, Ordering::SeqCst);
                libc::pthread_setspecific(key, ptr::without_provenance(1));
            }
            ptr::null_mut()
        }

        if std::env::var_os(CHILD).is_some() {
            // SAFETY: blocks are made here and freed by the thread's last
            // destructor round; the thread is joined before BLOCKS is read.
            unsafe {
                // A free on this thread first, so that the cache's exit key
                // exists before the thread's key: in a round, keys are
                // visited in the order they were made.
                ThreadCached.dealloc(ThreadCached.alloc(layout), layout);
                for block in &BLOCKS {
                    block.store(ThreadCached.alloc(layout), Ordering::SeqCst);
                }
                let before = CACHED.load(Ordering::SeqCst);
                let mut thread: libc::pthread_t = std::mem::zeroed();
                assert_eq!(
                    libc::pthread_create(&mut thread, ptr::null(), start, ptr::null_mut()),
                    0
                );
                assert_eq!(libc::pthread_join(thread, ptr::null_mut()), 0);
                let kept = CACHED.load(Ordering::SeqCst) - before;
                println!(
                    "freed in round {}; kept after the last round: {kept}",
                    FREED_IN_ROUND.load(Ordering::SeqCst)
                );
            }
            return;
        }
        let output = in_a_child(
            "a_first_free_in_the_last_destructor_round_keeps_at_most_one_class_capacity",
            CHILD,
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let kept: isize = stdout
            .lines()
            .find_map(|line| line.split_once("kept after the last round: "))
            .map(|(_, kept)| kept)
            .and_then(|kept| kept.trim().parse().ok())
            .unwrap_or_else(|| panic!("{stdout}"));
        let capacity = class_capacity(class_of(layout).unwrap()) as isize;
        assert!(FREED as isize > capacity);
        // The bound: one class's capacity, never all that was freed.
        assert!(
            (0..=capacity).contains(&kept),
            "{kept} blocks stayed cached by an exited thread (bound {capacity})"
        );
        // The scenario happened: the blocks were freed in the last round.
        assert!(
            stdout.contains(&format!("freed in round {ROUNDS};")),
            "{stdout}"
        );
        println!("an exited thread kept {kept} blocks (bound {capacity})");
    }

    /// Blocks cross threads (allocated on one, freed on another), threads
    /// exit with full caches, and every block's contents stay its own.
    #[test]
    fn blocks_freed_on_other_threads_and_exiting_threads_stay_consistent() {
        use std::sync::mpsc;
        struct Block(*mut u8, Layout, u8);
        // SAFETY: a block is owned by whoever holds the message.
        unsafe impl Send for Block {}
        // Scaled down for Miri (`cargo xtask sanitize`), which runs this
        // about a thousand times slower: 100 rounds per thread instead of
        // 2,000.
        const ROUNDS: usize = if cfg!(miri) { 100 } else { 2_000 };
        let (sender, receiver) = mpsc::sync_channel::<Block>(64);
        let producers: Vec<_> = (0..4u8)
            .map(|thread| {
                let sender = sender.clone();
                std::thread::spawn(move || {
                    for round in 0..ROUNDS {
                        let size = 1 + (round * 37 + thread as usize * 101) % 3_000;
                        let layout = Layout::from_size_align(size, 8).unwrap();
                        // SAFETY: filled within its size; freed by the consumer.
                        unsafe {
                            let block = ThreadCached.alloc(layout);
                            block.write_bytes(thread, size);
                            // Some are freed here, filling this thread's cache.
                            if round % 3 == 0 {
                                ThreadCached.dealloc(block, layout);
                            } else {
                                sender.send(Block(block, layout, thread)).unwrap();
                            }
                        }
                    }
                })
            })
            .collect();
        drop(sender);
        let consumer = std::thread::spawn(move || {
            let mut received = 0;
            for Block(block, layout, thread) in receiver {
                // SAFETY: the block is ours now, `layout.size()` bytes long.
                unsafe {
                    let bytes = std::slice::from_raw_parts(block, layout.size());
                    assert!(
                        bytes.iter().all(|byte| *byte == thread),
                        "a block was shared"
                    );
                    ThreadCached.dealloc(block, layout);
                }
                received += 1;
            }
            received
        });
        for producer in producers {
            producer.join().unwrap();
        }
        assert_eq!(consumer.join().unwrap(), 4 * (ROUNDS - ROUNDS.div_ceil(3)));
    }
}
