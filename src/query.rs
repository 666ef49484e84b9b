//! Reading the URL query strings clients send; the parsing the server does by hand lives here,
//! so it can be tested and fuzzed in one place.

/// Whether `query` has a parameter named `key`, with or without a value (`key`, `key=`,
/// `key=1`). Only the name is compared: `NOkey=1` and `x=key` do not count.
pub fn has_key(query: Option<&str>, key: &str) -> bool {
    query
        .unwrap_or("")
        .split('&')
        .any(|pair| pair.split('=').next() == Some(key))
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
}
