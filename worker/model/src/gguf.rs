//! Reading GGUF files: the metadata (architecture, hyperparameters, tokenizer, chat template)
//! and the tensors' types, shapes and bytes. Every read is bounds-checked: a truncated or
//! corrupt file is an [`Error`] naming the file and what was wrong, never a panic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The tensor element types hx can load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// 32-bit floats.
    F32,
    /// 16-bit floats.
    F16,
    /// Blocks of 32: an f16 scale, an f16 minimum and 32 four-bit values.
    Q4_1,
    /// Blocks of 32: an f16 scale and 32 eight-bit values.
    Q8_0,
}

impl DType {
    fn from_ggml(t: u32) -> Option<DType> {
        Some(match t {
            0 => DType::F32,
            1 => DType::F16,
            3 => DType::Q4_1,
            8 => DType::Q8_0,
            _ => return None,
        })
    }

    /// Bytes taken by `n` elements (`n` a multiple of the block size for quantized types).
    pub fn bytes(self, n: usize) -> usize {
        match self {
            DType::F32 => 4 * n,
            DType::F16 => 2 * n,
            DType::Q4_1 => n / 32 * 20,
            DType::Q8_0 => n / 32 * 34,
        }
    }

    fn block(self) -> usize {
        match self {
            DType::F32 | DType::F16 => 1,
            DType::Q4_1 | DType::Q8_0 => 32,
        }
    }
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Any integer type.
    Int(i64),
    /// f32 or f64.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
    /// An array.
    Array(Vec<Value>),
}

/// One tensor's description.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Element type.
    pub dtype: DType,
    /// Dimensions, innermost first (GGUF order): a `[cols, rows]` matrix.
    pub dims: Vec<usize>,
    /// Byte range in the file.
    pub range: std::ops::Range<usize>,
}

/// A loaded GGUF file.
pub struct Gguf {
    /// Where it was read from.
    pub path: PathBuf,
    /// Metadata by key.
    pub meta: HashMap<String, Value>,
    /// Tensors by name.
    pub tensors: HashMap<String, TensorInfo>,
    /// The whole file.
    pub bytes: Vec<u8>,
}

