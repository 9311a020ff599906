//! Model backends: the one interface agents use to generate text and to score candidate
//! continuations, and its implementations: the embedded CPU model ([`embedded`]) and
//! OpenAI-compatible HTTP servers (`openai`).
//!
//! Calls are blocking and may come from many threads at once; a backend batches or limits
//! concurrent calls itself.

pub mod bench;
pub mod embedded;
pub mod fetch;
pub mod gguf;
pub mod llama;
pub mod openai;
pub mod quant;
pub mod serve;
pub mod template;
pub mod tokenizer;

use serde::{Deserialize, Serialize};

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// The environment or the user.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// The role's name in chat templates and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What they say.
    pub content: String,
}

impl Message {
    /// A message.
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
        }
    }
}

/// A chat generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// The conversation so far; the model answers as the assistant.
    pub messages: Vec<Message>,
    /// Generation ends before the first of these strings.
    pub stop: Vec<String>,
    /// Tokens generated at most.
    pub max_tokens: u32,
    /// 0 picks the most likely token; higher samples more freely.
    pub temperature: f32,
    /// Seeds sampling, so a request is reproducible.
    pub seed: u64,
}

impl GenerateRequest {
    /// A greedy request for up to `max_tokens` tokens.
    pub fn new(messages: Vec<Message>, max_tokens: u32) -> GenerateRequest {
        GenerateRequest {
            messages,
            stop: Vec::new(),
            max_tokens,
            temperature: 0.0,
            seed: 0,
        }
    }
}

/// Tokens a call consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens (including candidates, for scoring).
    pub prompt_tokens: u64,
    /// Of those, how many came from a cached prefix instead of being computed.
    pub cached_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.prompt_tokens += o.prompt_tokens;
        self.cached_tokens += o.cached_tokens;
        self.completion_tokens += o.completion_tokens;
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Finish {
    /// The model ended its turn or a stop string appeared.
    Stop,
    /// `max_tokens` was reached.
    Length,
}

/// Generated text.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The text, without the stop string.
    pub text: String,
    /// Why it ended.
    pub finish: Finish,
    /// Tokens used.
    pub usage: Usage,
}

/// A scoring request: how likely is each candidate as the assistant's reply?
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRequest {
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Candidate replies, e.g. admissible commands.
    pub candidates: Vec<String>,
}

/// Candidate scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Per candidate: the sum of its tokens' log-probabilities (natural log).
    pub logprobs: Vec<f64>,
    /// Per candidate: how many tokens it has.
    pub tokens: Vec<u32>,
    /// Per candidate: each token's log-probability.
    pub per_token: Vec<Vec<f64>>,
    /// Tokens used.
    pub usage: Usage,
}

/// Why a model call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model file could not be loaded.
    #[error(transparent)]
    Load(#[from] gguf::Error),
    /// The model could not be fetched.
    #[error("fetching the model: {0}")]
    Fetch(String),
    /// The chat template failed.
    #[error("chat template: {0}")]
    Template(String),
    /// The request cannot be served (no candidates, ...).
    #[error("bad request: {0}")]
    Request(String),
    /// The prompt (with a candidate, when scoring) does not fit the model's context: the
    /// embedded model's check, or a server's answer that says so (see `openai`).
    #[error("bad request: the prompt does not fit the model's context ({})", context_full(*.tokens, *.context))]
    ContextFull {
        /// The tokens it would take, where known.
        tokens: Option<usize>,
        /// The context's size, where known.
        context: Option<usize>,
    },
    /// The server could not be reached or answered with an error.
    #[error("{url}: {reason}")]
    Server {
        /// The endpoint.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The server cannot score candidates.
    #[error("{url}: {reason}")]
    NoLogprobs {
        /// The endpoint.
        url: String,
        /// What is missing.
        reason: String,
    },
    /// The backend stopped.
    #[error("the model backend has stopped")]
    Stopped,
}

fn context_full(tokens: Option<usize>, context: Option<usize>) -> String {
    let tokens = tokens.map_or("more tokens than it holds".into(), |t| {
        format!("it takes {t} tokens")
    });
    match context {
        Some(c) => format!("{tokens}; the context holds {c}"),
        None => tokens,
    }
}

/// A model agents can call.
pub trait ModelBackend: Send + Sync {
    /// A short description, e.g. the model file or URL.
    fn describe(&self) -> String;
    /// Generates the assistant's next message.
    fn generate(&self, request: &GenerateRequest) -> Result<Generation, Error>;
    /// Scores candidate replies by log-likelihood.
    fn score(&self, request: &ScoreRequest) -> Result<Scores, Error>;
}

/// The backend a model config describes. The embedded default model is fetched first if it is
/// not in the cache; `progress` hears about that.
pub fn open(
    options: &hx_common::config::ModelOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<std::sync::Arc<dyn ModelBackend>, Error> {
    use hx_common::config::ModelOptions;
    match options {
        ModelOptions::Embedded {
            gguf,
            threads,
            context,
        } => {
            let path = match gguf {
                Some(p) => p.clone(),
                None => fetch::ensure_default(progress)?,
            };
            let mut o = embedded::Options::new(path);
            o.threads = *threads;
            o.context = *context as usize;
            Ok(std::sync::Arc::new(embedded::Embedded::load(&o)?))
        }
        ModelOptions::Openai {
            base_url,
            model,
            api_key_env,
            max_concurrency,
            timeout,
        } => {
            let api_key = match api_key_env {
                Some(var) => Some(std::env::var(var).map_err(|_| {
                    Error::Request(format!(
                        "model.api-key-env names {var}, which is not set in the environment"
                    ))
                })?),
                None => None,
            };
            let mut o = openai::Options::new(base_url.clone(), model.clone());
            o.api_key = api_key;
            o.max_concurrency = *max_concurrency;
            o.timeout = *timeout;
            Ok(std::sync::Arc::new(openai::OpenAi::new(o)?))
        }
    }
}
