//! Mercure topic selectors: `*`, a topic written out, or a URI template
//! (RFC 6570) that the topic must be an expansion of, as the Mercure hub
//! matches them (`topic=` when subscribing, the JWT's `publish` and
//! `subscribe` claims).
//!
//! A template is matched in place, without compiling it: a subscriber's
//! selectors stay the strings it sent (per-connection memory is the
//! product), and a match is one left-to-right pass that keeps the set of
//! topic positions each part of the template can end at (no backtracking,
//! so a template with many expressions costs its length times the topic's,
//! never more). An expression matches what its expansion can produce: for
//! `{var}` unreserved characters and percent-encodings (never a `/`), for
//! `{+var}` and `{#var}` reserved characters too, for `{/var}`, `{.var}`,
//! `{;var}`, `{?var}` and `{&var}` their prefix and then such values with
//! their separators; any expression may also expand to nothing (an
//! undefined variable). Characters outside ASCII (IRIs) count as
//! unreserved.

/// Whether `selector` selects `topic`.
pub fn matches(selector: &str, topic: &str) -> bool {
    selector == "*" || selector == topic || (selector.contains('{') && template(selector, topic))
}

/// Whether `topic` is an expansion of the URI template `template`. A
/// malformed template (an unclosed `{`, an unknown operator, a bad
/// variable name) matches nothing.
pub fn template(template: &str, topic: &str) -> bool {
    let topic = topic.as_bytes();
    let n = topic.len();
    // `reach[p]`: the parts matched so far can end at topic position `p`.
    let mut reach = vec![false; n + 1];
    reach[0] = true;
    let mut rest = template;
    while !rest.is_empty() {
        let mut next = vec![false; n + 1];
        if let Some(body) = rest.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return false;
            };
            let Some(expression) = Expression::parse(&body[..end]) else {
                return false;
            };
            expression.advance(topic, &reach, &mut next);
            rest = &body[end + 1..];
        } else {
            let end = rest.find('{').unwrap_or(rest.len());
            let literal = &rest.as_bytes()[..end];
            for p in (0..=n).filter(|&p| reach[p]) {
                if topic[p..].starts_with(literal) {
                    next[p + literal.len()] = true;
                }
            }
            rest = &rest[end..];
        }
        if !next.contains(&true) {
            return false;
        }
        reach = next;
    }
    reach[n]
}

/// One `{…}` expression: what its expansion starts with and may contain.
struct Expression {
    /// The operator's first character (`/` for `{/var}`), if it has one.
    prefix: Option<u8>,
    /// `+` and `#` expand reserved characters as they are.
    reserved: bool,
    /// `;`, `?` and `&` write `name=value`.
    named: bool,
    /// The character between two values.
    separator: u8,
}

