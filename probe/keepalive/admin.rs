//! The proxy's side, over Envoy's admin API: `/config_dump` and the
//! cluster's counters from `/stats`, each bounded in time and size.

use std::time::Duration;

use super::envoy::{self, Cluster, ProxySide};

/// Istio's sidecar admin listener.
pub const DEFAULT_ADMIN: &str = "http://127.0.0.1:15000";
/// Dumps of large meshes run to tens of megabytes; more is not an admin API.
const MAX_BODY: usize = 64 * 1024 * 1024;
const MAX_TOTAL: Duration = Duration::from_secs(60);

/// A dump already read (from `--config-dump`), with where it came from.
pub struct SavedDump {
    pub from: String,
    pub clusters: Vec<Cluster>,
}

/// Reads the proxy side for `host:port`: the saved dump when given (with
/// stats only when `admin` is also given), else the admin API's dump and
/// stats (`admin` or [`DEFAULT_ADMIN`]).
pub async fn read_proxy(
    host: &str,
    port: u16,
    saved: Option<SavedDump>,
    admin: Option<&str>,
    io_timeout: Duration,
) -> ProxySide {
    let client = match reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(io_timeout)
        // Every read is bounded by --timeout; a large dump may take longer
        // than that in all, but not longer than this.
        .read_timeout(io_timeout)
        .timeout(MAX_TOTAL)
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
    let (from, clusters, admin) = match saved {
        Some(saved) => (saved.from, saved.clusters, admin),
        None => {
            let admin = admin.unwrap_or(DEFAULT_ADMIN);
            let url = format!("{}/config_dump", admin.trim_end_matches('/'));
            let dump = get(&client, &url).await.and_then(|text| {
                envoy::parse_config_dump(&text)
                    .map_err(|why| format!("{url} did not return an Envoy config dump: {why}"))
            });
            match dump {
                Ok(clusters) => (admin.to_string(), clusters, Some(admin)),
                Err(why) => return ProxySide::assumed(Some(admin.to_string()), why),
            }
        }
    };
    let stats = match admin {
        Some(admin) => {
            let url = format!("{}/stats?format=prometheus", admin.trim_end_matches('/'));
            get(&client, &url).await
        }
        None => Err("stats not read: judging a saved config dump offline".to_string()),
    };
    ProxySide::from_config(
        from,
        &clusters,
        host,
        port,
        stats.as_deref().map_err(Clone::clone),
    )
}

/// One GET, as text, refused past [`MAX_BODY`]; errors in words.
async fn get(client: &reqwest::Client, url: &str) -> Result<String, String> {
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
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading {url}: {e}"))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("{url} sent more than {} MiB", MAX_BODY >> 20));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| format!("{url} did not answer with text"))
}
