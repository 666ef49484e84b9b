//! A socket.io v2 namespace's own query, as Node reads it: its parameters are the socket's
//! auth.
//!
//! A v2 client given a query for one namespace (`io(url + "/odd?after=41")`, or the `query`
//! option) sends it inside that namespace's connect packet: `40/odd?after=41,`. socketioxide
//! would take all of it for the namespace's name, answer for a namespace the client does not
//! know, and the client would never hear. So the packet is rewritten before socketioxide reads
//! it, into the form a v4 client's auth takes: `40/odd,{"after":"41"}`. socketioxide parses
//! both protocols' connect packets alike, and the connect handler reads the auth of either.
//! Nothing is kept per query: the rewrite is of one packet, and the auth lives with its socket.
//!
//! A v2 client sends packets in two ways, and both are rewritten on the way in: in a polling
//! POST's payload ([`rewrite_payload`]), and in a WebSocket frame ([`rewrite_packet`], called
//! by the connection's frame filter, `crate::edge::listener`).

use serde_json::{Map, Value};

/// The engine.io v3 message packet that carries a socket.io connect packet for a namespace.
const CONNECT: &str = "40/";

/// The packet rewritten, if it is a connect packet whose namespace carries a query:
/// `40/odd?after=41&token=x,` becomes `40/odd,{"after":"41","token":"x"}`. Anything else,
/// `None`: it goes to socketioxide as it came.
pub(crate) fn rewrite_packet(packet: &str) -> Option<String> {
    let rest = packet.strip_prefix(CONNECT)?;
    // The namespace runs to the first `,` (a v2 connect packet carries nothing after it), or
    // to the end of the packet.
    let (namespace, after_comma) = rest.split_once(',').unwrap_or((rest, ""));
    let (path, query) = namespace.split_once('?')?;
    if !after_comma.is_empty() {
        return None;
    }
    let mut auth = Map::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        // The first of a repeated key wins, as in the connection's own query.
        auth.entry(key.into_owned())
            .or_insert(Value::String(value.into_owned()));
    }
    Some(format!("{CONNECT}{path},{}", Value::Object(auth)))
}

/// The payload of an engine.io v3 polling POST with its connect packets rewritten
/// ([`rewrite_packet`]), if it has any. A v3 text payload is a run of `LENGTH:PACKET`, the
/// length counted in UTF-16 units as JavaScript counts a string's; a binary payload, or text
/// that does not parse, is left alone.
pub(crate) fn rewrite_payload(payload: &str) -> Option<String> {
    let mut out = String::with_capacity(payload.len() + 16);
    let mut rewritten = false;
    let mut rest = payload;
    while !rest.is_empty() {
        let (length, tail) = rest.split_once(':')?;
        if length.is_empty() || !length.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        let units: usize = length.parse().ok()?;
        let end = utf16_prefix(tail, units)?;
        let (packet, next) = tail.split_at(end);
        match rewrite_packet(packet) {
            Some(packet) => {
                rewritten = true;
                out.push_str(&packet.encode_utf16().count().to_string());
                out.push(':');
                out.push_str(&packet);
            }
            None => {
                out.push_str(length);
                out.push(':');
                out.push_str(packet);
            }
        }
        rest = next;
    }
    rewritten.then_some(out)
}

/// The byte length of the first `units` UTF-16 units of `text`, if it has that many and they
/// end at a character's end.
fn utf16_prefix(text: &str, units: usize) -> Option<usize> {
    let mut counted = 0;
    for (at, character) in text.char_indices() {
        if counted == units {
            return Some(at);
        }
        counted += character.len_utf16();
    }
    (counted == units).then_some(text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_query_becomes_its_auth() {
        assert_eq!(
            rewrite_packet("40/odd?after=41&token=a%20b,").as_deref(),
            Some(r#"40/odd,{"after":"41","token":"a b"}"#)
        );
        assert_eq!(
            rewrite_packet("40/even?token=x").as_deref(),
            Some(r#"40/even,{"token":"x"}"#)
        );
        assert_eq!(
            rewrite_packet("40/odd?after=1&after=2,").as_deref(),
            Some(r#"40/odd,{"after":"1"}"#),
            "the first of a repeated key"
        );
        assert_eq!(
            rewrite_packet("40/odd?even,").as_deref(),
            Some(r#"40/odd,{"even":""}"#)
        );
    }

    #[test]
    fn other_packets_pass_as_they_are() {
        for packet in [
            "40/odd,",
            "40",
            "42/odd,[\"integer\",1]",
            "2probe",
            "3",
            "41/odd?x=1,",
            "40/odd?x=1,{\"after\":3}",
        ] {
            assert_eq!(rewrite_packet(packet), None, "{packet}");
        }
    }

    #[test]
    fn a_polling_payload_is_rewritten_packet_by_packet_with_new_lengths() {
        let payload = "1:2".to_owned() + "16:40/odd?after=41," + "6:40/odd";
        assert_eq!(
            rewrite_payload(&payload).as_deref(),
            Some(r#"1:221:40/odd,{"after":"41"}6:40/odd"#)
        );
        // Lengths count UTF-16 units: "é" is one, "😀" two.
        let wide = "3:4éa22:40/even?t=%F0%9F%98%80";
        assert_eq!(
            rewrite_payload(wide).as_deref(),
            Some("3:4éa18:40/even,{\"t\":\"😀\"}")
        );
    }

    #[test]
    fn a_payload_without_a_query_or_that_does_not_parse_is_left_alone() {
        for payload in [
            "1:2",
            "6:40/odd",
            "",
            "x:2",
            "5:40",
            "2:é",
            "1:",
            "+16:40/odd?after=41,",
        ] {
            assert_eq!(rewrite_payload(payload), None, "{payload:?}");
        }
    }
}
