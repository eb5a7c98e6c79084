//! The `orgmesh` binary: parses the command line and hands off to the node library.

use clap::Parser;
use orgmesh_node::cli::{Cli, Command};
use orgmesh_node::config::Config;

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ORGMESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
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
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping");
        token.cancel();
    });
    node.wait().await;
    Ok(())
}

fn main() {
    let cli = Cli::parse();
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
