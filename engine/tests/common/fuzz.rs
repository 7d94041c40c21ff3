//! The harness of the decoder fuzz tests (issue 20, "Fuzzing in CI"):
//! structured random inputs on the stable toolchain, bounded in count and
//! time, replayable from a seed.
//!
//! Shared by every crate's fuzz tests: `engine/tests`, `net/tests` and
//! `cluster/tests` include this file by path, and so does the engine's
//! in-crate fuzz module (its decoders are `pub(crate)`). A fuzz target is a
//! decoder call that must return (`Ok` or a typed `Err`, never a panic),
//! within [`CASE_DEADLINE`] (a hang aborts the process and prints the
//! input), allocating at most `factor × input + ALLOC_SLACK` bytes at its
//! peak ([`Target::factor`]; the decoders cap every capacity taken from a
//! count by the bytes that could back it).
//!
//! Inputs: the target's valid encodings (from the crate's own encoders),
//! mutated — bit flips, bytes set to 0x00/0xff/0x7f/0x80, truncation,
//! extension, a random u16/u32/u64 written anywhere with a boundary value
//! (0, 1, max, `u32::MAX`, the input's length), runs of garbage, two
//! encodings spliced — and pure random bytes. A target's `fixup` (e.g.
//! resealing a checksum or a frame length) is applied to most mutants, so
//! the parser behind a checksum meets the damage.
//!
//! Budget: each target runs until `COREKV_FUZZ_SECS` seconds (default
//! [`DEFAULT_SECS`]) or `COREKV_FUZZ_SECS × 2 000 000` inputs, whichever
//! comes first; a nightly run sets e.g. `COREKV_FUZZ_SECS=300`. The seed
//! is printed; `COREKV_SEED=<n>` replays a run.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Seconds per target when `COREKV_FUZZ_SECS` is unset.
pub const DEFAULT_SECS: f64 = 1.0;
/// Inputs per second of budget: the count bound that comes with the time
/// bound (a fast machine stops on this one).
pub const CASES_PER_SEC: f64 = 2_000_000.0;
/// One decode that takes longer than this is a hang: the process aborts
/// after printing the input.
pub const CASE_DEADLINE: Duration = Duration::from_secs(5);
/// Bytes any decode may allocate beyond `factor × input` (error messages,
/// small fixed structures).
pub const ALLOC_SLACK: usize = 16 * 1024;

// ---- allocation accounting ----

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn account(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
}

/// The system allocator, counting this thread's live bytes and their peak.
/// A fuzz test binary installs it with
/// `#[global_allocator] static ALLOC: CountingAlloc = CountingAlloc;`.
pub struct CountingAlloc;

// SAFETY: every call is forwarded to `System` unchanged; the accounting
// touches only const-initialised thread-locals without destructors, which
// never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            account(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            account(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        account(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            // Old and new blocks may both exist for a moment: count the
            // new one first, then free the old.
            account(new_size as isize);
            account(-(layout.size() as isize));
        }
        p
    }
}

/// Runs `f` and returns its result with the peak of bytes it held at once
/// (on this thread, above what was live when it started). Zero when the
/// binary did not install [`CountingAlloc`].
pub fn peak_alloc<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    let peak = PEAK.with(Cell::get) - base;
    (r, peak.max(0) as usize)
}

/// Starts measuring this thread's peak (for code that cannot run in a
/// closure, e.g. an `.await`); pass the result to [`peak_since`].
pub fn start_peak() -> isize {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    base
}

/// The peak of bytes held at once since [`start_peak`] returned `base`.
pub fn peak_since(base: isize) -> usize {
    (PEAK.with(Cell::get) - base).max(0) as usize
}

thread_local! {
    static MEASURED: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Runs one decode inside a target's check and records its peak
/// allocation: when a check calls this, the bound applies to the largest
/// such peak instead of to the whole check (whose copies and re-encodings
/// are the test's, not the decoder's).
pub fn measure<R>(f: impl FnOnce() -> R) -> R {
    let (r, peak) = peak_alloc(f);
    MEASURED.with(|m| m.set(Some(m.get().map_or(peak, |p| p.max(peak)))));
    r
}

// ---- seeded randomness ----

/// SplitMix64: small, seeded, reproducible.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Random bytes of a [`len`](Rng::len) up to `max`.
    pub fn blob(&mut self, max: usize) -> Vec<u8> {
        let n = self.len(max);
        self.bytes(n)
    }
    /// Like [`blob`](Rng::blob) but never empty.
    pub fn key(&mut self, max: usize) -> Vec<u8> {
        let n = 1 + self.len(max);
        self.bytes(n)
    }
    /// A length drawn mostly small, sometimes up to `max`.
    pub fn len(&mut self, max: usize) -> usize {
        match self.below(4) {
            0 => self.below(8.min(max + 1)),
            1 | 2 => self.below(64.min(max + 1)),
            _ => self.below(max + 1),
        }
    }
}

