//! The `otpd` command line: thin clap front over [`otpd::config`] and [`otpd::server`].
//!
//! Exit codes: 0 success, 2 configuration error (or bad usage), 1 any other failure.
//! Logs go to stderr (filter with `RUST_LOG`, default `info`); stdout carries only
//! what a script reads: the listening line, created keys, JSON output.

/// mimalloc, chosen over glibc malloc for the hot path (see `BENCHMARKS.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use otpd::config::{Config, ConfigError, LogFormat};
use otpd::echo::EchoOptions;
use otpd::server::{self, ServerError};
use otpd_actors::{NewApp, Runtime, StorageError};

/// otpd: a self-hosted one-time passcode daemon.
#[derive(Debug, Parser)]
#[command(name = "otpd", version, about, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: the HTTP API on `server.listen` until SIGTERM/SIGINT.
    Serve(ConfigArg),
    /// Create or list apps in the configured database (works while the daemon runs).
    Apps {
        #[command(subcommand)]
        command: AppsCommand,
    },
    /// Write an online, consistent copy of the live database to a new file (works
    /// while the daemon runs; reads only). Prints a JSON summary.
    Backup(BackupArgs),
    /// Load and validate the configuration; print a summary with secrets redacted.
    CheckConfig(ConfigArg),
    /// A local receiver for callbacks, webhooks and delivery reports: prints each
    /// request and whether its signatures verify (no configuration, no database).
    Echo(EchoArgs),
}

#[derive(Debug, Args)]
struct BackupArgs {
    /// The file to create (mode 0600); refused if it exists, unless `--force`.
    #[arg(long, value_name = "FILE")]
    to: PathBuf,
    /// Replace FILE if it exists (atomically, once the new copy is complete).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Debug, Args)]
struct EchoArgs {
    /// Address to listen on; port 0 picks a free port (the real one is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// The callback secret, webhook secret (`whsec_…`) or delivery-report secret to
    /// verify signatures with; without it signatures are shown but not checked.
    #[arg(long, value_name = "S")]
    secret: Option<String>,
    /// Answer every request with this HTTP status instead of 200 (to watch retries).
    #[arg(long, value_name = "CODE", default_value_t = 200,
          value_parser = clap::value_parser!(u16).range(200..=599))]
    status: u16,
    /// `delivery.header_prefix` of the sending otpd.
    #[arg(long, value_name = "PREFIX", default_value = "X-Otpd")]
    header_prefix: String,
}

#[derive(Debug, Subcommand)]
enum AppsCommand {
    /// Create an app; prints its app_id, app_key and API key (shown once) as JSON.
    Create {
        /// Human name of the app.
        #[arg(long)]
        name: String,
        /// Public app key (3–64 of A-Z a-z 0-9 _ -); generated when absent.
        #[arg(long)]
        app_key: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List apps as JSON lines (no secrets).
    List(ConfigArg),
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// TOML configuration file; built-in defaults and OTPD_* variables apply without it.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ConfigArg {
    fn load(&self) -> Result<Config, CliError> {
        Config::load(self.config.as_deref()).map_err(CliError::Config)
    }
}

/// A failure and its exit code.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("configuration error: {0}")]
    Config(ConfigError),
    #[error("{0}")]
    Server(#[from] ServerError),
    #[error("{0}")]
    Runtime(#[from] otpd_actors::Error),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("echo: {0}")]
    Echo(std::io::Error),
    #[error("backup: {0}")]
    Backup(#[from] otpd::backup::BackupError),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) => 2,
            CliError::Server(e) => e.exit_code(),
            CliError::Runtime(otpd_actors::Error::Validation(_)) => 2,
            CliError::Runtime(_)
            | CliError::Storage(_)
            | CliError::Echo(_)
            | CliError::Backup(_) => 1,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only the daemon reads `[log]`; a configuration error is reported (in text)
    // by the load below.
    let log_format = match &cli.command {
        Command::Serve(arg) => arg.load().map(|c| c.log.format).unwrap_or_default(),
        _ => LogFormat::Text,
    };
    // Held to the end of main: dropping it writes out the lines still queued.
    let _log = otpd::logging::init(log_format);
    let result = match cli.command {
        Command::Serve(arg) => arg
            .load()
            .and_then(|config| in_system(async move { Ok(server::serve(config).await?) })),
        Command::CheckConfig(arg) => arg.load().map(|config| {
            println!("configuration OK");
            print!("{}", config.summary());
        }),
        Command::Apps {
            command:
                AppsCommand::Create {
                    name,
                    app_key,
                    config,
                },
        } => config
            .load()
            .and_then(|config| in_system(create_app(config, name, app_key))),
        Command::Apps {
            command: AppsCommand::List(arg),
        } => arg.load().and_then(|config| in_system(list_apps(config))),
        Command::Backup(args) => args.config.load().and_then(|config| {
            let summary = otpd::backup::run(&otpd::backup::BackupOptions {
                source: config.storage.path.clone(),
                to: args.to,
                force: args.force,
            })?;
            println!("{}", serde_json::to_string(&summary).unwrap_or_default());
            Ok(())
        }),
        Command::Echo(args) => in_system(async move {
            otpd::echo::run(EchoOptions {
                listen: args.listen,
                secret: args.secret,
                status: args.status,
                header_prefix: args.header_prefix,
            })
            .await
            .map_err(CliError::Echo)
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otpd: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs `fut` inside an actix `System` (the runtime's actors need one).
fn in_system<F>(fut: F) -> Result<(), CliError>
where
    F: std::future::Future<Output = Result<(), CliError>>,
{
    actix_rt::System::new().block_on(fut)
}

async fn create_app(config: Config, name: String, app_key: Option<String>) -> Result<(), CliError> {
    let runtime = Runtime::builder(config.runtime_config())
        .recover(false)
        .start()
        .await?;
    let created = runtime
        .create_app(NewApp {
            name,
            app_key,
            ..NewApp::default()
        })
        .await;
    runtime.shutdown().await;
    let created = created?;
    let out = serde_json::json!({
        "app_id": created.app.app_id,
        "app_key": created.app.app_key,
        "name": created.app.name,
        "key_id": created.key_id,
        "api_key": created.api_key,
    });
    println!("{out}");
    eprintln!("otpd: the api_key above is shown once; store it now");
    Ok(())
}

/// Lists apps straight from the database file (see [`otpd_actors::read_apps`]): no
/// actors, no recovery, no writes, so it never disturbs a running daemon.
async fn list_apps(config: Config) -> Result<(), CliError> {
    let path = config.storage.path.clone();
    let apps = actix_rt::task::spawn_blocking(move || otpd_actors::read_apps(&path))
        .await
        .map_err(|e| StorageError::Sqlite(format!("listing apps: {e}")))?;
    for app in apps? {
        let mut line = serde_json::to_value(&app).unwrap_or_default();
        // Test numbers carry fixed codes: list the numbers, not the codes.
        if let Some(settings) = line.get_mut("settings") {
            let numbers: Vec<&String> = app.settings.test_numbers.keys().collect();
            settings["test_numbers"] = serde_json::json!(numbers);
        }
        println!("{line}");
    }
    Ok(())
}
