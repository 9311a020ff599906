//! The tokenizer a GGUF file carries: GPT-2 style byte-level BPE (`tokenizer.ggml.model =
//! "gpt2"`) with its merges and control tokens, as SmolLM2, Llama 3 and Qwen use.
//!
//! Text is first cut at control tokens (`<|im_start|>`), then pre-tokenized with the GPT-2
//! pattern (contractions, letters, digits one at a time, punctuation runs, whitespace), then each
//! piece is mapped byte by byte onto the 256 byte symbols and merged by rank.

use std::collections::HashMap;
use std::sync::Mutex;

use super::gguf::{Error, Gguf, Value};

/// A token id.
pub type Token = u32;

/// A byte-level BPE tokenizer.
pub struct Tokenizer {
    /// Each token's text in byte-symbol form.
    tokens: Vec<String>,
    by_text: HashMap<String, Token>,
    /// `(left, right) -> (rank, merged)`.
    merges: HashMap<(Token, Token), (u32, Token)>,
    /// The token of each byte; some vocabularies lack a few control bytes, which are dropped
    /// as llama.cpp drops them.
    byte_token: [Option<Token>; 256],
    /// Each byte symbol's byte.
    symbol_byte: HashMap<char, u8>,
    /// Control tokens, longest first, for cutting text.
    control: Vec<(String, Token)>,
    is_control: Vec<bool>,
    /// Digits are split one by one (`tokenizer.ggml.pre` of smollm, llama3 splits in threes).
    digit_group: usize,
    /// End-of-sequence token.
    pub eos: Token,
    cache: Mutex<HashMap<String, Vec<Token>>>,
}

/// GPT-2's map from bytes to printable characters.
fn byte_symbols() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        out[b as usize] = if printable {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).expect("a valid char")
        };
    }
    out
}

