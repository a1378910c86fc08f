//! Sanitising the HTML other servers send.
//!
//! Remote content is shown to local users inside Chorus' pages and clients,
//! so it is reduced to an allow-list of formatting tags before it is stored:
//! whatever a remote server sends, no script, event handler, style or
//! non-web URL survives.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use ammonia::{Builder, UrlRelative};

use crate::posts::escape;

/// What every remote link gets: no ranking credit for the remote page, no
/// access to the opener window, no referrer leaking the reader's page.
pub const LINK_REL: &str = "nofollow noopener noreferrer";

/// The classes that carry meaning in federated HTML: Mastodon's mention and
/// hashtag links (`mention`, `hashtag`, `u-url`, `h-card`) and the spans it
/// uses to shorten long URLs (`invisible`, `ellipsis`).
const KEPT_CLASSES: &[&str] = &[
    "mention",
    "hashtag",
    "u-url",
    "h-card",
    "invisible",
    "ellipsis",
];

static SANITIZER: LazyLock<Builder<'static>> = LazyLock::new(|| {
    let tags: HashSet<&str> = [
        "p",
        "br",
        "a",
        "span",
        "strong",
        "em",
        "b",
        "i",
        "u",
        "s",
        "del",
        "code",
        "pre",
        "blockquote",
        "ul",
        "ol",
        "li",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
    ]
    .into_iter()
    .collect();
    // `rel` is not listed: `link_rel` sets it on every link, replacing
    // whatever the sender wrote. `class` is not listed either: it goes
    // through `allowed_classes`, which keeps only the meaningful ones.
    let attributes: HashMap<&str, HashSet<&str>> = HashMap::from([
        ("a", HashSet::from(["href"])),
        ("ol", HashSet::from(["start", "reversed"])),
        ("li", HashSet::from(["value"])),
    ]);
    let classes: HashMap<&str, HashSet<&str>> = HashMap::from([
        ("a", KEPT_CLASSES.iter().copied().collect()),
        ("span", KEPT_CLASSES.iter().copied().collect()),
    ]);
    let mut builder = Builder::empty();
    builder
        .tags(tags)
        .tag_attributes(attributes)
        .generic_attributes(HashSet::new())
        .allowed_classes(classes)
        .url_schemes(HashSet::from(["http", "https", "mailto"]))
        // A relative link in a remote post is relative to a page we do not
        // show; it would resolve against Chorus' own pages instead.
        .url_relative(UrlRelative::Deny)
        .link_rel(Some(LINK_REL))
        .strip_comments(true);
    builder
});

static STRIP_ALL: LazyLock<Builder<'static>> = LazyLock::new(|| {
    let mut builder = Builder::empty();
    builder
        .generic_attributes(HashSet::new())
        .strip_comments(true);
    builder
});

/// Remote HTML reduced to formatting, links and mentions, safe to embed.
///
/// Links keep only `href` (http, https or mailto) and the mention/hashtag
/// classes, and always get `rel="nofollow noopener noreferrer"`; `<script>`
/// and `<style>` disappear with their content; other tags are dropped but
/// their text kept.
pub fn sanitize_html(input: &str) -> String {
    SANITIZER.clean(input).to_string()
}

/// Plain text (PeerTube sends markdown source as `content`, flagged by
/// `mediaType`) as HTML: escaped, paragraphs at blank lines, line breaks at
/// newlines. The markdown is not rendered; shown as written, it stays
/// readable, and no markup of the sender's reaches the page.
pub(crate) fn text_to_html(text: &str) -> String {
    text.replace("\r\n", "\n")
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let lines: Vec<String> = p.lines().map(escape).collect();
            format!("<p>{}</p>", lines.join("<br>"))
        })
        .collect()
}

/// Remote HTML (or text) as plain text: tags removed, paragraphs and line
/// breaks kept as newlines, entities decoded. For content warnings, names
/// and titles, which clients show as text.
pub fn html_to_text(input: &str) -> String {
    let marked = mark_breaks(input);
    let stripped = STRIP_ALL.clean(&marked).to_string();
    let decoded = stripped
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    let mut out = String::with_capacity(decoded.len());
    let mut newlines = 0;
    for c in decoded.trim().chars() {
        if c == '\n' {
            newlines += 1;
            if newlines > 2 {
                continue;
            }
        } else {
            newlines = 0;
        }
        out.push(c);
    }
    out
}

