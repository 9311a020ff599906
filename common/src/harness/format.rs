//! Human formats for harnesses: JSON and TOML (both read and written, round-tripping through
//! the canonical form) and Graphviz DOT (written, for drawing).
//!
//! Loading a file reports the file and the field at fault: syntax and unknown-field errors carry
//! the parser's line and column, rule violations name the component and parameter.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::catalog::Role;
use super::validate::Invalid;
use super::{Harness, HarnessDoc, ParamValue};

/// A harness file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON (`.json`).
    Json,
    /// TOML (`.toml`).
    Toml,
    /// Graphviz DOT (`.dot`, `.gv`), written only.
    Dot,
}

impl Format {
    /// The format a file name's extension says.
    pub fn of_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "json" => Some(Format::Json),
            "toml" => Some(Format::Toml),
            "dot" | "gv" => Some(Format::Dot),
            _ => None,
        }
    }
}

/// Why a harness could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read or written.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// The extension names no readable format.
    #[error("{}: cannot tell the format; harness files end in .json or .toml", path.display())]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// The text is not a harness document (syntax, unknown field, wrong type).
    #[error("{origin}: {message}")]
    Parse {
        /// The file, or `<input>`.
        origin: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The document breaks validation rules.
    #[error("{origin}: {invalid}")]
    Invalid {
        /// The file, or `<input>`.
        origin: String,
        /// The rules broken.
        invalid: Invalid,
    },
}

/// Reads and validates a harness file; the format comes from the extension.
pub fn load(path: &Path) -> Result<Harness, Error> {
    let format = match Format::of_path(path) {
        Some(f @ (Format::Json | Format::Toml)) => f,
        _ => {
            return Err(Error::UnknownFormat {
                path: path.to_owned(),
            });
        }
    };
    let text = std::fs::read_to_string(path).map_err(|cause| Error::Io {
        path: path.to_owned(),
        cause,
    })?;
    parse_as(&text, format, &path.display().to_string())
}

/// Parses and validates harness text; `origin` names the source in errors.
pub fn parse_as(text: &str, format: Format, origin: &str) -> Result<Harness, Error> {
    let parse_err = |message: String| Error::Parse {
        origin: origin.to_owned(),
        message,
    };
    let doc: HarnessDoc = match format {
        Format::Json => serde_json::from_str(text).map_err(|e| parse_err(e.to_string()))?,
        Format::Toml => toml::from_str(text).map_err(|e| parse_err(e.to_string()))?,
        Format::Dot => {
            return Err(parse_err(
                "DOT is written for drawing, not read; use JSON or TOML".into(),
            ));
        }
    };
    Harness::from_doc(doc).map_err(|invalid| Error::Invalid {
        origin: origin.to_owned(),
        invalid,
    })
}

/// Writes a harness in the format its extension says.
pub fn save(harness: &Harness, path: &Path) -> Result<(), Error> {
    let format = Format::of_path(path).ok_or_else(|| Error::UnknownFormat {
        path: path.to_owned(),
    })?;
    std::fs::write(path, render(harness, format)).map_err(|cause| Error::Io {
        path: path.to_owned(),
        cause,
    })
}

/// The harness's canonical form in `format`.
pub fn render(harness: &Harness, format: Format) -> String {
    match format {
        Format::Json => to_json(harness),
        Format::Toml => to_toml(harness),
        Format::Dot => to_dot(harness),
    }
}

/// Canonical form as pretty JSON.
pub fn to_json(harness: &Harness) -> String {
    let mut s = serde_json::to_string_pretty(&harness.to_doc())
        .expect("a harness document always serializes");
    s.push('\n');
    s
}

/// Canonical form as TOML, headed by a comment with the id.
pub fn to_toml(harness: &Harness) -> String {
    let body =
        toml::to_string(&harness.to_doc()).expect("a harness document always serializes to TOML");
    format!("# harness {}\n{body}", harness.id())
}

/// The fill colour of a role in drawings (DOT and `hx report`), as `#rrggbb`.
pub fn role_colour(role: Role) -> &'static str {
    match role {
        Role::Context => "#dbeafe",
        Role::Memory => "#dcfce7",
        Role::Tool => "#fef9c3",
        Role::Planning => "#fae8ff",
        Role::Reflection => "#ffe4e6",
        Role::Verification => "#e0e7ff",
        Role::ActionSelection => "#fed7aa",
        Role::Adaptation => "#ccfbf1",
        Role::Budget => "#e5e7eb",
    }
}

