//! The test broker never outlives its test process: not after a normal
//! exit, not after a panic, not after SIGKILL of the process (the runner
//! killed mid-suite). Each case runs `kafka_harness_child`, which starts
//! the shared broker the way every test does, and then checks that the
//! JVM is gone soon after the child is.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The child process, the JVM's pid, and the child's stdout: kept open
/// until the child is gone, so that its later output never meets a closed
/// pipe (which would fail it for the wrong reason).
type Started = (Child, u32, BufReader<std::process::ChildStdout>);

/// Starts the child and reads the JVM's pid from its first line.
fn child(mode: &str) -> Started {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kafka_harness_child"))
        .arg(mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kafka_harness_child");
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    out.read_line(&mut line).expect("read the pid");
    let pid = line
        .strip_prefix("pid ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid from the child: {line:?}"));
    (child, pid, out)
}

fn running(pid: u32) -> bool {
    // A zombie (exited, not yet reaped by init) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2) != Some("Z"))
        .unwrap_or(false)
}

/// Waits (bounded) for the JVM to be gone; says how long it took.
fn assert_gone(pid: u32, case: &str) {
    let since = Instant::now();
    while running(pid) && since.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !running(pid),
        "{case}: the broker JVM {pid} outlived its test process"
    );
    println!(
        "{case}: broker JVM {pid} gone {:?} after its test process",
        since.elapsed()
    );
}

#[test]
fn broker_stops_when_the_test_process_exits() {
    let (mut c, pid, _out) = child("exit");
    assert!(running(pid), "the broker was not running");
    assert!(c.wait().unwrap().success());
    assert_gone(pid, "exit");
}

#[test]
fn broker_stops_when_a_test_panics() {
    let (mut c, pid, _out) = child("panic");
    assert!(!c.wait().unwrap().success());
    assert_gone(pid, "panic");
}

#[test]
fn broker_stops_when_the_runner_is_killed() {
    let (mut c, pid, _out) = child("wait");
    assert!(running(pid), "the broker was not running");
    c.kill().unwrap(); // SIGKILL: no destructor, no exit handler runs
    c.wait().unwrap();
    assert_gone(pid, "SIGKILL");
}
