//! berthd's CRI services on the engine the `berth` CLI shares, one file per group of RPCs (as
//! CRI-O keeps one per RPC): `runtime.rs` (Version, Status, RuntimeConfig), `pods.rs`
//! (RunPodSandbox ... ListPodSandbox, UpdatePodSandboxResources), `containers.rs`
//! (CreateContainer ... ExecSync, ReopenContainerLog, UpdateContainerResources), `stats.rs`,
//! `metrics.rs` (the metrics kubelet exports in cAdvisor's stead), `images.rs` (the
//! ImageService) and `events.rs` (GetContainerEvents). `convert.rs` translates CRI's messages
//! into the engine's typed configuration and back.
//!
//! The engine is synchronous (it forks runtimes and waits for monitors): each RPC runs it on
//! tokio's blocking pool, so one pod's slow start never holds up another's. Errors keep their
//! kind from the engine, and the gRPC code comes from it (`status`). An RPC berthd does not
//! implement fails with `Unimplemented`, naming itself, never an empty success.

pub mod containers;
pub mod convert;
pub mod events;
pub mod images;
pub mod metrics;
pub mod pods;
pub mod runtime;
pub mod stats;
pub mod streams;

use std::pin::Pin;
use std::sync::Arc;

use berth_engine::{Engine, Kind};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::proto as pb;
use crate::proto::image_service_server::ImageService;
use crate::proto::runtime_service_server::RuntimeService;

pub type RpcResult<T> = Result<Response<T>, Status>;

/// The response stream of a server-streaming RPC.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// berthd's RuntimeService and ImageService.
#[derive(Clone)]
pub struct Cri {
    pub engine: Arc<Engine>,
    pub events: events::Events,
    pub settings: Arc<Settings>,
    pub cpu_samples: stats::CpuSamples,
    /// where Exec, Attach and PortForward send their clients (None until berthd starts it)
    pub streams: Option<Arc<crate::streaming::Server>>,
}

/// What berthd was configured with beyond the engine's own settings.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// the pod CIDR kubelet last gave (UpdateRuntimeConfig)
    pub pod_cidr: std::sync::Arc<std::sync::Mutex<String>>,
    /// OOM score adjustments below this process's own are raised to it (root cannot lower
    /// them on hosts without CAP_SYS_RESOURCE): containerd's restrict_oom_score_adj
    pub restrict_oom_score_adj: bool,
    /// the handler of pods that name none (None: the engine's default runtime)
    pub default_runtime_handler: Option<String>,
    /// the cgroup parent of pods that send none (None: the engine's)
    pub pod_cgroup_parent: Option<String>,
    /// bytes of a line per log record of a container (0: no limit)
    pub max_log_line: u64,
}

impl Cri {
    /// berthd's services on `engine`; starts the thread that watches containers' exits.
    pub fn new(engine: Engine, settings: Settings) -> std::io::Result<Cri> {
        let engine = Arc::new(engine);
        let events = events::Events::start(engine.clone())?;
        Ok(Cri { engine, events, settings: Arc::new(settings), cpu_samples: Default::default(), streams: None })
    }

    /// Runs `f` with the engine on tokio's blocking pool.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine) -> berth_engine::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || f(&engine))
            .await
            .map_err(|e| Status::internal(format!("berthd: a task failed: {e}")))?
            .map_err(status)
    }
}

/// The gRPC status of an engine error: its code from the error's kind, its message the
/// error's whole context.
pub fn status(e: berth_engine::Error) -> Status {
    let msg = e.to_string();
    match e.kind() {
        Kind::NotFound => Status::not_found(msg),
        Kind::AlreadyExists => Status::already_exists(msg),
        Kind::InvalidInput | Kind::Ambiguous => Status::invalid_argument(msg),
        Kind::InvalidState => Status::failed_precondition(msg),
        Kind::Unsupported => Status::unimplemented(msg),
        Kind::PermissionDenied => Status::permission_denied(msg),
        Kind::Unavailable => Status::unavailable(msg),
        Kind::DeadlineExceeded => Status::deadline_exceeded(msg),
        Kind::ResourceExhausted => Status::resource_exhausted(msg),
        Kind::DataLoss => Status::data_loss(msg),
        Kind::System => Status::unknown(msg),
    }
}

/// The status of an RPC berthd does not implement.
pub fn not_implemented(rpc: &str) -> Status {
    Status::unimplemented(format!("{rpc} is not implemented by berthd yet"))
}

/// A request field that must be set.
pub fn required<'a, T>(v: &'a Option<T>, field: &str) -> Result<&'a T, Status> {
    v.as_ref().ok_or_else(|| Status::invalid_argument(format!("{field}: missing")))
}

