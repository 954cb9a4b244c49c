//! Several `weir` processes in one consumer group (`source.assignment =
//! "group"`), exactly-once, each partition's state following it from
//! process to process through the shared checkpoint directory.
//!
//! Three processes share 12 partitions while input keeps arriving; one is
//! killed with SIGKILL mid-stream (its partitions move to the others with
//! their state), a fourth joins (partitions move to it), and one stops
//! with SIGTERM (it commits and leaves). Judged with `read_committed`
//! against the model: every key's counts are exactly 1, 2, ..., n, so
//! nothing was lost, nothing counted twice, and every moved partition
//! resumed from the state of its last committed offset.
//!
//! Members on different module versions: a partition moving to a newer
//! module is converted through portable state, one moving back to an
//! older module is refused (that member stops), never restored as the
//! wrong module's memory image.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};
use weir_e2e::model::expected_counts;
use weir_e2e::s3::S3Server;
use weir_e2e::{Broker, Input, counts_by_key, repo_root, topic};

const PARTITIONS: i32 = 12;
const KEYS: usize = 240;
const BUCKET: &str = "weir";

struct Group {
    src: String,
    dst: String,
    root: tempfile::TempDir,
    /// `exactly-once` or `at-least-once`.
    semantics: &'static str,
    /// The shared checkpoint store: this S3-compatible server's bucket
    /// `weir`, or (`None`) a local directory all members can see.
    s3: Option<S3Server>,
}

impl Group {
    /// A group on new topics `<prefix>-in` and `<prefix>-out`, 12
    /// partitions each.
    fn new(broker: &Broker, prefix: &str, semantics: &'static str) -> Group {
        let group = Group {
            src: topic(&format!("{prefix}-in")),
            dst: topic(&format!("{prefix}-out")),
            root: tempfile::tempdir().unwrap(),
            semantics,
            s3: None,
        };
        broker.create_topic(&group.src, PARTITIONS).unwrap();
        broker.create_topic(&group.dst, PARTITIONS).unwrap();
        group
    }

    /// The same, its checkpoints in an S3-compatible object store.
    fn on_s3(broker: &Broker, prefix: &str, semantics: &'static str) -> Group {
        let s3 = S3Server::start().unwrap();
        s3.create_bucket(BUCKET).unwrap();
        Group {
            s3: Some(s3),
            ..Group::new(broker, prefix, semantics)
        }
    }

    /// The `[checkpoint]` lines that name the store.
    fn store_toml(&self) -> String {
        match &self.s3 {
            Some(s3) => s3.checkpoint_toml(BUCKET, &self.src),
            None => format!(
                "directory = \"{}\"\n",
                self.root.path().join("ck").display()
            ),
        }
    }

    /// The state files in the object store.
    fn stored_state_files(&self) -> usize {
        let s3 = self.s3.as_ref().expect("a group on S3");
        let keys = s3.keys(BUCKET).unwrap();
        keys.iter().filter(|k| k.ends_with(".snap")).count()
    }

    /// Starts member `n` (its own folder; the checkpoint directory is shared).
    fn spawn(&self, broker: &Broker, n: usize) -> Child {
        self.spawn_with(broker, n, "running_count.wasm")
    }

    /// The same, running `plugin`.
    fn spawn_with(&self, broker: &Broker, n: usize, plugin: &str) -> Child {
        let dir = self.member_dir(n);
        std::fs::create_dir_all(&dir).unwrap();
        let text = format!(
            r#"[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{dst}-group"
[kafka.consumer_options]
"auto.offset.reset" = "earliest"
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
[source]
topics = ["{src}"]
assignment = "group"
[sink]
topics = ["{dst}"]
semantics = "{semantics}"
transactional_id_prefix = "{dst}"
[pipeline]
plugins_dir = "{plugins}"
plugin = "{plugin}"
parallelism = 2
[checkpoint]
enabled = true
interval = "1s"
{store}[status]
interval = "0s"
"#,
            bootstrap = broker.bootstrap(),
            src = self.src,
            dst = self.dst,
            plugins = repo_root().join("plugins").display(),
            store = self.store_toml(),
            semantics = self.semantics,
        );
        let config = dir.join("job.toml");
        std::fs::write(&config, text).unwrap();
        weir_e2e::spawn_weir(&config, &dir, "info")
    }

