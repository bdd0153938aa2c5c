//! A small, bounded scanner for the start tags of an HTML page: enough to
//! find the URLs a page loads (`<script src>`, `<link href>`, `<img src>`,
//! `<iframe src>`), not a parser. It makes one pass over at most the bytes
//! it is given, keeps at most [`MAX_TAGS`] tags, skips comments and the
//! text of `<script>` and `<style>` elements, and never fails: malformed
//! markup just yields fewer tags.
//!
//! A full HTML5 parser (html5ever) would be several crates for what is a
//! handful of attribute lookups on a capped prefix of the page.

/// Most tags kept from one page.
pub(crate) const MAX_TAGS: usize = 10_000;

/// One start tag: its lower-case name and attributes (lower-case names,
/// values with `&amp;` decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tag {
    pub(crate) name: String,
    pub(crate) attrs: Vec<(String, String)>,
}

impl Tag {
    /// The value of attribute `name` (lower case), if present.
    pub(crate) fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The start tags of `html` whose name is in `wanted` (lower case), in
/// document order.
pub(crate) fn start_tags(html: &[u8], wanted: &[&str]) -> Vec<Tag> {
    let mut tags = Vec::new();
    let mut i = 0;
    while tags.len() < MAX_TAGS {
        let Some(lt) = find(html, i, b"<") else {
            break;
        };
        i = lt + 1;
        let rest = &html[i..];
        if rest.starts_with(b"!--") {
            i = find(html, i + 3, b"-->").map_or(html.len(), |end| end + 3);
            continue;
        }
        let name_len = rest
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-')
            .count();
        if name_len == 0 || !rest[0].is_ascii_alphabetic() {
            continue; // `</x>`, `<!doctype>`, `<?x>`, a stray `<`
        }
        let name = String::from_utf8_lossy(&rest[..name_len]).to_ascii_lowercase();
        let (attrs, end) = attributes(html, i + name_len);
        i = end;
        if name == "script" || name == "style" {
            // Raw text: a `<` in it starts no tag.
            let close = format!("</{name}");
            i = find_ascii_ci(html, i, close.as_bytes()).unwrap_or(html.len());
        }
        if wanted.contains(&name.as_str()) {
            tags.push(Tag { name, attrs });
        }
    }
    tags
}

/// The attributes from `i` to the end of the tag, and the index after it.
fn attributes(html: &[u8], mut i: usize) -> (Vec<(String, String)>, usize) {
    let mut attrs = Vec::new();
    loop {
        while i < html.len() && (html[i].is_ascii_whitespace() || html[i] == b'/') {
            i += 1;
        }
        if i >= html.len() {
            return (attrs, i);
        }
        if html[i] == b'>' {
            return (attrs, i + 1);
        }
        let start = i;
        while i < html.len()
            && !matches!(html[i], b'=' | b'>' | b'/')
            && !html[i].is_ascii_whitespace()
        {
            i += 1;
        }
        let name = String::from_utf8_lossy(&html[start..i]).to_ascii_lowercase();
        while i < html.len() && html[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < html.len() && html[i] == b'=' {
            i += 1;
            while i < html.len() && html[i].is_ascii_whitespace() {
                i += 1;
            }
            let (v, end) = match html.get(i) {
                Some(&q @ (b'"' | b'\'')) => {
                    let close = find(html, i + 1, &[q]).unwrap_or(html.len());
                    (&html[i + 1..close], (close + 1).min(html.len()))
                }
                _ => {
                    let len = html[i..]
                        .iter()
                        .take_while(|b| !b.is_ascii_whitespace() && **b != b'>')
                        .count();
                    (&html[i..i + len], i + len)
                }
            };
            value = String::from_utf8_lossy(v).replace("&amp;", "&");
            i = end;
        }
        if !name.is_empty() {
            attrs.push((name, value));
        }
    }
}

/// Where `needle` first occurs in `hay` at or after `from`.
fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// [`find`], ignoring ASCII case.
fn find_ascii_ci(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srcs(html: &str, wanted: &[&str]) -> Vec<(String, Option<String>)> {
        start_tags(html.as_bytes(), wanted)
            .into_iter()
            .map(|t| {
                let v = t.attr("src").or(t.attr("href")).map(str::to_owned);
                (t.name, v)
            })
            .collect()
    }

    #[test]
    fn finds_quoted_unquoted_and_uppercase_attributes() {
        let html = r#"<!doctype html><HTML><Script SRC="/a.js"></script>
            <link rel=stylesheet href=/s.css><img src='x.png?a=1&amp;b=2' alt="a > b">
            <iframe
               src = "https://f.test/"></iframe><a href="http://x/">x</a>"#;
        let found = srcs(html, &["script", "link", "img", "iframe"]);
        assert_eq!(
            found,
            vec![
                ("script".into(), Some("/a.js".into())),
                ("link".into(), Some("/s.css".into())),
                ("img".into(), Some("x.png?a=1&b=2".into())),
                ("iframe".into(), Some("https://f.test/".into())),
            ]
        );
        let link = &start_tags(html.as_bytes(), &["link"])[0];
        assert_eq!(link.attr("rel"), Some("stylesheet"));
    }

    #[test]
    fn comments_and_script_text_hold_no_tags() {
        let html = r#"<!-- <script src="http://commented/"> -->
            <script>var s = "<img src='http://in-a-string/'>";</SCRIPT>
            <img src="/real.png"><style>a::after{content:"<img src=http://css/>"}</style>"#;
        assert_eq!(
            srcs(html, &["script", "img"]),
            vec![
                ("script".into(), None),
                ("img".into(), Some("/real.png".into()))
            ]
        );
    }

    #[test]
    fn malformed_markup_ends_quietly() {
        for html in [
            "<",
            "<img",
            "<img src=\"unterminated",
            "<<<>>>",
            "<!--",
            "<script>",
        ] {
            let _ = start_tags(html.as_bytes(), &["img", "script"]);
        }
        assert_eq!(
            srcs("<img src=\"unterminated", &["img"]),
            vec![("img".into(), Some("unterminated".into()))]
        );
    }

    #[test]
    fn the_number_of_tags_kept_is_bounded() {
        let html = "<img src=x>".repeat(MAX_TAGS + 5);
        assert_eq!(start_tags(html.as_bytes(), &["img"]).len(), MAX_TAGS);
    }
}