/// Implements `$service` for [`Cri`]: each unary RPC answered by `$f(self, request)`, each
/// server-streaming one by `$sf(self, request)` returning its stream, and each RPC listed
/// under `not_implemented` answered with [`not_implemented`] and the RPC's gRPC name.
///
/// The methods are written out here, not by a nested macro: `async_trait` rewrites the
/// `async fn`s it sees before inner macros would expand.
macro_rules! cri_service {
    (
        impl $service:ident {
            unary { $( $method:ident($req:ident) -> $resp:ident => $f:path; )* }
            streams { $( $smethod:ident($sreq:ident) -> $stream:ident<$item:ident> => $sf:path; )* }
            not_implemented { $( $rpc:ident: $nmethod:ident($nreq:ident) -> $nresp:ident; )* }
            not_implemented_streams {
                $( $nsrpc:ident: $nsmethod:ident($nsreq:ident) -> $nstream:ident<$nsitem:ident>; )*
            }
        }
    ) => {
        #[tonic::async_trait]
        impl $service for Cri {
            $(
                async fn $method(&self, request: Request<pb::$req>) -> RpcResult<pb::$resp> {
                    $f(self, request.into_inner()).await.map(Response::new)
                }
            )*

            $(
                type $stream = ResponseStream<pb::$item>;

                async fn $smethod(&self, request: Request<pb::$sreq>) -> RpcResult<Self::$stream> {
                    $sf(self, request.into_inner()).await.map(Response::new)
                }
            )*

            $(
                async fn $nmethod(&self, _request: Request<pb::$nreq>) -> RpcResult<pb::$nresp> {
                    Err(not_implemented(stringify!($rpc)))
                }
            )*

            $(
                type $nstream = ResponseStream<pb::$nsitem>;

                async fn $nsmethod(&self, _request: Request<pb::$nsreq>) -> RpcResult<Self::$nstream> {
                    Err(not_implemented(stringify!($nsrpc)))
                }
            )*
        }
    };
}

cri_service! {
    impl RuntimeService {
        unary {
            version(VersionRequest) -> VersionResponse => runtime::version;
            status(StatusRequest) -> StatusResponse => runtime::status;
            runtime_config(RuntimeConfigRequest) -> RuntimeConfigResponse => runtime::runtime_config;
            update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse
                => runtime::update_runtime_config;
            run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse => pods::run;
            stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse => pods::stop;
            remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse => pods::remove;
            pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse => pods::status;
            list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse => pods::list;
            create_container(CreateContainerRequest) -> CreateContainerResponse => containers::create;
            start_container(StartContainerRequest) -> StartContainerResponse => containers::start;
            stop_container(StopContainerRequest) -> StopContainerResponse => containers::stop;
            remove_container(RemoveContainerRequest) -> RemoveContainerResponse => containers::remove;
            list_containers(ListContainersRequest) -> ListContainersResponse => containers::list;
            container_status(ContainerStatusRequest) -> ContainerStatusResponse => containers::status;
            update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse
                => containers::update_resources;
            reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse => containers::reopen_log;
            exec_sync(ExecSyncRequest) -> ExecSyncResponse => containers::exec_sync;
            exec(ExecRequest) -> ExecResponse => streams::exec;
            attach(AttachRequest) -> AttachResponse => streams::attach;
            port_forward(PortForwardRequest) -> PortForwardResponse => streams::port_forward;
            container_stats(ContainerStatsRequest) -> ContainerStatsResponse => stats::container;
            list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse => stats::list_containers;
            pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse => stats::pod;
            list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse => stats::list_pods;
            update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest) -> UpdatePodSandboxResourcesResponse
                => pods::update_resources;
            list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse => metrics::descriptors;
            list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse => metrics::list;
        }
        streams {
            get_container_events(GetEventsRequest) -> GetContainerEventsStream<ContainerEventResponse>
                => events::subscribe;
            stream_pod_sandboxes(StreamPodSandboxesRequest) -> StreamPodSandboxesStream<StreamPodSandboxesResponse>
                => pods::stream;
            stream_containers(StreamContainersRequest) -> StreamContainersStream<StreamContainersResponse>
                => containers::stream;
            stream_container_stats(StreamContainerStatsRequest)
                -> StreamContainerStatsStream<StreamContainerStatsResponse> => stats::stream_containers;
            stream_pod_sandbox_stats(StreamPodSandboxStatsRequest)
                -> StreamPodSandboxStatsStream<StreamPodSandboxStatsResponse> => stats::stream_pods;
            stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest)
                -> StreamPodSandboxMetricsStream<StreamPodSandboxMetricsResponse> => metrics::stream;
        }
        not_implemented {
            CheckpointContainer: checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
        }
        not_implemented_streams {}
    }
}

cri_service! {
    impl ImageService {
        unary {
            list_images(ListImagesRequest) -> ListImagesResponse => images::list;
            image_status(ImageStatusRequest) -> ImageStatusResponse => images::status;
            pull_image(PullImageRequest) -> PullImageResponse => images::pull;
            remove_image(RemoveImageRequest) -> RemoveImageResponse => images::remove;
            image_fs_info(ImageFsInfoRequest) -> ImageFsInfoResponse => images::fs_info;
        }
        streams {
            stream_images(StreamImagesRequest) -> StreamImagesStream<StreamImagesResponse> => images::stream;
        }
        not_implemented {}
        not_implemented_streams {}
    }
}

/// How many items a Stream* RPC sends per message.
const BATCH: usize = 100;

/// A list as a stream of batches (the Stream* variants of the list RPCs).
pub fn batches<T: Send + 'static, M: Send + 'static>(items: Vec<T>, wrap: impl Fn(Vec<T>) -> M) -> ResponseStream<M> {
    let mut out = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        out.push(Ok(wrap(items.by_ref().take(BATCH).collect())));
    }
    Box::pin(tokio_stream::iter(out))
}
