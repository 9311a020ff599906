//! Typed component parameters: the values a harness file carries and the specs they are checked
//! against.
//!
//! Values are written plainly in human formats (`steps = 8`, `text = "..."`) and tagged on the
//! wire, because bincode cannot guess a type the way JSON and TOML readers can.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// One parameter value. Choices and tool references are `Text`; sets are `List`.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// A flag.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A real number (never NaN or infinite in a valid harness).
    Float(f64),
    /// Free text, a choice among options, or the name of a tool.
    Text(String),
    /// A set of options, kept sorted and without repeats in canonical form.
    List(Vec<String>),
}

impl ParamValue {
    /// The name of this value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            ParamValue::Bool(_) => "bool",
            ParamValue::Int(_) => "integer",
            ParamValue::Float(_) => "float",
            ParamValue::Text(_) => "string",
            ParamValue::List(_) => "list",
        }
    }

    /// The text, if this is a text value.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            ParamValue::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an integer value.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            ParamValue::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// The number as a float, if this is an integer or float value.
    pub fn as_float(&self) -> Option<f64> {
        match self {
            ParamValue::Int(v) => Some(*v as f64),
            ParamValue::Float(v) => Some(*v),
            _ => None,
        }
    }

    /// The flag, if this is a bool value.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            ParamValue::Bool(v) => Some(*v),
            _ => None,
        }
    }

    /// The options, if this is a list value.
    pub fn as_list(&self) -> Option<&[String]> {
        match self {
            ParamValue::List(v) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Bool(v) => write!(f, "{v}"),
            ParamValue::Int(v) => write!(f, "{v}"),
            ParamValue::Float(v) => write!(f, "{v}"),
            ParamValue::Text(v) => write!(f, "{v:?}"),
            ParamValue::List(v) => write!(f, "{v:?}"),
        }
    }
}

impl From<bool> for ParamValue {
    fn from(v: bool) -> Self {
        ParamValue::Bool(v)
    }
}
impl From<i64> for ParamValue {
    fn from(v: i64) -> Self {
        ParamValue::Int(v)
    }
}
impl From<f64> for ParamValue {
    fn from(v: f64) -> Self {
        ParamValue::Float(v)
    }
}
impl From<&str> for ParamValue {
    fn from(v: &str) -> Self {
        ParamValue::Text(v.to_owned())
    }
}
impl From<String> for ParamValue {
    fn from(v: String) -> Self {
        ParamValue::Text(v)
    }
}

/// The tagged shape used by non-self-describing encodings (bincode).
#[derive(Serialize, Deserialize)]
enum Tagged {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    List(Vec<String>),
}

impl Serialize for ParamValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            match self {
                ParamValue::Bool(v) => s.serialize_bool(*v),
                ParamValue::Int(v) => s.serialize_i64(*v),
                ParamValue::Float(v) => s.serialize_f64(*v),
                ParamValue::Text(v) => s.serialize_str(v),
                ParamValue::List(v) => v.serialize(s),
            }
        } else {
            let tagged = match self.clone() {
                ParamValue::Bool(v) => Tagged::Bool(v),
                ParamValue::Int(v) => Tagged::Int(v),
                ParamValue::Float(v) => Tagged::Float(v),
                ParamValue::Text(v) => Tagged::Text(v),
                ParamValue::List(v) => Tagged::List(v),
            };
            tagged.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for ParamValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            d.deserialize_any(PlainVisitor)
        } else {
            Ok(match Tagged::deserialize(d)? {
                Tagged::Bool(v) => ParamValue::Bool(v),
                Tagged::Int(v) => ParamValue::Int(v),
                Tagged::Float(v) => ParamValue::Float(v),
                Tagged::Text(v) => ParamValue::Text(v),
                Tagged::List(v) => ParamValue::List(v),
            })
        }
    }
}

struct PlainVisitor;

