//! `petrel`: the command line. Parses arguments and calls into the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

/// jemalloc: less overhead per small allocation than glibc's malloc, which
/// matters when a server holds many idle connections.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use petrel::config::Config;

#[derive(Parser)]
#[command(
    name = "petrel",
    version,
    about = "XMPP server, MQTT 5 broker and OAuth 2 server in one process"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server (embedded defaults without --config).
    Serve {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Check the config (and the certificate files it names), then exit:
        /// 0 when good, 2 when not.
        #[arg(long)]
        check_config: bool,
    },
    /// Run an admin command (against the running server, or the store if none runs).
    Ctl {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The command and its arguments; `petrel ctl help` lists them.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, ExitCode> {
    match path {
        None => Ok(Config::default()),
        Some(p) => Config::load(p).map_err(|e| {
            eprintln!("{e}");
            ExitCode::from(2)
        }),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Files, the store and the admin socket: the server's user only.
    petrel::data_dir::private_umask();
    match cli.command {
        Cmd::Serve {
            config,
            check_config,
        } => {
            let path = config.clone();
            let config = match load_config(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if check_config {
                return check(&config, path.as_deref());
            }
            petrel::logging::init(&config.log_level, config.log_format);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(serve(config))
        }
        Cmd::Ctl { config, args } => {
            let config = match load_config(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            ctl(config, args)
        }
    }
}

/// `serve --check-config`: the config parsed; the certificate files it
/// names are read and checked to fit (a development certificate is not
/// made here: that happens at the first start).
fn check(config: &Config, path: Option<&std::path::Path>) -> ExitCode {
    let tls = config.listen.iter().any(|l| l.tls || l.starttls);
    if tls && !config.certfiles.is_empty() {
        if let Err(e) = petrel::tls::acceptor(&config.certfiles, &config.data_dir, &config.hosts) {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    }
    match path {
        Some(p) => println!("config OK: {}", p.display()),
        None => println!("config OK: the embedded defaults"),
    }
    ExitCode::SUCCESS
}

async fn serve(config: Config) -> ExitCode {
    let server = match petrel::server::Server::bind(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("petrel: {e}");
            return ExitCode::from(1);
        }
    };
    for (module, addr) in server.listeners() {
        println!("listening {module} {addr}");
    }
    println!("ready");
    match server.run(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("petrel: {e}");
            ExitCode::from(1)
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn ctl(config: Config, args: Vec<String>) -> ExitCode {
    if args.is_empty() || args[0] == "help" || args[0] == "--help" {
        print!("{}", petrel::ctl::help_text());
        return if args.is_empty() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    if let Err(usage) = petrel::ctl::lookup(&args) {
        eprintln!("{}", usage.0);
        return ExitCode::from(2);
    }
    let reply = match petrel::ctl::socket::ask(&config.data_dir, &args) {
        Ok(Some(reply)) => reply,
        Ok(None) => match offline(&config, &args) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("petrel ctl: {e}");
                return ExitCode::from(1);
            }
        },
        Err(e) => {
            eprintln!("petrel ctl: admin socket: {e}");
            return ExitCode::from(1);
        }
    };
    match reply.code {
        0 => {
            if !reply.output.is_empty() {
                println!("{}", reply.output);
            }
            ExitCode::SUCCESS
        }
        code => {
            eprintln!("{}", reply.output);
            ExitCode::from(code.clamp(1, 255) as u8)
        }
    }
}

/// No server runs on this config: open the store and run the command here.
fn offline(config: &Config, args: &[String]) -> Result<petrel::ctl::socket::Reply, String> {
    petrel::data_dir::prepare(&config.data_dir)
        .map_err(|e| format!("data_dir {}: {e}", config.data_dir.display()))?;
    let store =
        petrel::store::Store::open(&config.store, &config.data_dir).map_err(|e| e.to_string())?;
    petrel::data_dir::tighten(&config.data_dir)
        .map_err(|e| format!("data_dir {}: {e}", config.data_dir.display()))?;
    let auth = petrel::auth::AuthCore::new(store.clone(), config).map_err(|e| e.to_string())?;
    let ctx = petrel::ctl::CtlContext {
        auth: Arc::new(auth),
        live: None,
    };
    let reply = petrel::ctl::socket::run(&ctx, args);
    store.barrier_blocking().map_err(|e| e.to_string())?;
    Ok(reply)
}
