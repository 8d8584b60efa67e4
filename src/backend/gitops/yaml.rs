//! Editing one scalar of a YAML file as text: the key path is found by
//! indentation and only the value's bytes change, so comments, quoting and
//! key order survive in a file people review.

/// Where the scalar at a key path sits in a YAML text.
#[derive(Debug, PartialEq)]
pub struct Scalar {
    pub value: String,
    /// Byte range of the value (inside its quotes) in the text.
    pub start: usize,
    pub end: usize,
    pub line: usize,
}

/// Finds the scalar at a dotted key path (`image.tag`) by reading lines and
/// indentation, the way a person would: block mappings only, value on the
/// key's line.
pub fn find_scalar(text: &str, path: &str) -> Result<Scalar, String> {
    let segs: Vec<&str> = path.split('.').collect();
    let mut depth = 0;
    let mut parent_indent: isize = -1;
    let mut child_indent: Option<usize> = None;
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let here = offset;
        offset += line.len();
        let body = line.trim_end_matches(['\n', '\r']);
        let trimmed = body.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
            continue;
        }
        let indent = body.len() - trimmed.len();
        if (indent as isize) <= parent_indent {
            break;
        }
        if indent != *child_indent.get_or_insert(indent) {
            continue;
        }
        let seg = segs[depth];
        let rest = [seg.to_string(), format!("\"{seg}\""), format!("'{seg}'")]
            .iter()
            .find_map(|k| trimmed.strip_prefix(k.as_str()))
            .and_then(|r| r.strip_prefix(':'))
            .filter(|r| r.is_empty() || r.starts_with([' ', '\t']));
        let Some(rest) = rest else { continue };
        if depth + 1 < segs.len() {
            depth += 1;
            parent_indent = indent as isize;
            child_indent = None;
            continue;
        }
        let rest_at = here + (body.len() - rest.len());
        let v = rest.trim_start();
        let v_at = rest_at + (rest.len() - v.len());
        if v.is_empty() || v.starts_with('#') {
            return Err(format!(
                "`{path}` (line {}) has no value on its line; rollbot edits only a scalar written after the key",
                n + 1
            ));
        }
        if v.starts_with(['|', '>', '{', '[', '&', '*', '!']) {
            return Err(format!(
                "`{path}` (line {}) is not a plain scalar; rollbot edits only plain or quoted scalars",
                n + 1
            ));
        }
        let (start, end) = if let Some(q) = v.chars().next().filter(|c| *c == '"' || *c == '\'') {
            let close = v[1..]
                .find(q)
                .ok_or_else(|| format!("`{path}` (line {}) has an unclosed quote", n + 1))?;
            (v_at + 1, v_at + 1 + close)
        } else {
            let stop = v.find(" #").or_else(|| v.find("\t#")).unwrap_or(v.len());
            (v_at, v_at + v[..stop].trim_end().len())
        };
        return Ok(Scalar {
            value: text[start..end].to_string(),
            start,
            end,
            line: n + 1,
        });
    }
    Err(format!("key `{path}` not found"))
}

/// Replaces the scalar at `path`; everything else is kept byte for byte.
pub fn set_scalar(text: &str, path: &str, value: &str) -> Result<(String, Scalar), String> {
    let s = find_scalar(text, path)?;
    let mut out = String::with_capacity(text.len() + value.len());
    out.push_str(&text[..s.start]);
    out.push_str(value);
    out.push_str(&text[s.end..]);
    Ok((out, s))
}

/// Revisions are written into YAML unquoted or quoted, so only characters
/// that cannot change the document's structure are allowed.
pub fn check_revision(r: &str) -> Result<(), String> {
    if !r.is_empty()
        && r.len() <= 200
        && r.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:/@+".contains(c))
    {
        Ok(())
    } else {
        Err(format!(
            "`{r}` is not a revision rollbot will write into YAML (letters, digits and . _ - : / @ + only)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUES: &str = "# checkout in prod\nreplicaCount: 3\nimage:\n  repository: registry.example.com/checkout  # the app\n  # pinned by CI\n  tag: \"v7\"   # current\n  pullPolicy: IfNotPresent\nsidecar:\n  image:\n    tag: v1\n";

    #[test]
    fn finds_the_scalar_at_a_key_path() {
        let s = find_scalar(VALUES, "image.tag").unwrap();
        assert_eq!((s.value.as_str(), s.line), ("v7", 6));
        assert_eq!(
            find_scalar(VALUES, "sidecar.image.tag").unwrap().value,
            "v1"
        );
        assert_eq!(
            find_scalar(VALUES, "image.repository").unwrap().value,
            "registry.example.com/checkout"
        );
        assert_eq!(find_scalar(VALUES, "replicaCount").unwrap().value, "3");
        assert!(find_scalar(VALUES, "image.digest")
            .unwrap_err()
            .contains("not found"));
        assert!(find_scalar(VALUES, "image")
            .unwrap_err()
            .contains("no value"));
        // `tag` under `sidecar.image` is not `image.tag`.
        assert!(find_scalar("sidecar:\n  image:\n    tag: v1\n", "image.tag").is_err());
    }

    #[test]
    fn setting_a_value_changes_one_line_only() {
        let (out, old) = set_scalar(VALUES, "image.tag", "v6").unwrap();
        assert_eq!(old.value, "v7");
        let changed: Vec<_> = VALUES
            .lines()
            .zip(out.lines())
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(
            changed,
            vec![("  tag: \"v7\"   # current", "  tag: \"v6\"   # current")]
        );
        let (out, _) = set_scalar(VALUES, "sidecar.image.tag", "v0.9").unwrap();
        assert!(out.ends_with("    tag: v0.9\n"));
        let (out, _) = set_scalar("a:\n  b: x # c\r\n", "a.b", "y").unwrap();
        assert_eq!(out, "a:\n  b: y # c\r\n");
    }

    #[test]
    fn revisions_cannot_inject_yaml() {
        assert!(check_revision("v1.2.3-rc.1+build").is_ok());
        assert!(check_revision("sha256:abc").is_ok());
        for bad in ["", "v1\nmalicious: true", "v1 # x", "\"v1", "{a}"] {
            assert!(check_revision(bad).is_err(), "{bad:?}");
        }
    }
}
