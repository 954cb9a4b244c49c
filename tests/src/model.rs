//! The running-count model and its judges, shared by every test that runs a
//! running-count plugin (in any language) through crashes and restarts.
//!
//! A running-count plugin emits, for every input record, the record's key
//! and the number of records with that key seen so far, in decimal. The
//! model is the input itself: per partition, records in offset order, one
//! partition per key.

use crate::{Input, Output};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The verdict on one at-least-once run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Input records (= distinct output counts).
    pub records: usize,
    /// Output records beyond one per input record (replays after restarts).
    pub duplicates: usize,
    /// Restarts seen in the output (a count that did not follow its
    /// predecessor) and matched to a restored checkpoint.
    pub restores_checked: usize,
}

/// At-least-once judgement, per key: every count 1..n appears, the final
/// one is the model's total; the output is a sequence of runs of
/// consecutive counts, and every run after the first starts at
/// `count_before(restored checkpoint offset) + 1` for a restart after the
/// previous one: state is never reset, never older than the checkpoint the
/// restart restored, and duplicates come only from records after it.
///
/// `restores[i]` is where start `i` resumed (partition → offset; 0 where
/// there was no checkpoint). Panics with the first violation.
pub fn judge(input: &[Input], out: &[Vec<Output>], restores: &[HashMap<i32, i64>]) -> Verdict {
    let mut per_partition: BTreeMap<i32, Vec<&Input>> = BTreeMap::new();
    for r in input {
        per_partition.entry(r.partition).or_default().push(r);
    }
    let mut key_partition: HashMap<&str, i32> = HashMap::new();
    let mut totals: HashMap<&str, u64> = HashMap::new();
    for (p, recs) in &per_partition {
        for r in recs {
            key_partition.insert(&r.key, *p);
            *totals.entry(&r.key).or_default() += 1;
        }
    }
    let count_before = |key: &str, offset: i64| -> u64 {
        let p = key_partition[key];
        per_partition[&p][..offset as usize]
            .iter()
            .filter(|r| r.key == key)
            .count() as u64
    };
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut emitted = 0usize;
    for part in out {
        for o in part {
            emitted += 1;
            let value = o.value.as_deref().expect("a running count is never null");
            let count = value
                .parse()
                .unwrap_or_else(|_| panic!("key {:?}: value {value:?} is not a count", o.key));
            seqs.entry(o.key.clone().expect("keyed input"))
                .or_default()
                .push(count);
        }
    }
    assert_eq!(seqs.len(), totals.len(), "keys missing from the output");
    let mut restores_checked = 0;
    for (key, seq) in &seqs {
        let n = totals[key.as_str()];
        let seen: BTreeSet<u64> = seq.iter().copied().collect();
        assert_eq!(
            seen.len() as u64,
            n,
            "key {key}: counts lost ({} of {n} distinct)",
            seen.len()
        );
        assert_eq!(seen.first(), Some(&1));
        assert_eq!(seen.last(), Some(&n), "key {key}: wrong final count");
        let p = key_partition[key.as_str()];
        assert_eq!(seq[0], 1, "key {key}: first count is {}", seq[0]);
        let mut restart = 0usize;
        for w in seq.windows(2) {
            if w[1] != w[0] + 1 {
                restores_checked += 1;
                let found = (restart + 1..restores.len())
                    .find(|&r| count_before(key, restores[r][&p]) + 1 == w[1]);
                match found {
                    Some(r) => restart = r,
                    None => panic!(
                        "key {key}: after {} came {}, which is no later restart's checkpointed count + 1 (restarts resumed at counts {:?})",
                        w[0],
                        w[1],
                        restores[restart + 1..]
                            .iter()
                            .map(|r| count_before(key, r[&p]) + 1)
                            .collect::<Vec<_>>()
                    ),
                }
            }
        }
    }
    Verdict {
        records: input.len(),
        duplicates: emitted - input.len(),
        restores_checked,
    }
}

/// The model's output for `input` processed once, in order: per key, the
/// counts 1..n.
pub fn expected_counts(input: &[Input]) -> BTreeMap<String, Vec<u64>> {
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for r in input {
        *totals.entry(r.key.clone()).or_default() += 1;
    }
    totals
        .into_iter()
        .map(|(k, n)| (k, (1..=n).collect()))
        .collect()
}