    /// Writes input round `round` of `per_round` records.
    fn produce_round(&self, broker: &Broker, round: usize, per_round: usize) {
        broker
            .produce(
                &self.src,
                &input(round * per_round, (round + 1) * per_round),
            )
            .unwrap();
    }

    fn member_dir(&self, n: usize) -> PathBuf {
        self.root.path().join(format!("member-{n}"))
    }

    fn log(&self, n: usize) -> String {
        weir_e2e::weir_log(&self.member_dir(n))
    }
}

/// Input records `from..to`: key `k<i>` always on partition `i % 12`.
fn input(from: usize, to: usize) -> Vec<Input> {
    (from..to)
        .map(|i| {
            let k = (i * 7919) % KEYS;
            Input {
                partition: (k as i32) % PARTITIONS,
                key: format!("k{k}"),
                value: format!("v{i}"),
                timestamp: None,
            }
        })
        .collect()
}

/// The source partitions a member's log says it held last: assigned by
/// the group and not removed since.
fn held(log: &str, src: &str) -> Vec<i32> {
    let mut held = std::collections::BTreeSet::new();
    for line in log.lines() {
        let Some(p) = line
            .split(&format!("partition={src}/"))
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|d| d.parse().ok())
        else {
            continue;
        };
        if line.contains("assigned by the group") {
            held.insert(p);
        } else if line.contains("partition removed") {
            held.remove(&p);
        }
    }
    held.into_iter().collect()
}

fn alive(child: &mut Child, group: &Group, n: usize) {
    assert!(
        child.try_wait().unwrap().is_none(),
        "member {n} ended early:\n{}",
        group.log(n)
    );
}

/// Exactly-once, the state moving through an S3-compatible object store.
#[test]
fn partitions_and_their_state_move_between_processes_exactly_once() {
    let group = Group::on_s3(Broker::shared(), "group", "exactly-once");
    moves(&group);
    let s3 = group.s3.as_ref().unwrap();
    eprintln!(
        "object-store requests of the whole run, by method: {:?}",
        s3.requests()
    );
    assert!(group.stored_state_files() > 0, "state files in the bucket");
    assert!(
        !group.root.path().join("ck").exists(),
        "nothing written to a local checkpoint directory"
    );
}

/// The same moves at-least-once: offsets commit to the group after each
/// partition's state file, and the group refuses a departed member's
/// commit. Output may repeat after a move, but nothing is lost, and every
/// key's state ends at exactly its record count (state and offset moved
/// together, never a record counted twice into the state).
#[test]
fn partitions_and_their_state_move_between_processes_at_least_once() {
    moves(&Group::new(Broker::shared(), "group", "at-least-once"));
}

