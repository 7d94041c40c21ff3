//! Fuzzing the sibling-set codec (issue 20), the one engine decoder that
//! is public: its bytes come from disk (commit log, SSTables) and from the
//! network (internode APPLY, HINT, SCAN, MINT answers). Guarantees, for
//! large structured random inputs (mutants of `SiblingSet::to_bytes` in
//! both formats, and random bytes):
//! - `SiblingSet::decode` returns `Ok` or a `DecodeError` in both conflict
//!   modes, never panics or hangs, and what it decodes re-encodes to bytes
//!   that decode to the same set;
//! - the shortcuts agree with it wherever they answer:
//!   `encoded_single_winner` gives exactly what `decode` + `winner` gives,
//!   and `encoded_max_reading` answers only for bytes that decode, with a
//!   reading no lower than any in the decoded set;
//! - the peak allocation of one decode stays within a few times its input.
//!
//! The engine's other decoders are `pub(crate)`: `src/fuzz_tests.rs`
//! fuzzes them, `fuzz_files.rs` the files behind `Engine::open`. Budget,
//! seed and allocation bound: `common/fuzz.rs` (`COREKV_FUZZ_SECS`,
//! `COREKV_SEED`).

mod common;

use common::fuzz::{self, fuzz, Rng, Target};
use corekv_engine::version::{CausalContext, Dot, SiblingSet, Version, VersionVector};
use corekv_engine::ConflictMode;

#[global_allocator]
static ALLOC: fuzz::CountingAlloc = fuzz::CountingAlloc;

fn version(rng: &mut Rng, big: bool) -> Version {
    Version {
        dot: Dot {
            replica: rng.next() % 4,
            counter: 1 + rng.next() % 50,
        },
        timestamp: rng.next() >> rng.below(64),
        expires_at_ms: if rng.one_in(3) { rng.next() % 2000 } else { 0 },
        value: (!rng.one_in(4)).then(|| if big { rng.bytes(20_000) } else { rng.blob(80) }),
    }
}

fn set(rng: &mut Rng, big: bool, mode: ConflictMode) -> SiblingSet {
    let versions: Vec<Version> = (0..1 + rng.len(6)).map(|_| version(rng, big)).collect();
    let vv =
        VersionVector::from_entries((0..rng.len(6)).map(|_| (rng.next() % 4, rng.next() % 40)));
    let dots: Vec<Dot> = (0..rng.len(6))
        .map(|_| Dot {
            replica: rng.next() % 4,
            counter: rng.next() % 60,
        })
        .collect();
    SiblingSet::from_parts(versions, CausalContext::from_parts(vv, dots), mode)
}

/// Format 1 (still read): `u8 1`, `u16 C`, C pairs, `u16 V`, V versions.
fn format_v1(rng: &mut Rng) -> Vec<u8> {
    let mut b = vec![1u8];
    let c = rng.below(4) as u16;
    b.extend_from_slice(&c.to_le_bytes());
    for i in 0..u64::from(c) {
        b.extend_from_slice(&i.to_le_bytes());
        b.extend_from_slice(&(rng.next() % 20).to_le_bytes());
    }
    let n = rng.below(4) as u16;
    b.extend_from_slice(&n.to_le_bytes());
    for _ in 0..n {
        let v = version(rng, false);
        for x in [v.dot.replica, v.dot.counter, v.timestamp, v.expires_at_ms] {
            b.extend_from_slice(&x.to_le_bytes());
        }
        b.push(u8::from(v.value.is_none()));
        let value = v.value.unwrap_or_default();
        b.extend_from_slice(&(value.len() as u32).to_le_bytes());
        b.extend_from_slice(&value);
    }
    b
}

/// The highest clock reading in a decoded set, as `encoded_max_reading`
/// defines it.
fn max_reading(s: &SiblingSet) -> u64 {
    let ctx = s.context();
    let vv = ctx.vv().entries().iter().map(|&(_, c)| c);
    let dots = ctx.dots().iter().map(|d| d.counter);
    let versions = s
        .versions()
        .iter()
        .flat_map(|v| [v.dot.counter, v.timestamp]);
    vv.chain(dots).chain(versions).max().unwrap_or(0)
}

#[test]
fn sibling_set_decoder_and_its_shortcuts() {
    let seed = common::seed::seed("sibling_set_decoder_and_its_shortcuts");
    let mut rng = Rng(seed);
    let mut corpus = Vec::new();
    for i in 0..60 {
        let mode = if i % 2 == 0 {
            ConflictMode::Siblings
        } else {
            ConflictMode::LastWriterWins
        };
        let s = set(&mut rng, i < 2, mode);
        corpus.push(s.to_bytes());
        // Lone versions, the shortcut's case.
        let lone = SiblingSet::from_parts(
            vec![version(&mut rng, false)],
            CausalContext::default(),
            mode,
        );
        corpus.push(lone.to_bytes());
    }
    corpus.extend((0..10).map(|_| format_v1(&mut rng)));
    let target = Target::new("SiblingSet::decode", corpus);
    let r = fuzz(seed, &target, |input| {
        let now = [0u64, 1000, u64::MAX][fuzz::pick(input, 3)];
        for mode in [ConflictMode::Siblings, ConflictMode::LastWriterWins] {
            let decoded = fuzz::measure(|| SiblingSet::decode(input, mode));
            let single = fuzz::measure(|| SiblingSet::encoded_single_winner(input, mode, now));
            if let Some(answer) = single {
                let set = decoded.as_ref().unwrap_or_else(|e| {
                    panic!("encoded_single_winner answers {answer:?} for bytes decode refuses: {e}")
                });
                let expected = set
                    .winner(now)
                    .and_then(|v| v.value.as_deref().map(|value| (value, v.expires_at_ms)));
                assert_eq!(
                    answer, expected,
                    "encoded_single_winner disagrees with decode + winner ({mode:?})"
                );
            }
            if let Ok(set) = &decoded {
                let again = SiblingSet::decode(&set.to_bytes(), mode).expect("re-encoding decodes");
                assert_eq!(
                    &again, set,
                    "decode(encode(decode(x))) != decode(x) ({mode:?})"
                );
            }
            let max = fuzz::measure(|| SiblingSet::encoded_max_reading(input));
            if let Some(m) = max {
                let set = decoded.as_ref().unwrap_or_else(|e| {
                    panic!("encoded_max_reading answers {m} for bytes decode refuses: {e}")
                });
                assert!(
                    max_reading(set) <= m,
                    "a reading above encoded_max_reading's {m}"
                );
            }
        }
    });
    assert!(r.mutants > 0);
}
