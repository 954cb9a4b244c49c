//! `weir-bench`: the end-to-end benchmark (see [`bench`]). A tool, not a
//! product command: run it with
//! `cargo run --release -p weir-bench -- [--bootstrap HOST:PORT] [--records N]`
//! after `cargo xtask plugins` (it runs `running_count.wasm`).

mod bench;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "weir-bench",
    about = "A native consume → produce loop, then Weir with the identity and running-count plugins, then exactly-once; records/s, CPU per million and ratios"
)]
struct Cli {
    #[command(flatten)]
    opts: bench::BenchOptions,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,librdkafka=warn,rdkafka=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(bench::run(cli.opts))?;
    Ok(())
}
