//! The standard gRPC services on the control listener: `grpc.health.v1.Health` (open, for
//! Kubernetes' gRPC probes) and server reflection v1 and v1alpha (behind the control token).

mod support;

use std::time::Duration;

use support::{Backend, Lb};
use tokio::time::timeout;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1;
use tonic_reflection::pb::v1alpha;

const WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "s3cret-token";

/// lb with a control token, in front of one backend.
async fn started() -> (Lb, Backend, Channel) {
    let backend = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, format!("{TOKEN}\n")).unwrap();
    let config = dir.path().join("lb.toml");
    let text = format!(
        "[server]\ndrain_timeout = \"5s\"\n\n[control]\ntoken_file = \"{}\"\n\n{}",
        token_path.display(),
        support::pool("/", &[backend.addr], "1h")
    );
    std::fs::write(&config, text).unwrap();
    let lb = Lb::start_at(dir, config, &[]);
    let url = format!("http://{}", lb.grpc.expect("grpc listener"));
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    (lb, backend, channel)
}

fn with_token<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    request
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

#[tokio::test]
async fn health_serves_the_server_and_the_control_service_without_a_token() {
    let (_lb, _backend, channel) = started().await;
    let mut health = HealthClient::new(channel);
    for service in ["", "rollout.lb.LoadBalancer"] {
        let status = health
            .check(check(service))
            .await
            .unwrap_or_else(|e| panic!("Check({service:?}): {e}"))
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health.check(check("no.such.Service")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{}", unknown.message());
}

#[tokio::test]
async fn health_turns_not_serving_and_its_watch_ends_when_shutdown_begins() {
    let (mut lb, _backend, channel) = started().await;
    let mut health = HealthClient::new(channel);
    let mut watch = health
        .watch(check("rollout.lb.LoadBalancer"))
        .await
        .expect("Watch")
        .into_inner();
    let first = timeout(WAIT, watch.message()).await.expect("first status");
    assert_eq!(
        first.expect("stream open").expect("a status").status,
        ServingStatus::Serving as i32
    );

    lb.send_term();
    let next = timeout(WAIT, watch.message())
        .await
        .expect("status at shutdown");
    assert_eq!(
        next.expect("stream open").expect("a status").status,
        ServingStatus::NotServing as i32
    );
    let end = timeout(WAIT, watch.message()).await.expect("end of stream");
    assert!(matches!(end, Ok(None)), "{end:?}");
    // The watch was the only open RPC: lb exits well before its 5 s drain timeout.
    let status = lb
        .exit_within(Duration::from_secs(3))
        .await
        .expect("lb exited");
    assert_eq!(status.code(), Some(0));
}

/// The service names a v1 reflection `list_services` answers.
async fn list_v1(channel: Channel, token: bool) -> Result<Vec<String>, tonic::Status> {
    use v1::server_reflection_request::MessageRequest;
    use v1::server_reflection_response::MessageResponse;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let outbound = tokio_stream::iter([request]);
    let request = if token {
        with_token(outbound)
    } else {
        Request::new(outbound)
    };
    let mut responses = client.server_reflection_info(request).await?.into_inner();
    let response = timeout(WAIT, responses.message())
        .await
        .expect("reflection answers")?
        .expect("one response");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => panic!("not a service list: {other:?}"),
    }
}

#[tokio::test]
async fn reflection_lists_the_services_with_the_token_only() {
    let (_lb, _backend, channel) = started().await;
    let refused = list_v1(channel.clone(), false).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Code::Unauthenticated,
        "{}",
        refused.message()
    );

    let mut services = list_v1(channel, true).await.expect("list with the token");
    services.sort();
    assert_eq!(
        services,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "rollout.lb.LoadBalancer"
        ]
    );
}

#[tokio::test]
async fn reflection_describes_the_control_api_over_v1alpha_too() {
    use v1alpha::server_reflection_request::MessageRequest;
    use v1alpha::server_reflection_response::MessageResponse;
    let (_lb, _backend, channel) = started().await;
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "rollout.lb.LoadBalancer".to_owned(),
        )),
    };
    let mut responses = client
        .server_reflection_info(with_token(tokio_stream::iter([request])))
        .await
        .expect("reflection v1alpha")
        .into_inner();
    let response = timeout(WAIT, responses.message())
        .await
        .expect("reflection answers")
        .expect("no error")
        .expect("one response");
    let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
        panic!("not a file descriptor: {:?}", response.message_response);
    };
    // The encoded FileDescriptorProto of proto/lb.proto: its name, package and an RPC in it.
    let file = files.file_descriptor_proto.first().expect("a file");
    for needle in [
        &b"lb.proto"[..],
        b"rollout.lb",
        b"AddBackend",
        b"WatchHealth",
    ] {
        assert!(
            file.windows(needle.len()).any(|w| w == needle),
            "{} missing from the descriptor",
            String::from_utf8_lossy(needle)
        );
    }
}
