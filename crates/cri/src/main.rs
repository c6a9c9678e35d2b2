//! berthd: berth's Kubernetes CRI v1 server. Serves RuntimeService and ImageService on a Unix
//! socket (kubelet's and crictl's `--runtime-endpoint unix:///...`) until SIGTERM or SIGINT.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use berth_cri::config::CriConfig;
use berth_cri::proto::image_service_server::ImageServiceServer;
use berth_cri::proto::runtime_service_server::RuntimeServiceServer;
use berth_cri::service::{Cri, Settings};
use berth_cri::streaming::{Server as StreamServer, StreamConfig};
use berth_cri::{paths, socket, Error, Result};
use berth_engine::Engine;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

/// How long requests still in flight at SIGTERM/SIGINT may take before their connections are
/// closed under them (server streams such as GetContainerEvents never end on their own).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(name = "berthd", version, about = "berthd: berth's Kubernetes CRI v1 server (kubelet, crictl)")]
struct Args {
    /// Store root (default: $BERTH_ROOT, else /var/lib/berth)
    #[arg(long)]
    root: Option<PathBuf>,
    /// Configuration file (default: $BERTH_CONFIG, else /etc/berth/berth.toml)
    #[arg(long)]
    config: Option<PathBuf>,
    /// The socket to serve, unix:///PATH (default: [cri] listen, else berthd.sock in the run
    /// root: /run/berth for the default store, <root>/run for another, or [engine] run-root)
    #[arg(long, value_name = "unix:///PATH")]
    listen: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berthd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let root = paths::store_root(args.root.as_deref());
    let config = paths::config_file(args.config.as_deref());
    let mut engine =
        Engine::open(&root, config.as_deref()).map_err(|e| Error::new(format!("opening the store: {e}")))?;
    let origin = config.clone().unwrap_or_else(|| PathBuf::from(paths::DEFAULT_CONFIG));
    let cri_config = CriConfig::from_table(engine.store.config.cri.as_ref(), &origin)?;
    engine.exit_command = Some(exit_command(&engine, config.as_deref())?);
    let socket_path = match args.listen.as_deref().or(cri_config.listen.as_deref()) {
        Some(l) => paths::parse_listen(l)?,
        None => engine.run_root.join(paths::SOCKET_NAME),
    };
    // Bound before the async runtime starts any thread: binding sets the umask.
    let (listener, guard) = socket::bind(&socket_path)?;
    if let Some(dirs) = &cri_config.cni_plugin_dirs {
        engine.config.cni_plugin_dirs = Some(dirs.clone());
    }
    engine.pod_cni_conf_dir = cri_config.cni_conf_dir.clone();
    if let Some(h) = &cri_config.default_runtime_handler {
        engine.runtime(Some(h)).map_err(|e| Error::new(format!("configuration: cri.default-runtime-handler: {e}")))?;
    }
    // Only the berthd holding the socket cleans up what a killed one left half made.
    for note in engine.sandbox_recover() {
        eprintln!("berthd: {note}");
    }
    let settings = Settings {
        restrict_oom_score_adj: cri_config.restrict_oom_score_adj,
        default_runtime_handler: cri_config.default_runtime_handler.clone(),
        pod_cgroup_parent: cri_config.pod_cgroup_parent.clone(),
        max_log_line: cri_config.max_container_log_line_size,
        ..Default::default()
    };
    let mut cri = Cri::new(engine, settings).map_err(|e| Error::io("start watching containers", e))?;
    let stream_config = StreamConfig {
        address: cri_config.stream_address,
        port: cri_config.stream_port,
        idle_timeout: cri_config.stream_idle_timeout,
        tls: cri_config.stream_tls.clone(),
    };
    let streams = StreamServer::start(cri.engine.clone(), &stream_config)
        .map_err(|e| Error::io(format!("streaming server on {}:{}", stream_config.address, stream_config.port), e))?;
    eprintln!("berthd: streaming server (exec, attach, port-forward) on {}", streams.base());
    cri.streams = Some(std::sync::Arc::new(streams));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("berthd")
        .build()
        .map_err(|e| Error::io("start the async runtime", e))?;
    let served = rt.block_on(serve(cri, listener, guard.path()));
    // Connections still open after the grace period are dropped with the runtime.
    rt.shutdown_timeout(Duration::from_secs(1));
    let removed = guard.remove();
    served.and(removed)
}

/// What a container's monitor runs when the container exits, to release what it held (its
/// root filesystem mount, the runtime's state): `berth container cleanup`, the CLI installed
/// beside berthd.
fn exit_command(engine: &Engine, config: Option<&Path>) -> Result<Vec<String>> {
    let exe = std::env::current_exe().map_err(|e| Error::io("finding berthd's own path", e))?;
    let berth = exe.with_file_name("berth");
    if !berth.is_file() {
        return Err(Error::new(format!(
            "{}: the berth CLI must be installed beside berthd (containers' exits are cleaned up with it)",
            berth.display()
        )));
    }
    let mut cmd = vec![berth.display().to_string(), "--root".into(), engine.root.display().to_string()];
    if let Some(c) = config {
        cmd.push("--config".into());
        cmd.push(c.display().to_string());
    }
    cmd.push("container".into());
    cmd.push("cleanup".into());
    Ok(cmd)
}

async fn serve(cri: Cri, listener: UnixListener, path: &Path) -> Result<()> {
    let endpoint = format!("unix://{}", path.display());
    listener.set_nonblocking(true).map_err(|e| Error::io(format!("{endpoint}: set non-blocking"), e))?;
    let listener =
        tokio::net::UnixListener::from_std(listener).map_err(|e| Error::io(format!("{endpoint}: register"), e))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| Error::io("install the SIGTERM handler", e))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| Error::io("install the SIGINT handler", e))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();

    let server = tonic::transport::Server::builder()
        .layer(berth_cri::deadline::DeadlineLayer)
        .add_service(RuntimeServiceServer::new(cri.clone()))
        .add_service(ImageServiceServer::new(cri))
        .serve_with_incoming_shutdown(tokio_stream::wrappers::UnixListenerStream::new(listener), async {
            let _ = stopped.await;
        });
    tokio::pin!(server);
    // Tests (and service managers) wait for this line: the signal handlers are in place and
    // the socket accepts.
    eprintln!("berthd: serving CRI v1 (RuntimeService, ImageService) on {endpoint}");

    let signal_name = tokio::select! {
        r = &mut server => {
            return r.map_err(|e| Error::new(format!("{endpoint}: the gRPC server stopped: {e}")));
        }
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    eprintln!("berthd: {signal_name}: shutting down");
    let _ = stop.send(());
    match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
        Ok(r) => r.map_err(|e| Error::new(format!("{endpoint}: the gRPC server failed while stopping: {e}")))?,
        Err(_) => eprintln!(
            "berthd: requests still in progress after {}s; closing their connections",
            SHUTDOWN_GRACE.as_secs()
        ),
    }
    Ok(())
}
