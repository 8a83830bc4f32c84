//! The proxy's side, over Envoy's admin API: `/config_dump` and the
//! clusters' counters from `/stats`, each bounded in time and size.

use std::time::Duration;

use super::dump;
use super::envoy::ProxySide;
use super::route::Request;
use crate::Error;

/// Istio's sidecar admin listener.
pub const DEFAULT_ADMIN: &str = "http://127.0.0.1:15000";
/// Dumps of large meshes run to tens of megabytes, 100 MB and more without
/// Sidecar scoping; past this it is not an admin API.
const MAX_BODY: usize = 256 * 1024 * 1024;
/// One admin answer may take at most this many `--timeout`s in all (each
/// read is bounded by `--timeout` itself), so a server that drips bytes
/// cannot hold the check.
pub const TOTAL_TIMEOUTS: u32 = 5;

/// A dump already read (from `--config-dump`), with where it came from.
pub struct SavedDump {
    pub from: String,
    pub bytes: Vec<u8>,
}

/// `--envoy-admin` must be an `http://HOST[:PORT]` URL (the admin API
/// speaks plain HTTP); anything else is a usage error.
pub fn check_admin_url(url: &str) -> crate::Result<()> {
    let bad = |why: &str| Error::usage(format!("--envoy-admin {url:?} {why}"));
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("is not an http:// URL (Envoy's admin API speaks plain HTTP)"))?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || authority.contains(|c: char| c.is_whitespace() || c == '@') {
        return Err(bad("has no host"));
    }
    reqwest::Url::parse(url).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    Ok(())
}

/// The overall time one admin answer may take.
pub fn total_cap(io_timeout: Duration) -> Duration {
    io_timeout.saturating_mul(TOTAL_TIMEOUTS)
}

/// Reads the proxy side for the request: the saved dump when given (with
/// stats only when `admin` is also given), else the admin API's dump and
/// stats (`admin` or [`DEFAULT_ADMIN`]).
pub async fn read_proxy(
    req: &Request<'_>,
    saved: Option<SavedDump>,
    admin: Option<&str>,
    io_timeout: Duration,
) -> ProxySide {
    let client = match reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(io_timeout)
        .read_timeout(io_timeout)
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            return ProxySide::assumed(
                admin.map(str::to_string),
                format!("cannot build an HTTP client: {e}"),
            )
        }
    };
    let cap = total_cap(io_timeout);
    let (from, bytes, admin) = match saved {
        Some(saved) => (saved.from, saved.bytes, admin),
        None => {
            let admin = admin.unwrap_or(DEFAULT_ADMIN);
            let url = format!("{}/config_dump", admin.trim_end_matches('/'));
            match get(&client, &url, cap).await {
                Ok(bytes) => (admin.to_string(), bytes, Some(admin)),
                Err(why) => return ProxySide::assumed(Some(admin.to_string()), why),
            }
        }
    };
    let stats = match admin {
        Some(admin) => {
            let url = format!("{}/stats?format=prometheus", admin.trim_end_matches('/'));
            get(&client, &url, cap).await.and_then(|b| {
                String::from_utf8(b).map_err(|_| format!("{url} did not answer with text"))
            })
        }
        None => Err("stats not read: judging a saved config dump offline".to_string()),
    };
    match dump::parse(&bytes) {
        Ok(dump) => {
            ProxySide::from_config(from, &dump, req, stats.as_deref().map_err(Clone::clone))
        }
        Err(why) => ProxySide::assumed(
            Some(from.clone()),
            format!("{from} did not return an Envoy config dump: {why}"),
        ),
    }
}

/// One GET, refused past [`MAX_BODY`] or `cap` in all; errors in words.
async fn get(client: &reqwest::Client, url: &str, cap: Duration) -> Result<Vec<u8>, String> {
    let read = async {
        let mut response = client.get(url).send().await.map_err(|e| {
            let why = if e.is_timeout() {
                "no answer in time".to_string()
            } else if e.is_connect() {
                "nothing answers there".to_string()
            } else {
                e.to_string()
            };
            format!("no Envoy admin API at {url}: {why}")
        })?;
        if !response.status().is_success() {
            return Err(format!("{url} answered HTTP {}", response.status()));
        }
        // One allocation of the announced size: no copies while growing.
        let announced = response.content_length().unwrap_or(0) as usize;
        let mut body = Vec::with_capacity(announced.min(MAX_BODY));
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            if e.is_timeout() {
                format!("reading {url}: nothing for longer than --timeout")
            } else {
                format!("reading {url}: {e}")
            }
        })? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(format!("{url} sent more than {} MiB", MAX_BODY >> 20));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(cap, read).await.unwrap_or_else(|_| {
        Err(format!(
            "{url} did not finish its answer within {} s ({TOTAL_TIMEOUTS} x --timeout)",
            cap.as_secs_f64()
        ))
    })
}
