//! The shape of the code: no source file under `crates/*/src` over
//! [`MAX_LINES`] lines, no struct with more than [`MAX_FIELDS`] named fields
//! except configuration (a struct named `*Config`, `*Settings` or `*Args`,
//! or one whose attributes or doc comment carry the line
//! `// shape: configuration`).
//!
//! Known violations are listed in `scripts/shape-allow.txt`, one a line:
//! `lines <file>` or `fields <file> <Struct>`. The test fails on any
//! violation not listed there, and on any listed entry that no longer
//! violates (delete it). Run alone with `scripts/check-shape`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 700;
const MAX_FIELDS: usize = 12;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file under `crates/*/src`, as a path relative to the root.
fn sources(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    out
}

/// One violation: its allow-list key and where it is.
#[derive(Debug)]
struct Violation {
    key: String,
    at: String,
}

fn is_configuration(name: &str, preamble: &[&str]) -> bool {
    ["Config", "Settings", "Args"]
        .iter()
        .any(|s| name.ends_with(s))
        || preamble
            .iter()
            .any(|l| l.trim() == "// shape: configuration")
}

/// The name of the struct a line opens with named fields (`struct X {` or
/// `struct X<T> where ... {`), if any.
fn struct_name(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let t = match t.strip_prefix("pub") {
        Some(rest) if rest.starts_with(' ') => rest.trim_start(),
        Some(rest) if rest.starts_with('(') => rest[rest.find(')')? + 1..].trim_start(),
        _ => t,
    };
    let rest = t.strip_prefix("struct ")?;
    if !line.trim_end().ends_with('{') {
        return None;
    }
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Whether a line inside a struct body starts a named field.
fn is_field(line: &str) -> bool {
    let mut t = line.trim_start();
    if t.starts_with("//") || t.starts_with('#') {
        return false;
    }
    if let Some(rest) = t.strip_prefix("pub") {
        t = match rest.strip_prefix('(') {
            Some(r) => match r.find(')') {
                Some(i) => r[i + 1..].trim_start(),
                None => return false,
            },
            None => rest.trim_start(),
        };
    }
    let t = t.strip_prefix("r#").unwrap_or(t);
    let name_len = t
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(t.len());
    name_len > 0 && t[name_len..].trim_start().starts_with(':') && !t[name_len..].starts_with("::")
}

fn brace_delta(line: &str) -> i32 {
    let code = line.split("//").next().unwrap_or("");
    code.matches('{').count() as i32 - code.matches('}').count() as i32
}

fn violations(root: &Path) -> Vec<Violation> {
    let mut out = Vec::new();
    for file in sources(root) {
        let text = std::fs::read_to_string(root.join(&file)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() > MAX_LINES {
            out.push(Violation {
                key: format!("lines {file}"),
                at: format!(
                    "{file}:{}: {} lines (most {MAX_LINES})",
                    MAX_LINES + 1,
                    lines.len()
                ),
            });
        }
        for (i, line) in lines.iter().enumerate() {
            let Some(name) = struct_name(line) else {
                continue;
            };
            // The attributes and doc comment above the struct.
            let start = lines[..i]
                .iter()
                .rposition(|l| {
                    let t = l.trim_start();
                    !(t.starts_with("//") || t.starts_with('#'))
                })
                .map_or(0, |p| p + 1);
            if is_configuration(name, &lines[start..i]) {
                continue;
            }
            let mut depth = brace_delta(line);
            let mut fields = 0;
            for l in &lines[i + 1..] {
                if depth == 1 && is_field(l) {
                    fields += 1;
                }
                depth += brace_delta(l);
                if depth <= 0 {
                    break;
                }
            }
            if fields > MAX_FIELDS {
                out.push(Violation {
                    key: format!("fields {file} {name}"),
                    at: format!(
                        "{file}:{}: struct {name} has {fields} fields (most {MAX_FIELDS})",
                        i + 1
                    ),
                });
            }
        }
    }
    out
}

fn allowed(root: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(root.join("scripts/shape-allow.txt"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            l.split('#')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn no_new_file_over_700_lines_nor_struct_over_12_fields() {
    let root = root();
    let found = violations(&root);
    let allow = allowed(&root);
    let new: Vec<&Violation> = found.iter().filter(|v| !allow.contains(&v.key)).collect();
    let found_keys: BTreeSet<&str> = found.iter().map(|v| v.key.as_str()).collect();
    let stale: Vec<&String> = allow
        .iter()
        .filter(|k| !found_keys.contains(k.as_str()))
        .collect();
    let mut report = String::new();
    for v in &found {
        let tag = if allow.contains(&v.key) {
            "known"
        } else {
            "NEW"
        };
        report.push_str(&format!("  {tag}: {}\n", v.at));
    }
    for k in &stale {
        report.push_str(&format!(
            "  fixed: `{k}` no longer applies: delete it from scripts/shape-allow.txt\n"
        ));
    }
    eprintln!("shape check:\n{report}");
    assert!(
        new.is_empty() && stale.is_empty(),
        "shape check failed (split the file or the struct; see docs/ARCHITECTURE.md):\n{report}"
    );
}

#[test]
fn the_checker_sees_fields_structs_and_configuration() {
    assert_eq!(struct_name("pub struct Core {"), Some("Core"));
    assert_eq!(struct_name("pub(crate) struct A<T: X> {"), Some("A"));
    assert_eq!(struct_name("struct B;"), None);
    assert_eq!(struct_name("struct C(u8);"), None);
    assert!(is_field("    pub listen: String,"));
    assert!(is_field("    pub(crate) map: HashMap<u8, u8>,"));
    assert!(is_field("    r#type: u8,"));
    assert!(!is_field("    // note: not a field"));
    assert!(!is_field("    #[serde(rename = \"a\")]"));
    assert!(!is_field("        std::sync::Arc<u8>,"));
    assert!(is_configuration("GatewayConfig", &[]));
    assert!(is_configuration(
        "X",
        &["/// Doc.", "// shape: configuration"]
    ));
    assert!(!is_configuration("Core", &["/// The core."]));
}
