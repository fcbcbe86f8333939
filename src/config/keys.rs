//! Where a setting came from and how its key is named in errors: keys are
//! dotted paths whose parts may be quoted, as TOML writes them
//! (`delivery.site."google.com".max_connections`), and the layer is a
//! file, an environment variable, the flags or the built-in defaults.

use super::*;

/// Names the layer a key's value came from. `key` is a dotted path whose
/// parts may be quoted: `delivery.site."google.com".max_connections`.
pub(super) fn origin(figment: Option<&Figment>, key: &str) -> String {
    let parts = key_parts(key);
    let Some(metadata) = figment.and_then(|f| find_metadata(f, &parts)) else {
        return "the given settings".to_owned();
    };
    describe_metadata(metadata, &parts)
}

/// The metadata of the layer that gave the value at `parts`. Walks the
/// dictionaries itself: figment's own `find_metadata` splits at every dot,
/// also inside a quoted site suffix. A part may end in array indices,
/// `addresses[0]`.
fn find_metadata<'f>(figment: &'f Figment, parts: &[String]) -> Option<&'f Metadata> {
    let (first, rest) = parts.split_first()?;
    let (first, indices) = indexed(first);
    let mut value = figment.find_value(first).ok()?;
    for index in indices {
        value = value.into_array()?.into_iter().nth(index)?;
    }
    for part in rest {
        let (name, indices) = indexed(part);
        value = value.into_dict()?.remove(name)?;
        for index in indices {
            value = value.into_array()?.into_iter().nth(index)?;
        }
    }
    figment.get_metadata(value.tag())
}

/// `name[1][2]` as `("name", [1, 2])`; a part without indices as itself.
fn indexed(part: &str) -> (&str, Vec<usize>) {
    let Some(open) = part.find('[') else {
        return (part, Vec::new());
    };
    let indices = part[open..]
        .split_terminator(']')
        .map(|index| index.strip_prefix('[').and_then(|n| n.parse().ok()))
        .collect::<Option<Vec<usize>>>();
    match indices {
        Some(indices) if part.ends_with(']') => (&part[..open], indices),
        _ => (part, Vec::new()),
    }
}

/// `a.b."c.d".e` as `["a", "b", "c.d", "e"]` (TOML's dotted keys, basic
/// strings with `\` escapes).
fn key_parts(key: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut part = String::new();
    let (mut quoted, mut escaped) = (false, false);
    for c in key.chars() {
        match c {
            _ if escaped => {
                part.push(c);
                escaped = false;
            }
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut part)),
            _ => part.push(c),
        }
    }
    parts.push(part);
    parts
}

/// A TOML bare key: it needs no quotes.
fn is_bare_key(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The path as TOML writes it, parts that are not bare keys quoted.
fn display_key(parts: &[String]) -> String {
    let shown: Vec<String> = parts
        .iter()
        .map(|part| {
            if is_bare_key(part) {
                part.clone()
            } else {
                format!("{part:?}")
            }
        })
        .collect();
    shown.join(".")
}

fn describe_metadata(metadata: &Metadata, parts: &[String]) -> String {
    if let Some(source) = &metadata.source {
        // figment shows file paths relative to the working directory.
        return source.to_string();
    }
    if metadata.name.contains("environment") {
        // A table such as a site rule comes whole from the variable of
        // the path up to its first quoted part.
        let bare: Vec<&str> = parts
            .iter()
            .take_while(|part| is_bare_key(part))
            .map(String::as_str)
            .collect();
        let var = bare.join("__").to_ascii_uppercase();
        return format!("environment variable {ENV_PREFIX}{var}");
    }
    metadata.name.to_string()
}

/// One line per figment error: what, which key, which layer.
pub(super) fn describe_figment(error: &figment::Error) -> String {
    use figment::error::{Kind, OneOf};
    let lines: Vec<String> = error
        .clone()
        .into_iter()
        .map(|e| {
            let key = display_key(&e.path);
            let place = match &e.metadata {
                Some(metadata) => format!(" in {}", describe_metadata(metadata, &e.path)),
                None => String::new(),
            };
            match &e.kind {
                Kind::UnknownField(_, expected) => {
                    format!("unknown key `{key}`{place} (expected {})", OneOf(expected))
                }
                Kind::UnknownVariant(found, expected) => format!(
                    "invalid value for `{key}` ({found:?}){place}: expected {}",
                    OneOf(expected)
                ),
                kind if key.is_empty() => format!("invalid configuration{place}: {kind}"),
                kind => format!("invalid value for `{key}`{place}: {kind}"),
            }
        })
        .collect();
    // A parse error quotes the bad line, and marks its column with a line
    // as long: each is cut to a readable length.
    validate::shorten(&lines.join("\n"))
}
