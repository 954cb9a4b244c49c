//! A test process in miniature, for `tests/kafka_harness.rs`: starts the
//! shared broker, prints the JVM's pid and the bootstrap address, then ends
//! the way its argument says (`exit`, `panic`, or `wait` to be killed). The
//! harness must stop the broker in every case. `wait` also serves as a
//! broker for a benchmark run by hand:
//! `cargo run -p weir-e2e --bin kafka_harness_child -- wait`.

use std::io::Write;

fn main() {
    let how = std::env::args().nth(1).unwrap_or_default();
    let broker = weir_e2e::Broker::shared();
    println!("pid {}", broker.pid());
    println!("bootstrap {}", broker.bootstrap());
    std::io::stdout().flush().expect("stdout");
    match how.as_str() {
        "exit" => {}
        "panic" => panic!("a test panicked with the broker running"),
        "wait" => loop {
            std::thread::sleep(std::time::Duration::from_secs(60));
        },
        other => panic!("unknown mode {other:?}: exit | panic | wait"),
    }
}