/// Boundary values a length or count field is set to.
fn boundary(rng: &mut Rng, input_len: usize) -> u64 {
    let v = [
        0,
        1,
        2,
        0x7f,
        0x80,
        0xff,
        0xffff,
        0x7fff_ffff,
        0x8000_0000,
        u64::from(u32::MAX),
        u64::from(u32::MAX) - 1,
        u64::MAX,
        input_len as u64,
        input_len as u64 + 1,
        (input_len as u64).saturating_sub(1),
        rng.next(),
    ];
    v[rng.below(v.len())]
}

/// One mutant of `base` (`other` for splicing).
pub fn mutate(rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = base.to_vec();
    let rounds = 1 + rng.below(4) * usize::from(rng.one_in(3));
    for _ in 0..rounds {
        let n = b.len();
        match rng.below(10) {
            0 if n > 0 => {
                let at = rng.below(n);
                b[at] ^= 1 << rng.below(8);
            }
            1 if n > 0 => {
                let at = rng.below(n);
                b[at] = [0x00, 0xff, 0x7f, 0x80, 0x01, rng.next() as u8][rng.below(6)];
            }
            2 => b.truncate(rng.below(n + 1)),
            3 => {
                let extra = rng.len(256);
                let tail = if rng.one_in(2) {
                    vec![0; extra]
                } else {
                    rng.bytes(extra)
                };
                b.extend_from_slice(&tail);
            }
            4..=6 if n > 0 => {
                let width = [2usize, 4, 4, 8][rng.below(4)];
                let at = rng.below(n);
                let v = boundary(rng, n).to_le_bytes();
                let end = (at + width).min(n);
                b[at..end].copy_from_slice(&v[..end - at]);
            }
            7 if n > 0 => {
                let at = rng.below(n);
                let len = rng.len(n - at);
                for x in &mut b[at..at + len] {
                    *x = rng.next() as u8;
                }
            }
            8 => {
                let cut = rng.below(n + 1);
                let from = rng.below(other.len() + 1);
                b.truncate(cut);
                b.extend_from_slice(&other[from..]);
            }
            9 if n > 0 => {
                // Duplicate or drop a run (shifts every later field).
                let at = rng.below(n);
                let len = rng.len(n - at);
                if rng.one_in(2) {
                    let run = b[at..at + len].to_vec();
                    b.splice(at..at, run);
                } else {
                    b.drain(at..at + len);
                }
            }
            _ => {}
        }
    }
    b
}

// ---- the driver ----

/// The time budget per target, from `COREKV_FUZZ_SECS`.
pub fn budget_secs() -> f64 {
    match std::env::var("COREKV_FUZZ_SECS") {
        Ok(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| *s > 0.0)
            .unwrap_or_else(|| panic!("COREKV_FUZZ_SECS={s:?} is not a positive number")),
        Err(_) => DEFAULT_SECS,
    }
}

/// One decoder under test.
pub struct Target<'a> {
    /// Name, printed with the seed and the count.
    pub name: &'a str,
    /// Valid encodings to mutate (at least one).
    pub corpus: Vec<Vec<u8>>,
    /// Allowed peak allocation per input byte.
    pub factor: usize,
    /// Allowed peak allocation on top of `factor × input`.
    pub slack: usize,
    /// Scale of the budget (a slow target, e.g. one that opens files, runs
    /// fewer inputs per second).
    pub budget_scale: f64,
}