impl Tokenizer {
    /// The tokenizer in a GGUF file.
    pub fn from_gguf(g: &Gguf) -> Result<Tokenizer, Error> {
        let unsupported = |reason: String| Error::Unsupported {
            path: g.path.clone(),
            reason,
        };
        let model = g.str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(unsupported(format!(
                "tokenizer model {model:?} (hx supports byte-level BPE, \"gpt2\")"
            )));
        }
        let strings = |key: &str| -> Result<Vec<String>, Error> {
            g.array(key)?
                .iter()
                .map(|v| match v {
                    Value::Str(s) => Ok(s.clone()),
                    _ => Err(unsupported(format!("{key} holds a non-string"))),
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let types: Vec<i64> = match g.array("tokenizer.ggml.token_type") {
            Ok(a) => a
                .iter()
                .map(|v| if let Value::Int(i) = v { *i } else { 1 })
                .collect(),
            Err(_) => vec![1; tokens.len()],
        };
        let by_text: HashMap<String, Token> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as Token))
            .collect();
        let symbols = byte_symbols();
        let mut byte_token = [None; 256];
        let mut symbol_byte = HashMap::new();
        for (b, c) in symbols.iter().enumerate() {
            byte_token[b] = by_text.get(&c.to_string()).copied();
            symbol_byte.insert(*c, b as u8);
        }
        if byte_token.iter().filter(|t| t.is_some()).count() < 200 {
            return Err(unsupported(
                "the vocabulary lacks most byte tokens; not a byte-level BPE".into(),
            ));
        }
        let mut merges = HashMap::new();
        for (rank, m) in strings("tokenizer.ggml.merges")?.iter().enumerate() {
            let (a, b) = m
                .split_once(' ')
                .ok_or_else(|| unsupported(format!("merge {m:?} is not two symbols")))?;
            let (Some(&ta), Some(&tb), Some(&tm)) = (
                by_text.get(a),
                by_text.get(b),
                by_text.get(&format!("{a}{b}")),
            ) else {
                return Err(unsupported(format!("merge {m:?} names unknown tokens")));
            };
            merges.entry((ta, tb)).or_insert((rank as u32, tm));
        }
        let is_control: Vec<bool> = (0..tokens.len())
            .map(|i| types.get(i).is_some_and(|&t| t == 3 || t == 4))
            .collect();
        let mut control: Vec<(String, Token)> = tokens
            .iter()
            .enumerate()
            .filter(|(i, t)| is_control[*i] && !t.is_empty())
            .map(|(i, t)| (t.clone(), i as Token))
            .collect();
        control.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        let eos = g.int("tokenizer.ggml.eos_token_id")?;
        let eos = Token::try_from(eos)
            .ok()
            .filter(|&e| (e as usize) < tokens.len())
            .ok_or_else(|| unsupported(format!("eos token {eos} is out of range")))?;
        let digit_group = match g.str("tokenizer.ggml.pre").unwrap_or("default") {
            "llama-bpe" | "llama3" | "qwen2" => 3,
            _ => 1,
        };
        Ok(Tokenizer {
            tokens,
            by_text,
            merges,
            byte_token,
            symbol_byte,
            control,
            is_control,
            digit_group,
            eos,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Vocabulary size.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the vocabulary is empty (never, for a loaded tokenizer).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The id of a control token such as `<|im_end|>`.
    pub fn control(&self, text: &str) -> Option<Token> {
        self.by_text
            .get(text)
            .copied()
            .filter(|&t| self.is_control[t as usize])
    }

    /// Tokens for `text`; control-token text becomes the control token.
    pub fn encode(&self, text: &str) -> Vec<Token> {
        let mut out = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            // The earliest control token in what is left, longest on ties.
            let next = self
                .control
                .iter()
                .filter_map(|(t, id)| rest.find(t.as_str()).map(|at| (at, t.len(), *id)))
                .min_by_key(|&(at, len, _)| (at, std::cmp::Reverse(len)));
            match next {
                Some((at, len, id)) => {
                    self.encode_plain(&rest[..at], &mut out);
                    out.push(id);
                    rest = &rest[at + len..];
                }
                None => {
                    self.encode_plain(rest, &mut out);
                    rest = "";
                }
            }
        }
        out
    }

    fn encode_plain(&self, text: &str, out: &mut Vec<Token>) {
        for piece in pretokenize(text, self.digit_group) {
            let cached = self
                .cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(piece)
                .cloned();
            let ids = match cached {
                Some(ids) => ids,
                None => {
                    let ids = self.bpe(piece);
                    let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                    if cache.len() > 100_000 {
                        cache.clear();
                    }
                    cache.insert(piece.to_owned(), ids.clone());
                    ids
                }
            };
            out.extend(ids);
        }
    }

    fn bpe(&self, piece: &str) -> Vec<Token> {
        let mut syms: Vec<Token> = piece
            .bytes()
            .filter_map(|b| self.byte_token[b as usize])
            .collect();
        loop {
            let best = syms
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| self.merges.get(&(w[0], w[1])).map(|&(r, m)| (r, i, m)))
                .min();
            let Some((_, i, merged)) = best else { break };
            syms[i] = merged;
            syms.remove(i + 1);
        }
        syms
    }

    /// The bytes a token stands for; control tokens stand for their text.
    pub fn bytes(&self, t: Token) -> Vec<u8> {
        let Some(text) = self.tokens.get(t as usize) else {
            return Vec::new();
        };
        if self.is_control[t as usize] {
            return text.as_bytes().to_vec();
        }
        text.chars()
            .map(|c| self.symbol_byte.get(&c).copied().unwrap_or(b'?'))
            .collect()
    }

    /// Text for tokens, invalid UTF-8 replaced.
    pub fn decode(&self, tokens: &[Token]) -> String {
        let bytes: Vec<u8> = tokens.iter().flat_map(|&t| self.bytes(t)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Whether a token is a control token.
    pub fn is_control(&self, t: Token) -> bool {
        self.is_control.get(t as usize).copied().unwrap_or(false)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Class {
    Letter,
    Digit,
    Space,
    Other,
}

fn class(c: char) -> Class {
    if c.is_alphabetic() {
        Class::Letter
    } else if c.is_numeric() {
        Class::Digit
    } else if c.is_whitespace() {
        Class::Space
    } else {
        Class::Other
    }
}

/// Splits text like GPT-2's pattern
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, with digit
/// runs cut into groups of `digits`.
pub fn pretokenize(text: &str, digits: usize) -> Vec<&str> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let end_of = |i: usize| chars.get(i).map_or(text.len(), |&(b, _)| b);
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        let c = chars[i].1;
        // Contractions.
        if c == '\'' {
            let rest = &text[chars[i].0..];
            if let Some(n) = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]
                .iter()
                .find(|s| rest.starts_with(**s))
                .map(|s| s.chars().count())
            {
                i += n;
                out.push(&text[chars[start].0..end_of(i)]);
                continue;
            }
        }
        // An optional leading space joins a letter, digit or punctuation run.
        let (j, lead) = if c == ' ' && i + 1 < chars.len() && class(chars[i + 1].1) != Class::Space
        {
            (i + 1, true)
        } else {
            (i, false)
        };
        let k = class(chars[j].1);
        match k {
            Class::Letter => {
                i = j;
                while i < chars.len() && class(chars[i].1) == Class::Letter {
                    i += 1;
                }
            }
            Class::Digit => {
                i = j;
                let mut n = 0;
                while i < chars.len() && class(chars[i].1) == Class::Digit && n < digits {
                    i += 1;
                    n += 1;
                }
                // smollm's pre-tokenizer splits digits off before the GPT-2 pattern, so a
                // space before a digit stands alone.
                if lead && digits == 1 {
                    i = j;
                }
            }
            Class::Other => {
                i = j;
                while i < chars.len() && class(chars[i].1) == Class::Other {
                    // A contraction ends a punctuation run.
                    if chars[i].1 == '\'' && i > j {
                        let rest = &text[chars[i].0..];
                        if ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]
                            .iter()
                            .any(|s| rest.starts_with(*s))
                        {
                            break;
                        }
                    }
                    i += 1;
                }
            }
            Class::Space => {
                // `\s+(?!\S)|\s+`: a run of whitespace less its last character, which then
                // leads the next piece; all of it at the end of the text, before a digit where
                // digits are split off first, or when it is one character.
                let mut e = i;
                while e < chars.len() && class(chars[e].1) == Class::Space {
                    e += 1;
                }
                let before_digit =
                    digits == 1 && e < chars.len() && class(chars[e].1) == Class::Digit;
                i = if e == chars.len() || e - i == 1 || before_digit {
                    e
                } else {
                    e - 1
                };
            }
        }
        if i == start {
            i += 1;
        }
        out.push(&text[chars[start].0..end_of(i)]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretokenization_follows_gpt2() {
        assert_eq!(
            pretokenize("Hello world, it's 2024!", 1),
            [
                "Hello", " world", ",", " it", "'s", " ", "2", "0", "2", "4", "!"
            ]
        );
        assert_eq!(pretokenize("a  b", 1), ["a", " ", " b"]);
        assert_eq!(
            pretokenize("go to\n\nfridge 1", 1),
            ["go", " to", "\n", "\n", "fridge", " ", "1"]
        );
        assert_eq!(pretokenize("x   ", 1), ["x", "   "]);
        assert_eq!(pretokenize("12345", 3), ["123", "45"]);
    }

    #[test]
    fn byte_symbols_are_a_bijection() {
        let s = byte_symbols();
        let set: std::collections::HashSet<char> = s.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(s[b' ' as usize], 'Ġ');
        assert_eq!(s[b'\n' as usize], 'Ċ');
    }
}
