//! Reading what a client's request asks for: the query conventions and the client's address.
//! The parsing the server does by hand lives here, so it can be tested and fuzzed in one place.

use std::net::IpAddr;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, Method, header};

use crate::edge::listener::ClientAddr;
use crate::stream::parity::Parity;
use crate::stream::resume::{ResumeError, parse_after};

/// Whether `query` has a parameter named `key`, with or without a value (`key`, `key=`,
/// `key=1`). Only the name is compared: `NOkey=1` and `x=key` do not count.
pub(crate) fn has_key(query: Option<&str>, key: &str) -> bool {
    query
        .unwrap_or("")
        .split('&')
        .any(|pair| pair.split('=').next() == Some(key))
}

/// The value of the first parameter named `key` (`""` for a bare `key`), undecoded.
pub(crate) fn value<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (name == key).then_some(value)
    })
}

/// The stream a query asks for: a key named `even` (with or without a value) anywhere in it
/// selects the even stream; anything else is odd.
pub fn parity_of_query(query: Option<&str>) -> Parity {
    if has_key(query, "even") {
        Parity::Even
    } else {
        Parity::Odd
    }
}

/// The `after` of a query string, if it has one.
pub fn after_from_query(query: Option<&str>) -> Result<Option<u64>, ResumeError> {
    value(query, "after").map(parse_after).transpose()
}

/// Whether the client asked for a WebSocket, well-formed or not: `Upgrade: websocket` over
/// HTTP/1.1, or an extended CONNECT with protocol `websocket` over HTTP/2 (RFC 8441).
pub(crate) fn is_websocket_upgrade(request: &Request) -> bool {
    if request.method() == Method::CONNECT {
        return request
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|protocol| protocol.as_str().eq_ignore_ascii_case("websocket"));
    }
    request
        .headers()
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// The client's address for logs: the first `X-Forwarded-For` hop when a proxy set one
/// (never trusted for anything else), otherwise the TCP peer.
pub(crate) fn peer_label(
    headers: &HeaderMap,
    connect_info: Option<&ConnectInfo<ClientAddr>>,
) -> String {
    let forwarded = headers
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .map(str::trim)
        .filter(|first| !first.is_empty());
    match (forwarded, connect_info) {
        (Some(client), Some(ConnectInfo(ClientAddr(proxy)))) => format!("{client} via {proxy}"),
        (Some(client), None) => client.to_owned(),
        (None, Some(ConnectInfo(ClientAddr(peer)))) => peer.to_string(),
        (None, None) => "unknown".to_owned(),
    }
}

/// The client's address, for limits per client: the TCP peer, unless that peer is one of
/// `trusted_proxies`; then the nearest `X-Forwarded-For` hop that is not a trusted proxy. A
/// proxy appends the address it saw, so hops further left were written by whoever connected,
/// and cannot be trusted. A hop that is not an address stops the walk at the hop before it.
pub(crate) fn client_ip(
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    trusted_proxies: &[IpAddr],
) -> Option<IpAddr> {
    let mut client = peer?;
    if !trusted_proxies.contains(&client) {
        return Some(client);
    }
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        let Ok(hop) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = hop;
        if !trusted_proxies.contains(&client) {
            break;
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_matched_by_name_only() {
        assert!(has_key(Some("EIO=4&transport=websocket"), "EIO"));
        assert!(has_key(Some("even&EIO=4"), "EIO"));
        assert!(has_key(Some("even"), "even"));
        assert!(has_key(Some("even="), "even"));
        assert!(!has_key(Some("NOEIO=4"), "EIO"));
        assert!(!has_key(Some("x=EIO"), "EIO"));
        assert!(!has_key(Some(""), "EIO"));
        assert!(!has_key(None, "EIO"));
    }

    #[test]
    fn values_are_those_of_the_first_matching_key() {
        assert_eq!(value(Some("after=12&even"), "after"), Some("12"));
        assert_eq!(value(Some("even&after=3&after=4"), "after"), Some("3"));
        assert_eq!(value(Some("after"), "after"), Some(""));
        assert_eq!(value(Some("after=a=b"), "after"), Some("a=b"));
        assert_eq!(value(Some("xafter=1"), "after"), None);
        assert_eq!(value(None, "after"), None);
    }

    // Promise: raw-even
    #[test]
    fn even_key_anywhere_in_the_query_selects_even() {
        for query in ["even", "even=1", "foo=1&even", "even=&x=2", "a&even&b"] {
            assert_eq!(parity_of_query(Some(query)), Parity::Even, "{query}");
        }
        for query in [None, Some(""), Some("odd"), Some("evening"), Some("x=even")] {
            assert_eq!(parity_of_query(query), Parity::Odd, "{query:?}");
        }
    }

    #[test]
    fn after_comes_from_its_own_key() {
        assert_eq!(after_from_query(Some("even&after=7")), Ok(Some(7)));
        assert_eq!(after_from_query(Some("even")), Ok(None));
        assert!(after_from_query(Some("after")).is_err());
    }

    // Promise: flag-trusted-proxies, proxy-trusted, proxy-nearest-hop, proxy-untrusted
    #[test]
    fn forwarded_hops_count_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "127.0.0.9".parse().unwrap();
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "6.6.6.6, 10.1.2.3".parse().unwrap());
        assert_eq!(client_ip(&headers, Some(proxy), &[]), Some(proxy));
        assert_eq!(
            client_ip(&headers, Some(proxy), &[proxy]),
            Some(ip("10.1.2.3"))
        );
        let other = ip("127.0.0.5");
        assert_eq!(client_ip(&headers, Some(other), &[proxy]), Some(other));
        // Two proxies in a row: the hop the outer one saw.
        let outer = ip("10.1.2.3");
        assert_eq!(
            client_ip(&headers, Some(proxy), &[proxy, outer]),
            Some(ip("6.6.6.6"))
        );
        // A hop that is not an address ends the walk.
        headers.insert("x-forwarded-for", "junk, 10.1.2.4".parse().unwrap());
        assert_eq!(
            client_ip(&headers, Some(proxy), &[proxy, ip("10.1.2.4")]),
            Some(ip("10.1.2.4"))
        );
        // No header: the proxy itself.
        assert_eq!(
            client_ip(&HeaderMap::new(), Some(proxy), &[proxy]),
            Some(proxy)
        );
        assert_eq!(client_ip(&headers, None, &[proxy]), None);
    }
}
