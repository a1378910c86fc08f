//! Emoji reactions (`EmojiReact`, and `Like` with `content` from Misskey).
//!
//! A reaction is one emoji: a Unicode emoji (possibly a sequence joined
//! with ZWJ, with skin tone or variation selectors, a flag or a keycap) or a
//! custom emoji's `:shortcode:`. Pleroma refuses a reaction of several
//! emoji, and so does Chorus: it could not be shown as one reaction.

/// Whether `content` is exactly one emoji.
pub fn is_single_emoji(content: &str) -> bool {
    let content = content.trim();
    is_shortcode(content) || emoji_count(content) == Some(1)
}

/// `:blobcat:`, or `:blobcat@remote.example:` as Misskey writes remote ones.
fn is_shortcode(s: &str) -> bool {
    let Some(inner) = s.strip_prefix(':').and_then(|s| s.strip_suffix(':')) else {
        return false;
    };
    let (name, host) = match inner.split_once('@') {
        Some((name, host)) => (name, Some(host)),
        None => (inner, None),
    };
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '+'))
        && host.is_none_or(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | ':'))
        })
}

/// How many emoji `s` consists of, or `None` when it has anything else.
fn emoji_count(s: &str) -> Option<usize> {
    let chars: Vec<char> = s.chars().collect();
    let mut count = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if is_regional_indicator(c) {
            // A flag is a pair of regional indicators.
            if !chars.get(i + 1).is_some_and(|n| is_regional_indicator(*n)) {
                return None;
            }
            i += 2;
        } else if is_pictographic(c) {
            i += 1;
            i = skip_modifiers(&chars, i);
            // A ZWJ sequence (👩‍💻) is one emoji.
            while chars.get(i) == Some(&'\u{200D}')
                && chars.get(i + 1).is_some_and(|n| is_pictographic(*n))
            {
                i = skip_modifiers(&chars, i + 2);
            }
        } else if c.is_ascii_digit() || c == '#' || c == '*' {
            // A keycap: digit, optional VS16, U+20E3.
            let mut j = i + 1;
            if chars.get(j) == Some(&'\u{FE0F}') {
                j += 1;
            }
            if chars.get(j) != Some(&'\u{20E3}') {
                return None;
            }
            i = j + 1;
        } else {
            return None;
        }
        count += 1;
    }
    Some(count)
}

/// Past the variation selectors, skin tones, keycap marks and tag
/// characters (subdivision flags) that modify the emoji before `i`.
fn skip_modifiers(chars: &[char], mut i: usize) -> usize {
    while chars.get(i).is_some_and(|c| {
        matches!(*c,
            '\u{FE0E}' | '\u{FE0F}' | '\u{20E3}'
            | '\u{1F3FB}'..='\u{1F3FF}'
            | '\u{E0020}'..='\u{E007F}')
    }) {
        i += 1;
    }
    i
}

fn is_regional_indicator(c: char) -> bool {
    ('\u{1F1E6}'..='\u{1F1FF}').contains(&c)
}

/// An approximation of Unicode's Extended_Pictographic property, without a
/// table crate: the blocks emoji come from. Skin tones are excluded, since
/// they only modify.
fn is_pictographic(c: char) -> bool {
    matches!(c,
        '\u{00A9}' | '\u{00AE}' | '\u{203C}' | '\u{2049}' | '\u{2122}' | '\u{2139}'
        | '\u{2194}'..='\u{2199}' | '\u{21A9}'..='\u{21AA}'
        | '\u{231A}'..='\u{231B}' | '\u{2328}' | '\u{23CF}'
        | '\u{23E9}'..='\u{23F3}' | '\u{23F8}'..='\u{23FA}'
        | '\u{24C2}' | '\u{25AA}'..='\u{25AB}' | '\u{25B6}' | '\u{25C0}'
        | '\u{25FB}'..='\u{25FE}' | '\u{2600}'..='\u{27BF}'
        | '\u{2934}'..='\u{2935}' | '\u{2B05}'..='\u{2B07}'
        | '\u{2B1B}'..='\u{2B1C}' | '\u{2B50}' | '\u{2B55}'
        | '\u{3030}' | '\u{303D}' | '\u{3297}' | '\u{3299}'
        | '\u{1F000}'..='\u{1F1E5}' | '\u{1F200}'..='\u{1F3FA}' | '\u{1F400}'..='\u{1FAFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_emoji_of_any_shape_is_a_reaction() {
        for ok in [
            "👌",
            "❤️",
            "❤",
            "👍🏽",
            "👩‍💻",
            "👨‍👩‍👧‍👦",
            "🏳️‍🌈",
            "🇫🇷",
            "1️⃣",
            "#⃣",
            "🏴\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}",
            " 🎉 ",
            ":blobcat:",
            ":blob_cat-2@misskey.example:",
        ] {
            assert!(is_single_emoji(ok), "{ok}");
        }
    }

    #[test]
    fn several_emoji_or_text_is_not() {
        for bad in [
            "👌👌",
            "",
            " ",
            "ok",
            "a👌",
            "👍 👍",
            "🇫",
            "1",
            ":",
            "::",
            ":a b:",
            "<b>👌</b>",
            ":blobcat::blobcat:",
            "\u{200D}",
            "\u{1F3FB}",
        ] {
            assert!(!is_single_emoji(bad), "{bad}");
        }
    }
}