/// Three members, then SIGKILL, a join and a SIGTERM, while input arrives;
/// judged by the group's semantics.
fn moves(group: &Group) {
    weir_e2e::init_tracing();
    let broker = Broker::shared();
    let semantics = group.semantics;
    let mut members: Vec<Option<Child>> = (0..3).map(|n| Some(group.spawn(broker, n))).collect();

    // Input arrives in rounds of 1,000 records, every 300 ms, for the
    // whole run; the membership changes in between.
    let (rounds, per_round) = (80, 1000);
    let group_id = format!("{}-group", group.dst);
    // The killed member's partitions, their committed offsets when it
    // died, and how long until every one of them committed again.
    let mut moved: Option<(Vec<i32>, Vec<Option<i64>>, Instant)> = None;
    let mut moved_after = None;
    for round in 0..rounds {
        group.produce_round(broker, round, per_round);
        match round {
            20 => {
                let mut victim = members[0].take().unwrap();
                victim.kill().unwrap();
                let killed = Instant::now();
                victim.wait().unwrap();
                // Read once the victim is dead (a commit of its own just
                // before would otherwise count as its partitions moving);
                // a transactional commit it left pending is waited for.
                let at_kill = (0..40)
                    .find_map(|_| {
                        let got = broker.committed(&group_id, &group.src, PARTITIONS).ok();
                        if got.is_none() {
                            std::thread::sleep(Duration::from_millis(500));
                        }
                        got
                    })
                    .expect("the group's committed offsets");
                let partitions = held(&group.log(0), &group.src);
                eprintln!(
                    "round {round}: member 0 killed (SIGKILL) holding partitions {partitions:?}"
                );
                assert!(
                    !partitions.is_empty(),
                    "member 0 held nothing:\n{}",
                    group.log(0)
                );
                moved = Some((partitions, at_kill, killed));
            }
            35 => {
                members.push(Some(group.spawn(broker, 3)));
                eprintln!("round {round}: member 3 joined");
            }
            50 => {
                let mut leaving = members[1].take().unwrap();
                assert_eq!(unsafe { libc::kill(leaving.id() as i32, libc::SIGTERM) }, 0);
                let status = weir_e2e::wait_for(&mut leaving, Duration::from_secs(30)).unwrap();
                assert!(status.success(), "member 1 stop:\n{}", group.log(1));
                eprintln!("round {round}: member 1 stopped (SIGTERM)");
            }
            _ => {}
        }
        for (n, m) in members.iter_mut().enumerate() {
            if let Some(child) = m {
                alive(child, group, n);
            }
        }
        if let (Some((partitions, before, killed)), None) = (&moved, moved_after)
            && let Ok(now) = broker.committed(&group_id, &group.src, PARTITIONS)
            && partitions
                .iter()
                .all(|&p| now[p as usize] > before[p as usize])
        {
            moved_after = Some(killed.elapsed());
        }
        std::thread::sleep(Duration::from_millis(300));
    }

    let all = input(0, rounds * per_round);
    let want = expected_counts(&all);
    let got = wait_for_counts(broker, group, &want);
    let written: usize = broker
        .read_all(&group.dst, PARTITIONS)
        .unwrap()
        .iter()
        .map(Vec::len)
        .sum();
    for m in members.iter_mut().flatten() {
        let _ = m.kill();
        let _ = m.wait();
    }
    let logs: String = (0..4)
        .map(|n| format!("--- member {n} ---\n{}\n", group.log(n)))
        .collect();
    eprintln!(
        "group, {semantics}: {} input records; {} output records written in all, {} more than the input (replays after the kill and the moves: aborted under exactly-once, visible at-least-once); from the kill to every moved partition committing again: {}",
        all.len(),
        written,
        written.saturating_sub(all.len()),
        moved_after.map_or("not seen during the input".into(), |d| format!(
            "{:.1} s",
            d.as_secs_f64()
        ))
    );
    let wrong = judge(semantics, &want, &got);
    assert!(
        wrong.is_empty(),
        "keys whose counts break the {semantics} model (key, want n, got): {wrong:?}\n{}",
        &logs[logs.len().saturating_sub(20_000)..]
    );
    assert!(
        group.log(3).contains("assigned by the group"),
        "the member that joined got partitions:\n{}",
        group.log(3)
    );
}