impl<'a> Target<'a> {
    /// A target with allocation factor 4, [`ALLOC_SLACK`] and the full
    /// budget.
    pub fn new(name: &'a str, corpus: Vec<Vec<u8>>) -> Self {
        assert!(!corpus.is_empty(), "{name}: a corpus of valid encodings");
        Target {
            name,
            corpus,
            factor: 4,
            slack: ALLOC_SLACK,
            budget_scale: 1.0,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// Inputs decoded.
    pub inputs: u64,
    /// Of those, mutants of valid encodings.
    pub mutants: u64,
    /// Wall time.
    pub elapsed: Duration,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Aborts the process when one input runs past [`CASE_DEADLINE`].
struct Watchdog {
    epoch: Instant,
    /// Milliseconds since `epoch` (plus one) when the current input
    /// started; 0 between inputs.
    started_ms: Arc<AtomicU64>,
    input: Arc<Mutex<Vec<u8>>>,
    done: Arc<AtomicBool>,
}

impl Watchdog {
    fn start(name: &str, seed: u64) -> Self {
        let w = Watchdog {
            epoch: Instant::now(),
            started_ms: Arc::new(AtomicU64::new(0)),
            input: Arc::new(Mutex::new(Vec::new())),
            done: Arc::new(AtomicBool::new(false)),
        };
        let (started, input, done) = (w.started_ms.clone(), w.input.clone(), w.done.clone());
        let (epoch, name) = (w.epoch, name.to_string());
        std::thread::spawn(move || {
            let limit = CASE_DEADLINE.as_millis() as u64;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                let s = started.load(Ordering::Relaxed);
                let now = epoch.elapsed().as_millis() as u64 + 1;
                if s != 0 && now.saturating_sub(s) > limit {
                    let bytes = input.lock().map(|b| hex(&b)).unwrap_or_default();
                    // Straight to the process's stderr: the test harness
                    // captures `eprintln!`, and would lose it in the abort.
                    use std::io::Write as _;
                    let _ = writeln!(
                        std::io::stderr(),
                        "{name}: COREKV_SEED={seed}: one input ran over {CASE_DEADLINE:?} (a hang): {bytes}"
                    );
                    std::process::abort();
                }
            }
        });
        w
    }

    fn begin(&self, input: &[u8]) {
        if let Ok(mut slot) = self.input.lock() {
            slot.clear();
            slot.extend_from_slice(input);
        }
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        self.started_ms.store(now, Ordering::Relaxed);
    }

    fn end(&self) {
        self.started_ms.store(0, Ordering::Relaxed);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Feeds `target` random inputs until its budget is spent; `check` is the
/// decoder call, with any agreement assertions. Panics (failing the test)
/// with the seed and the input in hex when `check` panics or allocates
/// past the bound.
pub fn fuzz(seed: u64, target: &Target<'_>, mut check: impl FnMut(&[u8])) -> Report {
    let secs = budget_secs() * target.budget_scale;
    let max_inputs = (secs * CASES_PER_SEC) as u64;
    let deadline = Duration::from_secs_f64(secs);
    let mut rng = Rng(seed ^ crate_hash(target.name));
    let dog = Watchdog::start(target.name, seed);
    let start = Instant::now();
    let mut report = Report {
        inputs: 0,
        mutants: 0,
        elapsed: Duration::ZERO,
    };
    let mut input = Vec::new();
    // Every valid encoding once, unchanged, then random inputs.
    let mut corpus_left = target.corpus.len();
    while report.inputs < max_inputs && (corpus_left > 0 || start.elapsed() < deadline) {
        input.clear();
        if corpus_left > 0 {
            corpus_left -= 1;
            input.extend_from_slice(&target.corpus[corpus_left]);
        } else if rng.one_in(16) {
            let n = rng.len(512);
            input = rng.bytes(n);
        } else {
            let c = &target.corpus;
            let base = &c[rng.below(c.len())];
            let other = &c[rng.below(c.len())];
            input = mutate(&mut rng, base, other);
            report.mutants += 1;
        }
        let as_input = &input[..];
        dog.begin(as_input);
        MEASURED.with(|m| m.set(None));
        let (outcome, whole) = peak_alloc(|| catch_unwind(AssertUnwindSafe(|| check(as_input))));
        let peak = MEASURED.with(Cell::get).unwrap_or(whole);
        dog.end();
        report.inputs += 1;
        let name = target.name;
        let n = as_input.len();
        if let Err(p) = outcome {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "{name}: COREKV_SEED={seed}: input {} of {n} bytes panicked ({what}): {}",
                report.inputs,
                hex(as_input)
            );
        }
        let bound = target.factor * n + target.slack;
        assert!(
            peak <= bound,
            "{name}: COREKV_SEED={seed}: input {} of {n} bytes allocated {peak} bytes at once (bound {bound}): {}",
            report.inputs,
            hex(as_input)
        );
    }
    report.elapsed = start.elapsed();
    eprintln!(
        "{}: {} inputs ({} mutants of {} valid encodings) in {:.2?}, COREKV_SEED={seed}",
        target.name,
        report.inputs,
        report.mutants,
        target.corpus.len(),
        report.elapsed
    );
    report
}

/// A choice in `0..n` made from the input itself (its length and its
/// first and last bytes), so a check that varies its treatment (reseal or
/// not, which limits) replays from the input alone.
pub fn pick(input: &[u8], n: usize) -> usize {
    let head = &input[..input.len().min(16)];
    let tail = &input[input.len().saturating_sub(16)..];
    let h = [head, tail]
        .iter()
        .flat_map(|s| s.iter())
        .fold(crate_hash("pick") ^ input.len() as u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    ((h ^ (h >> 29)) % n.max(1) as u64) as usize
}

/// Stirs the target name into the seed, so targets sharing a seed draw
/// different inputs.
fn crate_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}
