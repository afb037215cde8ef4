//! What a server run as a container service needs, once for mock-chart-img and `recorder proxy`: the `PORT` rule
//! (Cloud Run and most platforms give the port that way) and the `healthcheck` subcommand's probe (a `FROM scratch`
//! image has no curl for its `HEALTHCHECK`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// The variable holding the port a container must listen on.
pub const PORT_ENV: &str = "PORT";

/// `explicit` (a `--listen` flag or its variable) when given, else `0.0.0.0:$PORT` when `PORT` is set, else
/// `default`. A `PORT` that is not a port number is an error naming it.
pub fn listen_address(explicit: Option<SocketAddr>, default: SocketAddr) -> Result<SocketAddr, String> {
    if let Some(a) = explicit {
        return Ok(a);
    }
    match std::env::var(PORT_ENV) {
        Ok(p) if !p.trim().is_empty() => p
            .trim()
            .parse::<u16>()
            .map(|port| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
            .map_err(|_| format!("{PORT_ENV}={p:?} is not a port number (0-65535)")),
        _ => Ok(default),
    }
}

/// Where a client on this machine reaches a server listening on `listen`: an unspecified address (0.0.0.0, ::) is
/// asked on loopback.
pub fn local_address(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port()),
        _ => listen,
    }
}

/// GETs `http://{local_address(listen)}{path}`: `Ok` when it answers 2xx with a JSON body whose `status` is `"ok"`,
/// otherwise what went wrong (the URL, the status or the connection error).
pub async fn healthcheck(listen: SocketAddr, path: &str, timeout: Duration) -> Result<(), String> {
    let url = format!("http://{}{path}", local_address(listen));
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client.get(&url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if status.is_success() && body["status"] == "ok" {
        Ok(())
    } else {
        Err(format!("GET {url} answered {status}: {body}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_asked_on_loopback() {
        assert_eq!(
            local_address("0.0.0.0:80".parse().unwrap()),
            "127.0.0.1:80".parse().unwrap()
        );
        assert_eq!(local_address("[::]:80".parse().unwrap()), "[::1]:80".parse().unwrap());
        assert_eq!(
            local_address("10.0.0.2:80".parse().unwrap()),
            "10.0.0.2:80".parse().unwrap()
        );
    }

    #[test]
    fn an_explicit_address_wins_over_port() {
        let a: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(listen_address(Some(a), "127.0.0.1:1".parse().unwrap()), Ok(a));
    }
}
