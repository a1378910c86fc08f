//! The small HTML pages browsers get instead of JSON-LD.
//!
//! Every piece of text that comes from the database is escaped, including
//! post content: pages show a post's source text rather than trusting its
//! stored HTML.

pub use chorus_domain::posts::escape;

/// A complete page with `title` (escaped here) around `body` (already safe
/// HTML). `alternate` is the ActivityPub id of what the page shows, linked
/// for software that finds documents through HTML.
pub fn page(title: &str, alternate: Option<&str>, body: &str) -> String {
    let alternate = alternate
        .map(|id| {
            format!(
                "<link rel=\"alternate\" type=\"application/activity+json\" href=\"{}\">",
                escape(id)
            )
        })
        .unwrap_or_default();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title>{alternate}</head><body>{body}</body></html>\n",
        escape(title)
    )
}

/// The text of an HTML fragment: its tags dropped and the character
/// references [`escape`] writes decoded, ready to be escaped again. Used for
/// posts whose source text is not stored.
pub fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Plain text as escaped paragraphs and line breaks.
pub fn paragraphs(text: &str) -> String {
    text.replace("\r\n", "\n")
        .split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let lines: Vec<String> = p.trim().lines().map(escape).collect();
            format!("<p>{}</p>", lines.join("<br>"))
        })
        .collect()
}

/// The header of an actor's page up to its counts: its name, its address
/// (`@alice@host` for accounts, `!rust@host` for servers) and its summary.
pub fn actor_header(name: &str, uri: &str, address: &str, summary: Option<&str>) -> String {
    let mut header = format!(
        "<main class=\"h-card\"><header><h1 class=\"p-name\">{}</h1>\
         <p><a class=\"u-url\" href=\"{}\">{}</a></p>",
        escape(name),
        escape(uri),
        escape(address),
    );
    if let Some(summary) = summary.filter(|s| !s.is_empty()) {
        header.push_str(&format!(
            "<p class=\"p-note\">{}</p>",
            escape(&strip_tags(summary))
        ));
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_their_title() {
        let page = page("<b>&", Some("https://x.test/a?b=\"c\""), "<p>ok</p>");
        assert!(page.contains("<title>&lt;b&gt;&amp;</title>"));
        assert!(page.contains("<p>ok</p>"));
        assert!(page.contains("href=\"https://x.test/a?b=&quot;c&quot;\""));
    }

    #[test]
    fn tags_are_stripped() {
        assert_eq!(
            strip_tags("<p>Hello <a href=\"x\">@<span>bob</span></a></p><p>again</p>"),
            "Hello @ bob again"
        );
        assert_eq!(strip_tags("<p>a &lt; b &amp;amp;</p>"), "a < b &amp;");
    }
}
