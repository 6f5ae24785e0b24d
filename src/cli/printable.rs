//! Text that came from the network, made safe for an operator's terminal:
//! a node chooses its own host name, and escape sequences in it must not
//! reach the terminal that lists it.

use std::borrow::Cow;

/// `s` with every control character (newlines, ESC, NUL …) written as an
/// escape (`\n`, `\u{1b}`), so it prints as one inert line.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| match c.is_control() {
                true => c.escape_default().to_string(),
                false => c.to_string(),
            })
            .collect(),
    )
}

/// The JSON string at `v`, printable ("" when absent).
pub fn field<'a>(v: &'a serde_json::Value, key: &str) -> Cow<'a, str> {
    printable(v[key].as_str().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_kept() {
        assert_eq!(printable("edge-01.example"), "edge-01.example");
        assert_eq!(printable("a\u{1b}[2Jb\nc\0"), "a\\u{1b}[2Jb\\nc\\u{0}");
    }
}