/// Keys whose output breaks the model: exactly-once, counts 1..n exactly
/// (read committed); at-least-once, counts that end at n, cover 1..n,
/// never exceed n and never jump past the highest count so far by more
/// than one: a replay may step back, and a zombie's stale counts may
/// interleave with its successor's (`96, 34, 35, 97`), but a count that
/// jumps ahead means state that ran ahead of its output.
fn judge(
    semantics: &str,
    want: &std::collections::BTreeMap<String, Vec<u64>>,
    got: &std::collections::BTreeMap<String, Vec<u64>>,
) -> Vec<(String, usize, Option<Vec<u64>>)> {
    let ok = |w: &Vec<u64>, g: &Vec<u64>| {
        if semantics == "exactly-once" {
            return w == g;
        }
        let n = w.len() as u64;
        let covered: std::collections::BTreeSet<u64> = g.iter().copied().collect();
        g.last() == Some(&n)
            && covered.len() as u64 == n
            && g.iter().all(|&c| (1..=n).contains(&c))
            && first_jump(g).is_none()
    };
    want.iter()
        .filter(|(k, w)| got.get(*k).is_none_or(|g| !ok(w, g)))
        .map(|(k, w)| {
            (
                k.clone(),
                w.len(),
                got.get(k).map(|g| around_the_break(w.len() as u64, g)),
            )
        })
        .take(5)
        .collect()
}

/// Where a count first goes past the highest before it by more than one.
fn first_jump(got: &[u64]) -> Option<usize> {
    let mut highest = 0;
    got.iter().position(|&c| {
        let jumps = c > highest + 1;
        highest = highest.max(c);
        jumps
    })
}

/// The counts around where `got` first breaks the model of `n` records:
/// a jump ahead or a count past `n`, or else its last 8.
fn around_the_break(n: u64, got: &[u64]) -> Vec<u64> {
    let at = first_jump(got)
        .or_else(|| got.iter().position(|&c| c > n))
        .unwrap_or(got.len().saturating_sub(8));
    got[at.saturating_sub(4)..(at + 4).min(got.len())].to_vec()
}

