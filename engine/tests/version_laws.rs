//! Property tests of sibling-set merge laws and dotted-version-vector
//! causality: the properties that let replicas append without reading.

use corekv_engine::version::{CausalContext, Dot, SiblingSet, Version, VersionVector, ANY_REPLICA};
use corekv_engine::ConflictMode;
use proptest::prelude::*;

fn arb_version() -> impl Strategy<Value = Version> {
    (
        1u64..4,
        1u64..24,
        0u64..30,
        prop_oneof![Just(0u64), 1u64..50],
        prop::option::of(prop::collection::vec(any::<u8>(), 0..4)),
    )
        .prop_map(
            |(replica, counter, timestamp, expires_at_ms, value)| Version {
                dot: Dot { replica, counter },
                timestamp,
                expires_at_ms,
                value,
            },
        )
}

fn arb_context() -> impl Strategy<Value = VersionVector> {
    // Replicas 1..4, plus sometimes the ANY_REPLICA wildcard of overwrites.
    let replica = prop_oneof![4 => 1u64..4, 1 => Just(ANY_REPLICA)];
    prop::collection::vec((replica, 0u64..24), 0..4).prop_map(VersionVector::from_entries)
}

fn arb_set(mode: ConflictMode) -> impl Strategy<Value = SiblingSet> {
    (prop::collection::vec(arb_version(), 0..5), arb_context())
        .prop_map(move |(versions, ctx)| SiblingSet::from_parts(versions, ctx.into(), mode))
}

fn arb_mode() -> impl Strategy<Value = ConflictMode> {
    prop_oneof![
        Just(ConflictMode::Siblings),
        Just(ConflictMode::LastWriterWins)
    ]
}

fn merged(a: &SiblingSet, b: &SiblingSet, mode: ConflictMode) -> SiblingSet {
    let mut out = a.clone();
    out.merge(b, mode);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn merge_is_commutative(
        (mode, a, b) in arb_mode().prop_flat_map(|m| (Just(m), arb_set(m), arb_set(m)))
    ) {
        prop_assert_eq!(merged(&a, &b, mode), merged(&b, &a, mode));
    }

    #[test]
    fn merge_is_associative(
        (mode, a, b, c) in arb_mode().prop_flat_map(|m| (Just(m), arb_set(m), arb_set(m), arb_set(m)))
    ) {
        let left = merged(&merged(&a, &b, mode), &c, mode);
        let right = merged(&a, &merged(&b, &c, mode), mode);
        prop_assert_eq!(left, right);
    }

    #[test]
    fn merge_is_idempotent(
        (mode, a, b) in arb_mode().prop_flat_map(|m| (Just(m), arb_set(m), arb_set(m)))
    ) {
        prop_assert_eq!(merged(&a, &a, mode), a.clone());
        let ab = merged(&a, &b, mode);
        prop_assert_eq!(merged(&ab, &b, mode), ab.clone());
    }

    #[test]
    fn encoding_round_trips(
        (mode, a) in arb_mode().prop_flat_map(|m| (Just(m), arb_set(m)))
    ) {
        let bytes = a.to_bytes();
        prop_assert_eq!(bytes.len(), a.encoded_len());
        prop_assert_eq!(SiblingSet::decode(&bytes, mode).ok(), Some(a));
    }

    #[test]
    fn decoding_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = SiblingSet::decode(&bytes, ConflictMode::Siblings);
    }

    /// Clients writing blind (no context) through different replicas create
    /// siblings; a write carrying the context of a read replaces exactly what
    /// that read showed, while writes it did not see survive as siblings.
    #[test]
    fn dvv_causality(blind in 1usize..5, later in 0usize..3, order_seed in any::<u64>()) {
        let mode = ConflictMode::Siblings;
        let mut counter = 0u64;
        let mut next = |replica: u64, value: &str, ctx: CausalContext| {
            counter += 1;
            SiblingSet::from_write(
                Version {
                    dot: Dot { replica, counter },
                    timestamp: counter,
                    expires_at_ms: 0,
                    value: Some(value.as_bytes().to_vec()),
                },
                ctx,
            )
        };
        let mut deltas = Vec::new();
        for i in 0..blind {
            deltas.push(next(1 + i as u64 % 3, "blind", CausalContext::new()));
        }
        let mut replica = SiblingSet::new();
        for d in &deltas {
            replica.merge(d, mode);
        }
        prop_assert_eq!(replica.versions().len(), blind, "concurrent writes are siblings");

        let read_ctx = replica.causal_context();
        let resolving = next(2, "resolved", read_ctx);
        let unseen: Vec<SiblingSet> =
            (0..later).map(|_| next(3, "unseen", CausalContext::new())).collect();

        // Deliver every delta in a pseudo-random order: the result must not depend on it.
        let mut all: Vec<&SiblingSet> = deltas.iter().chain(unseen.iter()).collect();
        all.push(&resolving);
        let mut seed = order_seed | 1;
        for i in (1..all.len()).rev() {
            seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
            all.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        let mut other = SiblingSet::new();
        for d in all {
            other.merge(d, mode);
        }
        let values: Vec<&[u8]> = other.versions().iter().filter_map(|v| v.value.as_deref()).collect();
        prop_assert_eq!(values.len(), 1 + later);
        prop_assert_eq!(values.iter().filter(|v| **v == b"resolved").count(), 1);
        prop_assert_eq!(values.iter().filter(|v| **v == b"unseen").count(), later);
    }
}