/// Puts a newline before every `<br>` and two after every `</p>`, so the
/// text keeps the lines the markup had. Tag names are matched without
/// regard to case; ASCII lower-casing keeps byte offsets, so positions found
/// in the lower-cased copy are valid in the input.
fn mark_breaks(input: &str) -> String {
    let lower = input.to_ascii_lowercase();
    let mut out = String::with_capacity(input.len() + 16);
    let mut last = 0;
    let mut i = 0;
    while let Some(pos) = lower[i..].find('<') {
        let at = i + pos;
        let rest = &lower[at..];
        if rest.starts_with("<br") {
            out.push_str(&input[last..at]);
            out.push('\n');
            last = at;
        } else if rest.starts_with("</p>") {
            out.push_str(&input[last..at + 4]);
            out.push_str("\n\n");
            last = at + 4;
        }
        i = at + 1;
    }
    out.push_str(&input[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(sanitize_html(input), expected, "input: {input}");
    }

    #[test]
    fn formatting_and_mentions_survive() {
        check(
            "<p>Hi <span class=\"h-card\"><a href=\"https://b.example/@bob\" class=\"u-url mention\">@<span>bob</span></a></span></p>",
            "<p>Hi <span class=\"h-card\"><a href=\"https://b.example/@bob\" class=\"u-url mention\" rel=\"nofollow noopener noreferrer\">@<span>bob</span></a></span></p>",
        );
        check(
            "<a href=\"https://b.example/tags/rust\" class=\"mention hashtag\" rel=\"tag\">#<span>rust</span></a>",
            "<a href=\"https://b.example/tags/rust\" class=\"mention hashtag\" rel=\"nofollow noopener noreferrer\">#<span>rust</span></a>",
        );
        check(
            "<p><strong>b</strong> <em>i</em> <del>d</del><br><code>c</code></p><blockquote>q</blockquote><ul><li>x</li></ul>",
            "<p><strong>b</strong> <em>i</em> <del>d</del><br><code>c</code></p><blockquote>q</blockquote><ul><li>x</li></ul>",
        );
    }

    #[test]
    fn scripts_vanish_with_their_content() {
        check("<p>a<script>alert(1)</script>b</p>", "<p>ab</p>");
        check("<script src=\"https://evil.example/x.js\"></script>", "");
        check("<style>body{display:none}</style>text", "text");
    }

    #[test]
    fn javascript_urls_never_survive() {
        check(
            "<a href=\"javascript:alert(1)\">x</a>",
            "<a rel=\"nofollow noopener noreferrer\">x</a>",
        );
        check(
            "<a href=\"JaVaScRiPt:alert(1)\">x</a>",
            "<a rel=\"nofollow noopener noreferrer\">x</a>",
        );
        check(
            "<a href=\"  javascript:alert(1)\">x</a>",
            "<a rel=\"nofollow noopener noreferrer\">x</a>",
        );
        check(
            "<a href=\"jav&#x09;ascript:alert(1)\">x</a>",
            "<a rel=\"nofollow noopener noreferrer\">x</a>",
        );
        check(
            "<a href=\"data:text/html;base64,PHNjcmlwdD4=\">x</a>",
            "<a rel=\"nofollow noopener noreferrer\">x</a>",
        );
        check(
            "<a href=\"vbscript:msgbox(1)\">x</a>",
            "<a rel=\"nofollow noopener noreferrer\">x</a>",
        );
        check(
            "<a href=\"/relative\">x</a>",
            "<a rel=\"nofollow noopener noreferrer\">x</a>",
        );
        check(
            "<a href=\"mailto:a@b.example\">m</a>",
            "<a href=\"mailto:a@b.example\" rel=\"nofollow noopener noreferrer\">m</a>",
        );
    }

    #[test]
    fn handlers_styles_and_foreign_attributes_are_dropped() {
        check(
            "<p onclick=\"alert(1)\" style=\"color:red\" id=\"x\">t</p>",
            "<p>t</p>",
        );
        check(
            "<a href=\"https://a.example\" onmouseover=\"alert(1)\" target=\"_top\" rel=\"opener\">t</a>",
            "<a href=\"https://a.example\" rel=\"nofollow noopener noreferrer\">t</a>",
        );
        check(
            "<span class=\"evil mention\">t</span>",
            "<span class=\"mention\">t</span>",
        );
        check("<img src=x onerror=alert(1)>", "");
        check("<svg><g onload=alert(1)></g></svg>t", "t");
        check("<iframe src=\"https://evil.example\"></iframe>t", "t");
        check(
            "<form action=\"https://evil.example\"><input name=a></form>t",
            "t",
        );
    }

    #[test]
    fn malformed_and_nested_markup_is_made_harmless() {
        check(
            "<<script>script>alert(1)<</script>/script>",
            "&lt;/script&gt;",
        );
        check(
            "<p>unclosed <strong>bold",
            "<p>unclosed <strong>bold</strong></p>",
        );
        check("<!-- <script>alert(1)</script> -->t", "t");
        check("<scr<script>ipt>alert(1)</script>", "ipt&gt;alert(1)");
        check(
            "<a href=\"https://a.example/?q=&quot;&gt;&lt;script&gt;\">t</a>",
            "<a href=\"https://a.example/?q=&quot;&gt;&lt;script&gt;\" rel=\"nofollow noopener noreferrer\">t</a>",
        );
        check(
            "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
            "",
        );
    }

    #[test]
    fn text_content_becomes_escaped_paragraphs() {
        assert_eq!(
            text_to_html("Hello <b>you</b>\nsecond line\r\n\r\n\n\nnext & last"),
            "<p>Hello &lt;b&gt;you&lt;/b&gt;<br>second line</p><p>next &amp; last</p>"
        );
        assert_eq!(text_to_html("  "), "");
    }

    #[test]
    fn plain_text_keeps_lines_and_decodes_entities() {
        assert_eq!(
            html_to_text("<p>a &amp; b</p><p>c<br>d</p>"),
            "a & b\n\nc\nd"
        );
        assert_eq!(html_to_text("CW: <b>spoilers</b> &lt;3"), "CW: spoilers <3");
        assert_eq!(html_to_text("<script>alert(1)</script>ok"), "ok");
        assert_eq!(html_to_text("plain text"), "plain text");
        assert_eq!(html_to_text("<P>x</P><BR/>y"), "x\n\ny");
    }
}