/// A Graphviz drawing: one box per component coloured by role, edges labelled by stage.
pub fn to_dot(harness: &Harness) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "digraph harness {{");
    let _ = writeln!(s, "  label=\"harness {}\";", harness.id().short());
    let _ = writeln!(s, "  rankdir=LR;");
    let _ = writeln!(
        s,
        "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];"
    );
    let _ = writeln!(s, "  edge [fontname=\"Helvetica\", fontsize=10];");
    for c in harness.components() {
        let mut label = format!("{}\\n{}", c.name, c.kind);
        for (k, v) in &c.params {
            // Text is for reading in the files; the drawing shows the numbers and choices.
            if matches!(v, ParamValue::Text(t) if t.len() > 24) {
                continue;
            }
            let _ = write!(label, "\\n{k} = {}", dot_escape(&v.to_string()));
        }
        let _ = writeln!(
            s,
            "  \"{}\" [label=\"{label}\", fillcolor=\"{}\", tooltip=\"{}\"];",
            c.name,
            role_colour(c.role()),
            c.role()
        );
    }
    let mut edges: Vec<_> = harness.edges().collect();
    edges.sort();
    for e in edges {
        let _ = writeln!(
            s,
            "  \"{}\" -> \"{}\" [label=\"{}\"];",
            e.from, e.to, e.stage
        );
    }
    s.push_str("}\n");
    s
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
[[components]]
name = "act"
kind = "free-generation"
params.temperature = 0

[[components]]
name = "sys"
kind = "system-prompt"
params.text = "Be brief."

[[edges]]
from = "sys"
to = "act"
stage = "before-model"
"#;

    #[test]
    fn toml_and_json_round_trip() {
        let h = parse_as(SMALL, Format::Toml, "small.toml").expect("valid");
        let again = parse_as(&to_toml(&h), Format::Toml, "again").expect("round trip");
        assert_eq!(again, h);
        let json = parse_as(&to_json(&h), Format::Json, "json").expect("round trip");
        assert_eq!(json, h);
    }

    /// Floats survive JSON exactly: a float that is one ulp off would change
    /// the harness id after a trip through the store or the wire.
    #[test]
    fn floats_round_trip_exactly() {
        let text = SMALL.replace("temperature = 0", "temperature = 0.45499999999999996");
        let h = parse_as(&text, Format::Toml, "float.toml").expect("valid");
        let json = parse_as(&to_json(&h), Format::Json, "json").expect("round trip");
        assert_eq!(json.id(), h.id());
        assert_eq!(json, h);
    }

    #[test]
    fn errors_name_the_origin_and_field() {
        let bad = SMALL.replace("params.temperature = 0", "params.temprature = 0");
        let err = parse_as(&bad, Format::Toml, "h.toml").expect_err("unknown param");
        let msg = err.to_string();
        assert!(msg.starts_with("h.toml: "), "{msg}");
        assert!(
            msg.contains(r#"component "act", param "temprature""#),
            "{msg}"
        );

        let bad = SMALL.replace("stage = ", "stag = ");
        let msg = parse_as(&bad, Format::Toml, "h.toml")
            .expect_err("unknown field")
            .to_string();
        assert!(msg.contains("h.toml") && msg.contains("stag"), "{msg}");

        let bad = SMALL.replace("free-generation", "telepathy");
        let msg = parse_as(&bad, Format::Toml, "h.toml")
            .expect_err("unknown kind")
            .to_string();
        assert!(msg.contains("telepathy"), "{msg}");
    }

    #[test]
    fn dot_draws_every_component_and_edge() {
        let h = parse_as(SMALL, Format::Toml, "small").expect("valid");
        let dot = to_dot(&h);
        assert!(
            dot.contains("\"sys\" -> \"act\" [label=\"before-model\"]"),
            "{dot}"
        );
        assert!(
            dot.contains("\"act\" [label=\"act\\nfree-generation"),
            "{dot}"
        );
    }
}
