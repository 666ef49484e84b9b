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

/// The value of the first parameter named `key` (`""` for a bare `key`), undecoded.
pub fn value<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (name == key).then_some(value)
    })
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
}
