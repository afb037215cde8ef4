//! Bounds on text from outside (API error bodies, transport errors, store messages) before it reaches a log line,
//! a Firestore document or a manifest.

use serde_json::Value;

/// The longest error text kept, in bytes.
pub const MAX_ERROR_TEXT: usize = 2 * 1024;

/// `text` cut to at most `max` bytes on a character boundary, with `…` when something was cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// An error text as stored: at most [`MAX_ERROR_TEXT`] bytes.
pub fn clip_error(text: &str) -> String {
    clip(text, MAX_ERROR_TEXT)
}

/// Error details as stored: kept whole when their JSON is at most four times [`MAX_ERROR_TEXT`], otherwise replaced
/// by the clipped JSON text.
pub fn clip_details(details: Value) -> Value {
    let text = details.to_string();
    if text.len() <= 4 * MAX_ERROR_TEXT {
        details
    } else {
        serde_json::json!({ "truncated": clip(&text, MAX_ERROR_TEXT) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        assert_eq!(clip("short", 10), "short");
        let long = "é".repeat(3000);
        let c = clip_error(&long);
        assert!(c.len() <= MAX_ERROR_TEXT && c.ends_with('…'), "{}", c.len());
        let big = serde_json::json!({ "x": "y".repeat(20_000) });
        assert!(clip_details(big).to_string().len() < 3 * MAX_ERROR_TEXT);
    }
}
