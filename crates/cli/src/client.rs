//! A small client for the node's HTTP API.

use anyhow::{Context, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest result downloaded from the API.
const RESULT_BYTES_MAX: u64 = 1 << 30;

pub fn default_api() -> String {
    std::env::var("PLEXUS_API").unwrap_or_else(|_| "http://127.0.0.1:7700".into())
}

pub struct Client {
    base: String,
    agent: ureq::Agent,
    /// `$PLEXUS_API_TOKEN`: what a node off this machine asks for.
    token: Option<String>,
}

impl Client {
    pub fn new(base: &str) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(60)))
            .build();
        let agent = ureq::Agent::with_parts(
            config,
            ureq::unversioned::transport::DefaultConnector::new(),
            LiteralAddress::default(),
        );
        Client {
            base: base.trim_end_matches('/').to_owned(),
            agent,
            token: std::env::var("PLEXUS_API_TOKEN").ok(),
        }
    }

    fn check(
        &self,
        path: &str,
        mut response: ureq::http::Response<ureq::Body>,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body: serde_json::Value = response.body_mut().read_json().unwrap_or_default();
        let message = body["error"].as_str().unwrap_or("no message").to_owned();
        bail!("{path}: {status}: {message}")
    }

    fn get_response(&self, path: &str) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.get(&url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let response = request.call().with_context(|| {
            format!(
                "cannot reach the node's API at {} (is `plexus node` running?)",
                self.base
            )
        })?;
        self.check(path, response)
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let mut response = self.get_response(path)?;
        response
            .body_mut()
            .read_json()
            .with_context(|| format!("{path}: bad JSON"))
    }

    pub fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let mut response = self.get_response(path)?;
        response
            .body_mut()
            .with_config()
            .limit(RESULT_BYTES_MAX)
            .read_to_vec()
            .with_context(|| format!("{path}: read"))
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.post_within(path, body, None)
    }

    /// A POST whose answer may take up to `within` (the agent's 60 s otherwise).
    pub fn post_within<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        within: Option<std::time::Duration>,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.post(&url);
        if let Some(within) = within {
            request = request.config().timeout_global(Some(within)).build();
        }
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let response = request.send_json(body).with_context(|| {
            format!(
                "cannot reach the node's API at {} (is `plexus node` running?)",
                self.base
            )
        })?;
        let mut response = self.check(path, response)?;
        response
            .body_mut()
            .read_json()
            .with_context(|| format!("{path}: bad JSON"))
    }
}

use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};

/// Takes an address written as an IP (the node's API is usually
/// `127.0.0.1:7700`) as it is, and gives names to ureq's own resolver. That
/// one bounds a lookup by the request's timeout with a thread spawned per
/// request, even for an IP, and pooled connections are still resolved
/// first: measured, 15–20 µs and a thread for every call of the
/// latency benchmark.
#[derive(Debug, Default)]
struct LiteralAddress(DefaultResolver);

impl Resolver for LiteralAddress {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let literal = uri.authority().and_then(|authority| {
            let host = authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let ip = host.parse::<std::net::IpAddr>().ok()?;
            let port = authority.port_u16().unwrap_or(match uri.scheme_str() {
                Some("https") => 443,
                _ => 80,
            });
            Some(std::net::SocketAddr::new(ip, port))
        });
        match literal {
            Some(address) => {
                let mut addresses = self.0.empty();
                addresses.push(address);
                Ok(addresses)
            }
            None => self.0.resolve(uri, config, timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(url: &str) -> Vec<std::net::SocketAddr> {
        let timeout = ureq::unversioned::transport::NextTimeout {
            after: ureq::unversioned::transport::time::Duration::Exact(
                std::time::Duration::from_secs(1),
            ),
            reason: ureq::Timeout::Global,
            per_read: None,
            per_write: None,
        };
        let uri: ureq::http::Uri = url.parse().expect("a url");
        LiteralAddress::default()
            .resolve(&uri, &ureq::config::Config::default(), timeout)
            .expect("resolved")
            .to_vec()
    }

    #[test]
    fn an_ip_address_is_taken_as_it_is_and_a_name_is_looked_up() {
        let at = |s: &str| s.parse::<std::net::SocketAddr>().expect("address");
        assert_eq!(
            resolve("http://127.0.0.1:7700/api/jobs"),
            vec![at("127.0.0.1:7700")]
        );
        assert_eq!(resolve("http://[::1]:9/"), vec![at("[::1]:9")]);
        assert_eq!(resolve("http://10.0.0.7/"), vec![at("10.0.0.7:80")]);
        assert!(
            resolve("http://localhost:7700/")
                .iter()
                .all(|a| a.port() == 7700 && a.ip().is_loopback()),
            "a name goes to the system's resolver"
        );
    }
}
