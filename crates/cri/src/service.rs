//! berthd's CRI services. `Version` answers; every other RPC fails with gRPC `Unimplemented`
//! and a message naming it ("RunPodSandbox is not implemented by berthd yet"), never an empty
//! success that kubelet would take for a real answer. RPCs move from the lists at the bottom
//! of each `impl` into real methods as the engine behind them lands.

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::proto as pb;
use crate::proto::image_service_server::ImageService;
use crate::proto::runtime_service_server::RuntimeService;

type RpcResult<T> = Result<Response<T>, Status>;

/// The response stream of a server-streaming RPC.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// berthd's RuntimeService and ImageService (no state yet).
#[derive(Debug, Default, Clone, Copy)]
pub struct Cri;

/// The status of an RPC berthd does not implement yet.
pub fn not_implemented(rpc: &str) -> Status {
    Status::unimplemented(format!("{rpc} is not implemented by berthd yet"))
}

/// Implements `$service` for [`Cri`]: the methods written out in `implemented { ... }`, and for
/// each RPC listed under `not_implemented` a method answering [`not_implemented`] with the
/// RPC's gRPC name (server-streaming ones with their stream type).
macro_rules! cri_service {
    (
        impl $service:ident {
            implemented { $($implemented:tt)* }
            not_implemented {
                $( $rpc:ident: $method:ident($req:ident) -> $resp:ident; )*
            }
            not_implemented_streams {
                $( $srpc:ident: $smethod:ident($sreq:ident) -> $stream:ident<$item:ident>; )*
            }
        }
    ) => {
        #[tonic::async_trait]
        impl $service for Cri {
            $($implemented)*

            $(
                async fn $method(&self, _request: Request<pb::$req>) -> RpcResult<pb::$resp> {
                    Err(not_implemented(stringify!($rpc)))
                }
            )*

            $(
                type $stream = ResponseStream<pb::$item>;

                async fn $smethod(&self, _request: Request<pb::$sreq>) -> RpcResult<Self::$stream> {
                    Err(not_implemented(stringify!($srpc)))
                }
            )*
        }
    };
}

cri_service! {
    impl RuntimeService {
        implemented {
            async fn version(&self, _request: Request<pb::VersionRequest>) -> RpcResult<pb::VersionResponse> {
                Ok(Response::new(pb::VersionResponse {
                    version: crate::KUBELET_API_VERSION.into(),
                    runtime_name: crate::RUNTIME_NAME.into(),
                    runtime_version: crate::RUNTIME_VERSION.into(),
                    runtime_api_version: crate::RUNTIME_API_VERSION.into(),
                }))
            }
        }
        not_implemented {
            RunPodSandbox: run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse;
            StopPodSandbox: stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse;
            RemovePodSandbox: remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse;
            PodSandboxStatus: pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse;
            ListPodSandbox: list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse;
            CreateContainer: create_container(CreateContainerRequest) -> CreateContainerResponse;
            StartContainer: start_container(StartContainerRequest) -> StartContainerResponse;
            StopContainer: stop_container(StopContainerRequest) -> StopContainerResponse;
            RemoveContainer: remove_container(RemoveContainerRequest) -> RemoveContainerResponse;
            ListContainers: list_containers(ListContainersRequest) -> ListContainersResponse;
            ContainerStatus: container_status(ContainerStatusRequest) -> ContainerStatusResponse;
            UpdateContainerResources:
                update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse;
            ReopenContainerLog: reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse;
            ExecSync: exec_sync(ExecSyncRequest) -> ExecSyncResponse;
            Exec: exec(ExecRequest) -> ExecResponse;
            Attach: attach(AttachRequest) -> AttachResponse;
            PortForward: port_forward(PortForwardRequest) -> PortForwardResponse;
            ContainerStats: container_stats(ContainerStatsRequest) -> ContainerStatsResponse;
            ListContainerStats: list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse;
            PodSandboxStats: pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse;
            ListPodSandboxStats: list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse;
            UpdateRuntimeConfig: update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse;
            Status: status(StatusRequest) -> StatusResponse;
            CheckpointContainer: checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
            ListMetricDescriptors:
                list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse;
            ListPodSandboxMetrics:
                list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse;
            RuntimeConfig: runtime_config(RuntimeConfigRequest) -> RuntimeConfigResponse;
            UpdatePodSandboxResources:
                update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest) -> UpdatePodSandboxResourcesResponse;
        }
        not_implemented_streams {
            StreamPodSandboxes:
                stream_pod_sandboxes(StreamPodSandboxesRequest) -> StreamPodSandboxesStream<StreamPodSandboxesResponse>;
            StreamContainers:
                stream_containers(StreamContainersRequest) -> StreamContainersStream<StreamContainersResponse>;
            StreamContainerStats: stream_container_stats(StreamContainerStatsRequest)
                -> StreamContainerStatsStream<StreamContainerStatsResponse>;
            StreamPodSandboxStats: stream_pod_sandbox_stats(StreamPodSandboxStatsRequest)
                -> StreamPodSandboxStatsStream<StreamPodSandboxStatsResponse>;
            GetContainerEvents:
                get_container_events(GetEventsRequest) -> GetContainerEventsStream<ContainerEventResponse>;
            StreamPodSandboxMetrics: stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest)
                -> StreamPodSandboxMetricsStream<StreamPodSandboxMetricsResponse>;
        }
    }
}

cri_service! {
    impl ImageService {
        implemented {}
        not_implemented {
            ListImages: list_images(ListImagesRequest) -> ListImagesResponse;
            ImageStatus: image_status(ImageStatusRequest) -> ImageStatusResponse;
            PullImage: pull_image(PullImageRequest) -> PullImageResponse;
            RemoveImage: remove_image(RemoveImageRequest) -> RemoveImageResponse;
            ImageFsInfo: image_fs_info(ImageFsInfoRequest) -> ImageFsInfoResponse;
        }
        not_implemented_streams {
            StreamImages: stream_images(StreamImagesRequest) -> StreamImagesStream<StreamImagesResponse>;
        }
    }
}
