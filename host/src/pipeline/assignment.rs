//! Which worker runs which partition: Flink's `KafkaTopicPartitionAssigner`.
//!
//! `start = ((javaHash(topic) * 31) & 0x7fffffff) % workers` and partition
//! `p` goes to worker `(start + p) % workers`. Deterministic, the same on
//! every host, and it spreads consecutive partitions of a topic over
//! consecutive workers, so with `workers >= partitions` each worker owns at
//! most one partition of a topic and the surplus workers stay idle.

/// Java's `String.hashCode()`: `s[0]*31^(n-1) + ... + s[n-1]` over UTF-16
/// code units, wrapping at 32 bits.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The worker (0-based) that owns `partition` of `topic`.
pub fn worker_for(topic: &str, partition: i32, workers: usize) -> usize {
    let workers = workers as i64;
    let start = (java_string_hash(topic).wrapping_mul(31) & 0x7fff_ffff) as i64 % workers;
    ((start + partition as i64) % workers) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_matches_known_values() {
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99162322);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
    }

    #[test]
    fn every_partition_has_exactly_one_worker_and_load_is_even() {
        for workers in 1..=8 {
            let mut load = vec![0; workers];
            for p in 0..4 {
                let w = worker_for("words", p, workers);
                assert!(w < workers);
                load[w] += 1;
            }
            let (min, max) = (load.iter().min().unwrap(), load.iter().max().unwrap());
            assert!(max - min <= 1, "{workers} workers: {load:?}");
            if workers >= 4 {
                assert_eq!(load.iter().filter(|&&n| n > 0).count(), 4);
            }
        }
    }
}