/// Why a GGUF file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The file is not a GGUF file, or is truncated or corrupt.
    #[error("{path}: not a valid GGUF file: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong, and where.
        reason: String,
    },
    /// The file is valid but lacks something hx needs or uses something it does not support.
    #[error("{path}: {reason}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What.
        reason: String,
    },
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("truncated at byte {} (wanted {n} more)", self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn len(&mut self, what: &str) -> Result<usize, String> {
        let n = self.u64()?;
        // Nothing in a GGUF file is longer than the file itself.
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.bytes.len())
            .ok_or_else(|| format!("{what} length {n} at byte {} is impossible", self.at))
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.len("string")?;
        let at = self.at;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| format!("string at byte {at} is not UTF-8"))
    }
    fn value(&mut self, t: u32, depth: u32) -> Result<Value, String> {
        Ok(match t {
            0 => Value::Int(i64::from(self.take(1)?[0])),
            1 => Value::Int(i64::from(self.take(1)?[0] as i8)),
            2 => {
                let b = self.take(2)?;
                Value::Int(i64::from(u16::from_le_bytes([b[0], b[1]])))
            }
            3 => {
                let b = self.take(2)?;
                Value::Int(i64::from(i16::from_le_bytes([b[0], b[1]])))
            }
            4 => Value::Int(i64::from(self.u32()?)),
            5 => Value::Int(i64::from(self.u32()? as i32)),
            6 => Value::Float(f64::from(f32::from_bits(self.u32()?))),
            7 => Value::Bool(self.take(1)?[0] != 0),
            8 => Value::Str(self.string()?),
            9 => {
                if depth > 2 {
                    return Err("arrays nested too deeply".into());
                }
                let inner = self.u32()?;
                let n = self.len("array")?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(inner, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::Int(self.u64()? as i64),
            11 => Value::Int(self.u64()? as i64),
            12 => Value::Float(f64::from_bits(self.u64()?)),
            other => return Err(format!("unknown value type {other} at byte {}", self.at)),
        })
    }
}

impl Gguf {
    /// Reads and indexes a GGUF file.
    pub fn load(path: &Path) -> Result<Gguf, Error> {
        let bytes = std::fs::read(path).map_err(|cause| Error::Io {
            path: path.to_owned(),
            cause,
        })?;
        Gguf::parse(bytes, path)
    }

    /// Indexes GGUF bytes; `path` is for messages.
    pub fn parse(bytes: Vec<u8>, path: &Path) -> Result<Gguf, Error> {
        let corrupt = |reason: String| Error::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let mut r = Reader {
            bytes: &bytes,
            at: 0,
        };
        if r.take(4).map_err(&corrupt)? != b"GGUF" {
            return Err(corrupt("it does not start with \"GGUF\"".into()));
        }
        let version = r.u32().map_err(&corrupt)?;
        if !(2..=3).contains(&version) {
            return Err(corrupt(format!("version {version} (hx reads 2 and 3)")));
        }
        let n_tensors = r.len("tensor count").map_err(&corrupt)?;
        let n_kv = r.len("metadata count").map_err(&corrupt)?;
        let mut meta = HashMap::new();
        for _ in 0..n_kv {
            let key = r.string().map_err(&corrupt)?;
            let t = r.u32().map_err(&corrupt)?;
            let v = r
                .value(t, 0)
                .map_err(|e| corrupt(format!("metadata {key:?}: {e}")))?;
            meta.insert(key, v);
        }
        let mut infos = Vec::with_capacity(n_tensors.min(1 << 16));
        for _ in 0..n_tensors {
            let name = r.string().map_err(&corrupt)?;
            let n_dims = r.u32().map_err(&corrupt)?;
            if n_dims == 0 || n_dims > 4 {
                return Err(corrupt(format!("tensor {name:?} has {n_dims} dimensions")));
            }
            let mut dims = Vec::new();
            for _ in 0..n_dims {
                dims.push(r.len("dimension").map_err(&corrupt)?);
            }
            let t = r.u32().map_err(&corrupt)?;
            let offset = r.u64().map_err(&corrupt)?;
            infos.push((name, dims, t, offset));
        }
        let align = match meta.get("general.alignment") {
            Some(Value::Int(a)) if *a > 0 && (*a as u64).is_power_of_two() => *a as usize,
            Some(other) => return Err(corrupt(format!("general.alignment is {other:?}"))),
            None => 32,
        };
        let data = r.at.div_ceil(align) * align;
        let mut tensors = HashMap::new();
        for (name, dims, t, offset) in infos {
            let Some(dtype) = DType::from_ggml(t) else {
                // Types hx cannot compute with are only an error if a tensor of that type is
                // used; record nothing and let the model loader name what is missing.
                tensors.insert(
                    name,
                    TensorInfo {
                        dtype: DType::F32,
                        dims: vec![0],
                        range: 0..0,
                    },
                );
                continue;
            };
            let n: usize = dims
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| corrupt(format!("tensor {name:?} is impossibly large")))?;
            if dims[0] % dtype.block() != 0 {
                return Err(corrupt(format!(
                    "tensor {name:?}: row length {} is not a multiple of {}",
                    dims[0],
                    dtype.block()
                )));
            }
            let start = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(data))
                .ok_or_else(|| corrupt(format!("tensor {name:?}: offset {offset}")))?;
            let end = start
                .checked_add(dtype.bytes(n))
                .filter(|&e| e <= bytes.len())
                .ok_or_else(|| {
                    corrupt(format!(
                        "tensor {name:?} runs past the end of the file (truncated?)"
                    ))
                })?;
            tensors.insert(
                name,
                TensorInfo {
                    dtype,
                    dims,
                    range: start..end,
                },
            );
        }
        Ok(Gguf {
            path: path.to_owned(),
            meta,
            tensors,
            bytes,
        })
    }

    fn missing(&self, what: &str) -> Error {
        Error::Unsupported {
            path: self.path.clone(),
            reason: format!("metadata {what:?} is missing or of the wrong type"),
        }
    }

    /// An integer metadata value.
    pub fn int(&self, key: &str) -> Result<i64, Error> {
        match self.meta.get(key) {
            Some(Value::Int(i)) => Ok(*i),
            _ => Err(self.missing(key)),
        }
    }

    /// A float metadata value.
    pub fn float(&self, key: &str) -> Result<f64, Error> {
        match self.meta.get(key) {
            Some(Value::Float(f)) => Ok(*f),
            Some(Value::Int(i)) => Ok(*i as f64),
            _ => Err(self.missing(key)),
        }
    }

    /// A string metadata value.
    pub fn str(&self, key: &str) -> Result<&str, Error> {
        match self.meta.get(key) {
            Some(Value::Str(s)) => Ok(s),
            _ => Err(self.missing(key)),
        }
    }

    /// An array metadata value.
    pub fn array(&self, key: &str) -> Result<&[Value], Error> {
        match self.meta.get(key) {
            Some(Value::Array(a)) => Ok(a),
            _ => Err(self.missing(key)),
        }
    }

    /// A tensor, checked to have `dims`.
    pub fn tensor(&self, name: &str, dims: &[usize]) -> Result<(&TensorInfo, &[u8]), Error> {
        let t = self.tensors.get(name).ok_or_else(|| Error::Unsupported {
            path: self.path.clone(),
            reason: format!("tensor {name:?} is missing or of a type hx does not support"),
        })?;
        if t.dims != dims {
            return Err(Error::Unsupported {
                path: self.path.clone(),
                reason: format!("tensor {name:?} has shape {:?}, expected {dims:?}", t.dims),
            });
        }
        Ok((t, &self.bytes[t.range.clone()]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kv: &[u8], n_kv: u64, n_tensors: u64) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(n_tensors.to_le_bytes());
        b.extend(n_kv.to_le_bytes());
        b.extend(kv);
        b
    }

    fn kv_str(key: &str, v: &str) -> Vec<u8> {
        let mut b = (key.len() as u64).to_le_bytes().to_vec();
        b.extend(key.as_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend((v.len() as u64).to_le_bytes());
        b.extend(v.as_bytes());
        b
    }

    #[test]
    fn metadata_and_tensors_are_read() {
        let mut b = header(&kv_str("general.architecture", "llama"), 1, 1);
        let name = "w";
        b.extend((name.len() as u64).to_le_bytes());
        b.extend(name.as_bytes());
        b.extend(1u32.to_le_bytes());
        b.extend(4u64.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        for x in [1.0f32, 2.0, 3.0, 4.0] {
            b.extend(x.to_le_bytes());
        }
        let g = Gguf::parse(b, Path::new("t.gguf")).expect("parses");
        assert_eq!(g.str("general.architecture").expect("set"), "llama");
        let (info, bytes) = g.tensor("w", &[4]).expect("present");
        assert_eq!(info.dtype, DType::F32);
        assert_eq!(bytes.len(), 16);
        assert!(g.tensor("w", &[5]).is_err());
    }

    #[test]
    fn truncated_and_foreign_files_are_errors() {
        let b = header(&kv_str("general.architecture", "llama"), 1, 0);
        for cut in [0, 3, 10, 20, b.len() - 1] {
            let err = Gguf::parse(b[..cut].to_vec(), Path::new("t.gguf"))
                .err()
                .expect("truncated");
            assert!(
                err.to_string().starts_with("t.gguf: not a valid GGUF"),
                "{err}"
            );
        }
        let err = Gguf::parse(b"PK\x03\x04 a zip file".to_vec(), Path::new("z.gguf"))
            .err()
            .expect("not gguf");
        assert!(err.to_string().contains("does not start with"), "{err}");
        // A huge declared length must not allocate or panic.
        let mut b = header(&[], 0, 0);
        b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Gguf::parse(b, Path::new("t.gguf")).is_err());
    }
}