impl<'de> Visitor<'de> for PlainVisitor {
    type Value = ParamValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a bool, number, string or list of strings")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<ParamValue, E> {
        Ok(ParamValue::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ParamValue, E> {
        Ok(ParamValue::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ParamValue, E> {
        i64::try_from(v)
            .map(ParamValue::Int)
            .map_err(|_| E::custom(format!("integer {v} is too large")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ParamValue, E> {
        Ok(ParamValue::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<ParamValue, E> {
        Ok(ParamValue::Text(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<ParamValue, E> {
        Ok(ParamValue::Text(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ParamValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<String>()? {
            items.push(item);
        }
        Ok(ParamValue::List(items))
    }
}

/// The type and allowed range of one parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamType {
    /// `true` or `false`.
    Bool,
    /// A whole number in `min..=max`.
    Int {
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// A finite real number in `min..=max`; integers are accepted and widened.
    Float {
        /// Smallest allowed value.
        min: f64,
        /// Largest allowed value.
        max: f64,
    },
    /// Free text of at most `max_len` bytes.
    Text {
        /// Largest allowed length in bytes.
        max_len: usize,
    },
    /// One of the given options.
    Choice(&'static [&'static str]),
    /// Any subset of the given options.
    Set(&'static [&'static str]),
    /// The name of a tool that the harness must contain.
    ToolRef,
}

/// A parameter's default, or `Required` where no sensible default exists.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamDefault {
    /// The parameter must be given.
    Required,
    /// Default flag.
    Bool(bool),
    /// Default integer.
    Int(i64),
    /// Default float.
    Float(f64),
    /// Default text, choice or tool name.
    Text(&'static str),
    /// Default set.
    Set(&'static [&'static str]),
}

impl ParamDefault {
    /// The default as a value, or `None` when the parameter is required.
    pub fn value(&self) -> Option<ParamValue> {
        Some(match *self {
            ParamDefault::Required => return None,
            ParamDefault::Bool(v) => ParamValue::Bool(v),
            ParamDefault::Int(v) => ParamValue::Int(v),
            ParamDefault::Float(v) => ParamValue::Float(v),
            ParamDefault::Text(v) => ParamValue::Text(v.to_owned()),
            ParamDefault::Set(v) => ParamValue::List(v.iter().map(|s| (*s).to_owned()).collect()),
        })
    }
}

/// What one named parameter of a component kind accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamSpec {
    /// The parameter's key in harness files.
    pub name: &'static str,
    /// Its type and range.
    pub ty: ParamType,
    /// Its default.
    pub default: ParamDefault,
    /// One line saying what it does.
    pub doc: &'static str,
    /// The parameter joined its kind after harness ids were first given out. At its default
    /// it is left out of what an id hashes, so adding it left every existing harness's id
    /// (and every stored run) as it was.
    pub id_omits_default: bool,
}

/// Why a value does not fit its spec.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Mismatch {
    /// The value has the wrong type.
    #[error("expected {expected}, found {found}")]
    Type {
        /// The type the spec wants.
        expected: &'static str,
        /// The type that was given.
        found: &'static str,
    },
    /// A number lies outside the allowed range.
    #[error("{value} is out of range {min}..={max}")]
    Range {
        /// The value given.
        value: String,
        /// Smallest allowed.
        min: String,
        /// Largest allowed.
        max: String,
    },
    /// A float is NaN or infinite.
    #[error("{0} is not a finite number")]
    NotFinite(f64),
    /// Text exceeds its bound.
    #[error("text is {len} bytes, more than the limit of {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A choice or set member is not among the options.
    #[error("{value:?} is not one of {options:?}")]
    NotAnOption {
        /// The value given.
        value: String,
        /// The allowed options.
        options: &'static [&'static str],
    },
}

impl ParamType {
    fn type_name(&self) -> &'static str {
        match self {
            ParamType::Bool => "bool",
            ParamType::Int { .. } => "integer",
            ParamType::Float { .. } => "float",
            ParamType::Text { .. } | ParamType::Choice(_) | ParamType::ToolRef => "string",
            ParamType::Set(_) => "list",
        }
    }

    /// Brings a value to canonical form for this type (integers widened to floats, `-0.0` to
    /// `0.0`, sets sorted and deduplicated) and checks it. Tool references are only checked to
    /// be text here; whether the tool exists is a harness-level rule.
    pub fn normalize(&self, value: ParamValue) -> Result<ParamValue, Mismatch> {
        let mismatch = |v: &ParamValue| Mismatch::Type {
            expected: self.type_name(),
            found: v.type_name(),
        };
        match (*self, value) {
            (ParamType::Bool, v @ ParamValue::Bool(_)) => Ok(v),
            (ParamType::Int { min, max }, ParamValue::Int(v)) => {
                if (min..=max).contains(&v) {
                    Ok(ParamValue::Int(v))
                } else {
                    Err(Mismatch::Range {
                        value: v.to_string(),
                        min: min.to_string(),
                        max: max.to_string(),
                    })
                }
            }
            (ParamType::Float { min, max }, v @ (ParamValue::Int(_) | ParamValue::Float(_))) => {
                let x = v.as_float().unwrap_or(f64::NAN);
                if !x.is_finite() {
                    return Err(Mismatch::NotFinite(x));
                }
                if !(min..=max).contains(&x) {
                    return Err(Mismatch::Range {
                        value: x.to_string(),
                        min: min.to_string(),
                        max: max.to_string(),
                    });
                }
                // One zero, so that equal harnesses hash equally.
                Ok(ParamValue::Float(if x == 0.0 { 0.0 } else { x }))
            }
            (ParamType::Text { max_len }, ParamValue::Text(s)) => {
                if s.len() > max_len {
                    Err(Mismatch::TooLong {
                        len: s.len(),
                        max: max_len,
                    })
                } else {
                    Ok(ParamValue::Text(s))
                }
            }
            (ParamType::Choice(options), ParamValue::Text(s)) => {
                if options.contains(&s.as_str()) {
                    Ok(ParamValue::Text(s))
                } else {
                    Err(Mismatch::NotAnOption { value: s, options })
                }
            }
            (ParamType::Set(options), ParamValue::List(mut items)) => {
                if let Some(bad) = items.iter().find(|i| !options.contains(&i.as_str())) {
                    return Err(Mismatch::NotAnOption {
                        value: bad.clone(),
                        options,
                    });
                }
                items.sort();
                items.dedup();
                Ok(ParamValue::List(items))
            }
            (ParamType::ToolRef, v @ ParamValue::Text(_)) => Ok(v),
            (_, v) => Err(mismatch(&v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_widen_to_floats_and_negative_zero_is_zero() {
        let ty = ParamType::Float {
            min: -1.0,
            max: 1.0,
        };
        assert_eq!(ty.normalize(ParamValue::Int(1)), Ok(ParamValue::Float(1.0)));
        let z = ty.normalize(ParamValue::Float(-0.0)).expect("in range");
        assert!(matches!(z, ParamValue::Float(x) if x.is_sign_positive()));
        assert!(matches!(
            ty.normalize(ParamValue::Float(f64::NAN)),
            Err(Mismatch::NotFinite(_))
        ));
    }

    #[test]
    fn sets_are_sorted_and_checked() {
        let ty = ParamType::Set(&["a", "b", "c"]);
        assert_eq!(
            ty.normalize(ParamValue::List(vec!["c".into(), "a".into(), "c".into()])),
            Ok(ParamValue::List(vec!["a".into(), "c".into()]))
        );
        assert!(ty.normalize(ParamValue::List(vec!["z".into()])).is_err());
    }

    #[test]
    fn plain_values_read_from_json() {
        let v: Vec<ParamValue> =
            serde_json::from_str(r#"[true, 3, 0.5, "x", ["a"]]"#).expect("parses");
        assert_eq!(
            v,
            vec![
                ParamValue::Bool(true),
                ParamValue::Int(3),
                ParamValue::Float(0.5),
                ParamValue::Text("x".into()),
                ParamValue::List(vec!["a".into()]),
            ]
        );
    }
}
