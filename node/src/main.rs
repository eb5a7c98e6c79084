//! The `orgmesh` binary: parses the command line and hands off to the node library.

use clap::Parser;
use orgmesh_node::cli::{Cli, Command};
use orgmesh_node::config::Config;

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ORGMESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p=warn"));
    // Colours only for a terminal: journald, files and log shippers get plain text.
    // No internal error reports: when stderr breaks (a log pipe whose reader died) the layer would
    // report it with eprintln!, which panics, and a panic in the SIGTERM task would leave the node
    // deaf to SIGTERM. Losing log lines is the lesser harm.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .log_internal_errors(false);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn up(config: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config.as_deref(), |k| std::env::var(k).ok())?;
    let node = orgmesh_node::run::start(config).await?;
    let token = node.shutdown_token();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        // Stopped from inside (a fatal error in one of its parts).
        _ = token.cancelled() => {
            node.stop().await;
            return Ok(());
        }
    }
    // First signal: a graceful stop. A second one stops at once (results stay durable).
    tracing::info!(grace_s = node.stop_grace.as_secs(), "stopping gracefully (signal again to stop now)");
    tokio::select! {
        report = node.stop_gracefully() => {
            tracing::info!(handed_back = report.handed_back, undelivered = report.undelivered, "stopped");
        }
        _ = tokio::signal::ctrl_c() => tracing::warn!("stopping now"),
        _ = term.recv() => tracing::warn!("stopping now"),
    }
    // Waits for the event loop (which stops its processes) and the API to finish.
    node.stop().await;
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    if let Command::Completions { shell } = &cli.command {
        orgmesh_node::cli::completions(*shell, &mut std::io::stdout());
        return;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async {
        let result = match &cli.command {
            Command::Init { .. } => orgmesh_node::cli::init(&cli.command),
            Command::Token { command } => orgmesh_node::cli::token(command, cli.json),
            Command::Receipt { command } => return orgmesh_node::cli::receipt(command, cli.json),
            Command::Up { config } => {
                init_logging(&cli.log_format);
                up(config.clone()).await
            }
            Command::Demo { nodes, api_port, p2p_port } => {
                init_logging(&cli.log_format);
                orgmesh_node::demo::run(*nodes, *api_port, *p2p_port).await
            }
            _ => return orgmesh_node::cli::run_client(&cli).await,
        };
        match result {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        }
    });
    std::process::exit(code);
}