impl Expression {
    fn parse(body: &str) -> Option<Self> {
        let (operator, variables) = match body.as_bytes().first()? {
            op @ (b'+' | b'#' | b'.' | b'/' | b';' | b'?' | b'&') => (Some(*op), &body[1..]),
            _ => (None, body),
        };
        let valid_name = |spec: &str| {
            let name = spec.strip_suffix('*').unwrap_or(spec);
            let name = match name.split_once(':') {
                Some((name, length)) => {
                    let length_ok = !length.is_empty()
                        && length.len() <= 4
                        && length.bytes().all(|b| b.is_ascii_digit());
                    if !length_ok {
                        return false;
                    }
                    name
                }
                None => name,
            };
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'%'))
        };
        if !variables.split(',').all(valid_name) {
            return None;
        }
        let (prefix, separator) = match operator {
            None | Some(b'+') => (None, b','),
            Some(b'#') => (Some(b'#'), b','),
            Some(b'?') => (Some(b'?'), b'&'),
            Some(op) => (Some(op), op),
        };
        Some(Self {
            prefix,
            reserved: matches!(operator, Some(b'+' | b'#')),
            named: matches!(operator, Some(b';' | b'?' | b'&')),
            separator,
        })
    }

    /// Whether `byte` may appear in this expression's expansion after its prefix.
    fn allows(&self, byte: u8) -> bool {
        let unreserved = byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'%')
            || !byte.is_ascii();
        unreserved
            || byte == self.separator
            || byte == b','
            || (self.named && byte == b'=')
            || (self.reserved && b":/?#[]@!$&'()*+,;=".contains(&byte))
    }

    /// Marks in `next` every position this expression can end at, starting
    /// from any position marked in `reach`. The positions one start reaches
    /// are a range (the expansion is a run of allowed bytes), so the ranges
    /// are added up in one pass instead of marked one by one.
    fn advance(&self, topic: &[u8], reach: &[bool], next: &mut [bool]) {
        let n = topic.len();
        // `run_end[i]`: the end of the run of allowed bytes from `i`.
        let mut run_end = vec![n; n + 1];
        for i in (0..n).rev() {
            run_end[i] = if self.allows(topic[i]) {
                run_end[i + 1]
            } else {
                i
            };
        }
        // +1 where a range starts, -1 just past where it ends.
        let mut delta = vec![0i32; n + 2];
        for p in (0..=n).filter(|&p| reach[p]) {
            // An undefined variable expands to nothing.
            delta[p] += 1;
            delta[p + 1] -= 1;
            let start = match self.prefix {
                None => p,
                Some(prefix) if topic.get(p) == Some(&prefix) => p + 1,
                Some(_) => continue,
            };
            delta[start] += 1;
            delta[run_end[start] + 1] -= 1;
        }
        let mut depth = 0;
        for (p, reached) in next.iter_mut().enumerate() {
            depth += delta[p];
            *reached = depth > 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn selectors_match_as_mercure_does() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "https://example.com/books/1", true),
            ("*", "", true),
            (
                "https://example.com/books/1",
                "https://example.com/books/1",
                true,
            ),
            (
                "https://example.com/books/1",
                "https://example.com/books/2",
                false,
            ),
            ("raw string", "raw string", true),
            (
                "https://example.com/books/{id}",
                "https://example.com/books/1",
                true,
            ),
            (
                "https://example.com/books/{id}",
                "https://example.com/books/",
                true,
            ),
            (
                "https://example.com/books/{id}",
                "https://example.com/books/1/x",
                false,
            ),
            (
                "https://example.com/books/{id}",
                "https://example.com/authors/1",
                false,
            ),
            (
                "https://example.com/books/{id}.json",
                "https://example.com/books/12.json",
                true,
            ),
            (
                "https://example.com/{+path}",
                "https://example.com/a/b?c=d",
                true,
            ),
            (
                "https://example.com/{path}",
                "https://example.com/a/b",
                false,
            ),
            (
                "https://example.com/users/{id}/books/{book}",
                "https://example.com/users/7/books/9",
                true,
            ),
            (
                "https://example.com/users/{id}/books/{book}",
                "https://example.com/users/7/books",
                false,
            ),
            (
                "https://example.com/x{/segments*}",
                "https://example.com/x/a/b",
                true,
            ),
            (
                "https://example.com/x{/segment}",
                "https://example.com/x",
                true,
            ),
            (
                "https://example.com/search{?q,lang}",
                "https://example.com/search?q=cat&lang=en",
                true,
            ),
            (
                "https://example.com/search{?q}",
                "https://example.com/search#q=cat",
                false,
            ),
            (
                "https://example.com/page{#section}",
                "https://example.com/page#a/b",
                true,
            ),
            (
                "https://example.com/{lang:2}/news",
                "https://example.com/en/news",
                true,
            ),
            (
                "https://example.com/ü/{id}",
                "https://example.com/ü/ß",
                true,
            ),
            // Malformed templates match nothing.
            ("https://example.com/{id", "https://example.com/{id", true),
            ("https://example.com/{id", "https://example.com/1", false),
            ("https://example.com/{!id}", "https://example.com/1", false),
            ("https://example.com/{}", "https://example.com/", false),
            ("https://example.com/{a b}", "https://example.com/1", false),
        ];
        for (selector, topic, expected) in cases {
            assert_eq!(matches(selector, topic), *expected, "{selector} ~ {topic}");
        }
    }

    #[test]
    fn many_expressions_stay_linear() {
        let template = "{a}".repeat(200);
        let topic = "x".repeat(2000) + "/";
        assert!(!matches(&template, &topic));
        assert!(matches(&template, &"x".repeat(2000)));
    }
}