/// Members on different module versions, exactly-once: a partition that
/// moves from a v1 member to a v2 member is converted (portable state);
/// one that moves from a v2 member back to a v1 member is refused, never
/// restored as an image into the wrong module: the v1 member stops, naming
/// the format it cannot read, and the group gives its partitions to a
/// member that can. Every count is exactly the model.
#[test]
fn members_on_different_module_versions_convert_or_refuse_never_misrestore() {
    let broker = Broker::shared();
    let group = Group::new(broker, "versions", "exactly-once");
    let per_round = 500;
    let mut round = 0;
    let mut feed = |rounds: usize| {
        for _ in 0..rounds {
            group.produce_round(broker, round, per_round);
            round += 1;
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let mut v1 = group.spawn_with(broker, 0, "running_count.wasm");
    feed(10);
    let mut v2 = group.spawn_with(broker, 1, "running_count_v2.wasm");
    feed(20);
    alive(&mut v1, &group, 0);
    assert!(
        group
            .log(1)
            .contains("state taken over from another plugin module"),
        "the v2 member converted nothing:\n{}",
        group.log(1)
    );
    // v2 leaves: its partitions (state now in format 2) go back to v1.
    assert_eq!(unsafe { libc::kill(v2.id() as i32, libc::SIGTERM) }, 0);
    let status = weir_e2e::wait_for(&mut v2, Duration::from_secs(30)).unwrap();
    assert!(status.success(), "v2 stop:\n{}", group.log(1));
    let status = weir_e2e::wait_for(&mut v1, Duration::from_secs(60)).unwrap();
    let log = group.log(0);
    assert_eq!(status.code(), Some(1), "v1 took v2's state:\n{log}");
    assert!(
        log.contains("weir_state_import of format version 2")
            && log.contains("running-count reads state format 1, not 2")
            && log.contains("stopping the job"),
        "v1's refusal does not say why:\n{log}"
    );
    // A v2 member takes everything over: v1's partitions converted, v2's
    // restored as they were.
    let mut last = group.spawn_with(broker, 2, "running_count_v2.wasm");
    feed(10);
    let want = expected_counts(&input(0, round * per_round));
    let got = wait_for_counts(broker, &group, &want);
    let _ = last.kill();
    let _ = last.wait();
    let wrong = judge("exactly-once", &want, &got);
    assert!(
        wrong.is_empty(),
        "keys whose counts break the model: {wrong:?}\n{}",
        group.log(2)
    );
    eprintln!(
        "mixed versions: {} records; v1 -> v2 converted, v2 -> v1 refused, counts exact",
        round * per_round
    );
}

/// Reads the output until it satisfies the model (or 120 s pass).
fn wait_for_counts(
    broker: &Broker,
    group: &Group,
    want: &std::collections::BTreeMap<String, Vec<u64>>,
) -> std::collections::BTreeMap<String, Vec<u64>> {
    let started = Instant::now();
    loop {
        // Exactly-once: while a dead member's transaction is still open
        // (until the broker aborts it), read_committed stops at it, and
        // the reader's cross-check with the raw log disagrees: wait and
        // read again.
        let read = if group.semantics == "exactly-once" {
            broker.read_committed(&group.dst, PARTITIONS)
        } else {
            broker.read_all(&group.dst, PARTITIONS)
        };
        if started.elapsed() > Duration::from_secs(120) {
            return counts_by_key(&read.unwrap());
        }
        if let Ok(parts) = read {
            let got = counts_by_key(&parts);
            if judge(group.semantics, want, &got).is_empty() {
                return got;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A member paused (SIGSTOP) past its session: the group gives its
/// partitions to the other member, which restores them from the last
/// commit and goes on. Resumed, the zombie still holds an open transaction
/// and believes it owns the partitions; the group's generation in its
/// commit (and, after `transaction.timeout.ms`, the broker's abort) fences
/// it. Then it is killed. Judged like the test above: exact counts in
/// `read_committed`, so none of the zombie's output became visible.
#[test]
fn a_paused_member_is_fenced_and_none_of_its_output_becomes_visible() {
    zombie(Group::new(Broker::shared(), "zombie", "exactly-once"));
}

/// The zombie at-least-once: its late output may be visible (duplicates
/// are allowed), but its offset commits are refused by the group, so its
/// partitions' new owner never restores its state, and nothing is lost.
/// The state files are in an S3-compatible object store: the zombie's
/// late files there are never read (the group's commits name the writer
/// of each committed offset's state).
#[test]
fn a_paused_member_loses_nothing_at_least_once() {
    zombie(Group::on_s3(Broker::shared(), "zombie", "at-least-once"));
}

fn zombie(group: Group) {
    weir_e2e::init_tracing();
    let broker = Broker::shared();
    let mut zombie = group.spawn(broker, 0);
    let mut other = group.spawn(broker, 1);
    let (rounds, per_round) = (70, 500);
    for round in 0..rounds {
        group.produce_round(broker, round, per_round);
        match round {
            15 => {
                assert_eq!(unsafe { libc::kill(zombie.id() as i32, libc::SIGSTOP) }, 0);
                eprintln!(
                    "round {round}: member 0 paused (SIGSTOP) holding {:?}",
                    held(&group.log(0), &group.src)
                );
            }
            // About 9 s later: past the 6 s session, within the 15 s
            // transaction timeout.
            45 => {
                assert_eq!(unsafe { libc::kill(zombie.id() as i32, libc::SIGCONT) }, 0);
                eprintln!(
                    "round {round}: member 0 resumed; member 1 holds {:?}",
                    held(&group.log(1), &group.src)
                );
            }
            60 => {
                zombie.kill().unwrap();
                zombie.wait().unwrap();
                eprintln!("round {round}: member 0 killed");
            }
            _ => {}
        }
        alive(&mut other, &group, 1);
        std::thread::sleep(Duration::from_millis(300));
    }
    let want = expected_counts(&input(0, rounds * per_round));
    let got = wait_for_counts(broker, &group, &want);
    let _ = other.kill();
    let _ = other.wait();
    let zombie_log = group.log(0);
    let after_resume: Vec<&str> = zombie_log
        .lines()
        .filter(|l| {
            ["fenced", "revoked", "aborted", "failed", "generation"]
                .iter()
                .any(|w| l.contains(w))
        })
        .take(8)
        .collect();
    eprintln!("the zombie's log on waking:\n{}", after_resume.join("\n"));
    let wrong = judge(group.semantics, &want, &got);
    assert!(
        wrong.is_empty(),
        "keys whose counts break the model (key, want n, got): {wrong:?}\n--- zombie ---\n{}\n--- other ---\n{}",
        &zombie_log[zombie_log.len().saturating_sub(10_000)..],
        group.log(1)
    );
    assert_eq!(got.len(), want.len());
}

/// The object store stops answering (its server paused, SIGSTOP) for 12 s
/// while two members checkpoint every second, exactly-once: the state
/// writes time out and are retried, past their 10 s budget those
/// checkpoints fail and their transactions abort, the tasks roll back and
/// retry, and once the store answers again the job goes on. No member dies; the output is exactly the model's.
#[test]
fn checkpoints_fail_and_are_retried_while_the_object_store_is_away() {
    weir_e2e::init_tracing();
    let broker = Broker::shared();
    let group = Group::on_s3(broker, "store-away", "exactly-once");
    let s3 = group.s3.as_ref().unwrap();
    let mut members = [group.spawn(broker, 0), group.spawn(broker, 1)];
    let (rounds, per_round) = (70, 500);
    for round in 0..rounds {
        group.produce_round(broker, round, per_round);
        match round {
            15 => {
                s3.pause();
                eprintln!("round {round}: the S3 server paused (SIGSTOP)");
            }
            // About 12 s later.
            52 => {
                s3.resume();
                eprintln!("round {round}: the S3 server resumed");
            }
            _ => {}
        }
        for (n, m) in members.iter_mut().enumerate() {
            alive(m, &group, n);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let want = expected_counts(&input(0, rounds * per_round));
    let got = wait_for_counts(broker, &group, &want);
    for (n, m) in members.iter_mut().enumerate() {
        alive(m, &group, n);
        let _ = m.kill();
        let _ = m.wait();
    }
    let logs = format!("{}\n{}", group.log(0), group.log(1));
    let count = |what: &str| logs.lines().filter(|l| l.contains(what)).count();
    let (retried, failed) = (
        count("object_store::client::retry"),
        count("checkpoint store: s3://"),
    );
    eprintln!(
        "S3 away for 12 s: {retried} store requests retried, {failed} log lines of checkpoints failed by the store; {} state files in the bucket",
        group.stored_state_files()
    );
    assert!(
        failed > 0,
        "no checkpoint failed while the store was away:\n{logs}"
    );
    let wrong = judge(group.semantics, &want, &got);
    assert!(
        wrong.is_empty(),
        "keys whose counts break the model (key, want n, got): {wrong:?}\n{}",
        &logs[logs.len().saturating_sub(20_000)..]
    );
}

/// A bucket that does not exist stops a member at start, within its
/// request budget, with the store's URL and the store's reason.
#[test]
fn a_missing_bucket_stops_the_job_at_start_naming_it() {
    let broker = Broker::shared();
    let s3 = S3Server::start().unwrap();
    let group = Group {
        s3: Some(s3),
        ..Group::new(broker, "no-bucket", "exactly-once")
    };
    let mut member = group.spawn(broker, 0);
    let started = Instant::now();
    let status = weir_e2e::wait_for(&mut member, Duration::from_secs(60)).unwrap();
    let log = group.log(0);
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!("s3://{BUCKET}/{}/eos", group.src)) && log.contains("NoSuchBucket"),
        "{log}"
    );
    eprintln!(
        "a missing bucket stopped the job after {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
