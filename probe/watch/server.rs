//! `watch`'s HTTP endpoints: `/metrics` (Prometheus text, or OpenMetrics
//! when the `Accept` header asks for it), `/healthz` and `/report` (the last
//! cycle's report as JSON, the same schema as `-o json`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::State;
use crate::metrics::Format;

/// A client that has not sent its request head by then is dropped, so idle
/// or stuck connections cannot pile up.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stop waits for responses in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until `stop` turns true, then lets responses in flight finish.
pub async fn serve(listener: TcpListener, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let state = state.clone();
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(respond(&state, &request)) }
                    });
                    let connection = http.serve_connection(TokioIo::new(stream), service);
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        // A client that goes away mid-request is its own business.
                        let _ = connection.await;
                    });
                }
                Err(e) => {
                    // Out of descriptors and the like: pass, rather than spin.
                    eprintln!("podprobe watch: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = async { let _ = stop.wait_for(|stopped| *stopped).await; } => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
}

fn respond(state: &State, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match request.uri().path() {
        "/metrics" => {
            let accept = request
                .headers()
                .get(ACCEPT)
                .and_then(|v| v.to_str().ok());
            let format = Format::negotiate(accept);
            with_type(StatusCode::OK, format.content_type(), state.exposition(format))
        }
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/report" => match state.last_report() {
            Some(json) => with_type(StatusCode::OK, "application/json", json),
            None => with_type(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                "{\"error\": \"the first cycle has not finished yet\"}\n",
            ),
        },
        "/" => plain(
            StatusCode::OK,
            "podprobe watch\n/metrics  Prometheus metrics\n/healthz  liveness\n/report   the last cycle's report (JSON)\n",
        ),
        _ => plain(StatusCode::NOT_FOUND, "not found: try /metrics\n"),
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    with_type(status, "text/plain; charset=utf-8", body)
}

fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
