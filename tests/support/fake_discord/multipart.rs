//! Uploads: multipart bodies with a `payload_json` part and `files[N]`
//! parts, and the attachments they leave on a message.

use super::wire::{error, parse};
use super::FakeState;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};
use std::collections::HashMap;

/// One uploaded file: (`files[N]` index, filename, bytes).
pub(super) type Upload = (u64, String, Vec<u8>);

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

fn disposition(headers: &str, key: &str) -> Option<String> {
    let line = headers
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))?;
    let pat = format!("{key}=\"");
    let at = line.find(&pat)? + pat.len();
    let end = line[at..].find('"')? + at;
    Some(line[at..end].to_string())
}

/// A JSON body, or a multipart one (`payload_json` and `files[N]`), as
/// Discord takes them; `Err` answers a malformed multipart body.
pub(super) fn read_body(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Value, Vec<Upload>), Box<Response>> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(boundary) = ct
        .strip_prefix("multipart/form-data")
        .and_then(|r| r.split("boundary=").nth(1))
    else {
        return Ok((parse(&String::from_utf8_lossy(body)), Vec::new()));
    };
    let bad = || Box::new(error(400, 50035, "Invalid Form Body"));
    let delim = format!("--{}", boundary.trim_matches('"'));
    let mut payload = Value::Null;
    let mut files = Vec::new();
    let mut at = find(body, delim.as_bytes(), 0).ok_or_else(bad)? + delim.len();
    loop {
        if body[at..].starts_with(b"--") {
            break;
        }
        at = find(body, b"\r\n", at).ok_or_else(bad)? + 2;
        let head_end = find(body, b"\r\n\r\n", at).ok_or_else(bad)?;
        let head = String::from_utf8_lossy(&body[at..head_end]).to_string();
        let start = head_end + 4;
        let next_delim = format!("\r\n{delim}");
        let end = find(body, next_delim.as_bytes(), start).ok_or_else(bad)?;
        let content = &body[start..end];
        let name = disposition(&head, "name").ok_or_else(bad)?;
        if name == "payload_json" {
            payload = serde_json::from_slice(content).map_err(|_| bad())?;
        } else if let Some(n) = name
            .strip_prefix("files[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|n| n.parse().ok())
        {
            let filename = disposition(&head, "filename").ok_or_else(bad)?;
            files.push((n, filename, content.to_vec()));
        }
        at = end + next_delim.len();
    }
    Ok((payload, files))
}

/// The message's attachments after a create or edit with `uploads`: Discord
/// keeps the listed existing ones, adds the uploaded files, and answers
/// 50035 when an entry names a file that was not sent.
pub(super) fn attachments(
    s: &mut FakeState,
    current: &Value,
    body: &Value,
    uploads: &[Upload],
) -> Result<Option<Value>, Box<Response>> {
    let listed = body.get("attachments").and_then(|a| a.as_array());
    if listed.is_none() && uploads.is_empty() {
        return Ok(None);
    }
    let mut out: Vec<Value> = match listed {
        Some(_) => Vec::new(),
        None => current.as_array().cloned().unwrap_or_default(),
    };
    let mut described = HashMap::new();
    for a in listed.into_iter().flatten() {
        let id = match &a["id"] {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            _ => return Err(Box::new(error(400, 50035, "Invalid Form Body"))),
        };
        if let Some(old) = current
            .as_array()
            .and_then(|c| c.iter().find(|o| o["id"] == id.as_str()))
        {
            out.push(old.clone());
        } else if let Ok(n) = id.parse::<u64>() {
            if !uploads.iter().any(|u| u.0 == n) {
                return Err(Box::new(error(400, 50035, "Invalid Form Body")));
            }
            described.insert(n, a.clone());
        } else {
            return Err(Box::new(error(400, 50035, "Invalid Form Body")));
        }
    }
    for (n, filename, bytes) in uploads {
        let id = s.id();
        let d = described.get(n).cloned().unwrap_or(Value::Null);
        let name = d["filename"].as_str().unwrap_or(filename).to_string();
        let mut a = json!({
            "id": id,
            "filename": name,
            "size": bytes.len(),
            "url": format!("https://cdn.fake-discord.test/attachments/{id}/{name}"),
            "proxy_url": format!("https://media.fake-discord.test/attachments/{id}/{name}"),
            "content_type": if name.ends_with(".png") { "image/png" } else { "application/octet-stream" },
        });
        if let Some(desc) = d["description"].as_str() {
            a["description"] = json!(desc);
        }
        s.files.insert(id, bytes.clone());
        out.push(a);
    }
    Ok(Some(Value::Array(out)))
}
