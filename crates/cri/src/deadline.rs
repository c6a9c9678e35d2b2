//! The caller's deadline (gRPC's `grpc-timeout` header) answered as gRPC says: DEADLINE_EXCEEDED.
//!
//! tonic's server enforces the header itself but answers an expired deadline with CANCELLED
//! ("Timeout expired"), and a client whose own timer has not fired yet reports that (critest's
//! "public image should timeout if requested" sees it when berthd's answer wins the race). This
//! layer, inside tonic's, ends the call a millisecond before tonic's timer would, with
//! DEADLINE_EXCEEDED. The work a call started on the blocking pool (a pull) runs to its end.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Wraps every RPC of the server in [`Deadline`].
#[derive(Clone, Copy, Debug, Default)]
pub struct DeadlineLayer;

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline(inner)
    }
}

#[derive(Clone, Debug)]
pub struct Deadline<S>(S);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Deadline<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let timeout = req.headers().get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(parse_timeout);
        let call = self.0.call(req);
        Box::pin(async move {
            let Some(timeout) = timeout else { return call.await };
            match tokio::time::timeout(timeout.saturating_sub(Duration::from_millis(1)), call).await {
                Ok(answer) => answer,
                Err(_) => Ok(tonic::Status::deadline_exceeded(format!("the caller's deadline of {timeout:?} passed"))
                    .into_http()),
            }
        })
    }
}

/// `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n); None for anything else (the
/// call then runs without a deadline of ours, as tonic's own parser refuses it).
fn parse_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service};

    fn request(timeout: Option<&str>) -> http::Request<()> {
        let mut r = http::Request::new(());
        if let Some(t) = timeout {
            r.headers_mut().insert("grpc-timeout", t.parse().unwrap());
        }
        r
    }

    /// A call slower than its deadline is answered DEADLINE_EXCEEDED; one within it, or with
    /// no deadline, gets its own answer.
    #[tokio::test]
    async fn an_expired_deadline_is_deadline_exceeded() {
        let slow = tower::service_fn(|_: http::Request<()>| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let mut svc = DeadlineLayer.layer(slow);
        let code = |r: &http::Response<tonic::body::Body>| {
            r.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_string())
        };
        let late = svc.call(request(Some("50m"))).await.unwrap();
        assert_eq!(code(&late).as_deref(), Some("4"), "{late:?}");
        let in_time = svc.call(request(Some("5S"))).await.unwrap();
        assert_eq!(code(&in_time), None);
        let unbounded = svc.call(request(None)).await.unwrap();
        assert_eq!(code(&unbounded), None);
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("1m"), Some(Duration::from_millis(1)));
        assert_eq!(parse_timeout("999999u"), Some(Duration::from_micros(999_999)));
        assert_eq!(parse_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout("99999999S"), Some(Duration::from_secs(99_999_999)));
        for bad in ["", "m", "123456789S", "1x", "-1S", "1.5S", "١S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }
}
