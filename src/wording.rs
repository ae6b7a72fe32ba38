//! PURE: how other libraries' errors are worded in ours — one home for the
//! small helpers every module's messages use.

/// An I/O error as a phrase, without the "(os error N)" suffix:
/// `No such file or directory`.
pub fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Other libraries' messages start upper-case; ours never do.
pub fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_lose_their_os_error_number() {
        let e = std::io::Error::from_raw_os_error(2);
        assert_eq!(io_reason(&e), "No such file or directory");
        assert_eq!(lowercase_first(&io_reason(&e)), "no such file or directory");
        assert_eq!(lowercase_first(""), "");
        assert_eq!(lowercase_first("Über"), "über");
    }
}
