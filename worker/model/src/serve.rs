//! `hx model serve`: the embedded model behind an OpenAI-compatible HTTP API, so other tools
//! (and hx workers on other machines) can use it, and so the HTTP backend has a real server to
//! be tested against on any machine.
//!
//! - `GET /v1/models`
//! - `POST /v1/chat/completions`: `messages`, `max_tokens`, `temperature`, `seed`, `stop`
//! - `POST /v1/completions`: `prompt` (a string, or a list of them answered with one choice
//!   each; control-token text such as `<|im_start|>` is read as the control token),
//!   `max_tokens`, `temperature`, `seed`, `stop`, and `echo` with `logprobs` for the prompt's
//!   log-probabilities in OpenAI's legacy format (`token_logprobs`, `tokens`, `text_offset` in
//!   characters), as vLLM returns them. The prompt log-probabilities of a list are computed
//!   as one batch: the prompts' shared prefix once, each rest as a fork of it (how the HTTP
//!   backend sends a step's candidates).
//!
//! Each request runs on its own thread; the model's engine batches whatever is in flight.
//! Bodies over 4 MiB and malformed JSON get a 400 with a reason.

use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use super::embedded::Embedded;
use super::{Error, Finish, GenerateRequest, Generation, Message, ModelBackend};

/// Largest request body read.
const MAX_BODY: u64 = 4 << 20;

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The model name reported and accepted.
    pub name: String,
    /// Answer `echo` + `logprobs`; when false the fields are ignored, as Ollama does.
    pub logprobs: bool,
}

#[derive(Deserialize)]
struct ChatBody {
    messages: Vec<Message>,
    #[serde(default = "default_max")]
    max_tokens: u32,
    #[serde(default)]
    temperature: f32,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stop: Option<Stop>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct CompletionBody {
    prompt: Prompt,
    #[serde(default = "default_max")]
    max_tokens: u32,
    #[serde(default)]
    temperature: f32,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    echo: bool,
    #[serde(default)]
    logprobs: Option<u32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

fn stops(s: Option<Stop>) -> Vec<String> {
    match s {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    }
}

fn default_max() -> u32 {
    256
}

/// Binds `addr` (port 0 picks a free one), reports the bound address, and serves until the
/// process ends.
pub fn serve(
    model: Arc<Embedded>,
    addr: &str,
    options: ServeOptions,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), Error> {
    let server = tiny_http::Server::http(addr).map_err(|e| Error::Server {
        url: addr.to_owned(),
        reason: format!("cannot listen: {e}"),
    })?;
    let bound = server.server_addr().to_ip().ok_or_else(|| Error::Server {
        url: addr.to_owned(),
        reason: "not an IP address".into(),
    })?;
    ready(bound);
    let options = Arc::new(options);
    for request in server.incoming_requests() {
        let model = Arc::clone(&model);
        let options = Arc::clone(&options);
        std::thread::spawn(move || handle(&model, &options, request));
    }
    Ok(())
}

fn respond(request: tiny_http::Request, code: u16, body: &Value) {
    let header =
        tiny_http::Header::from_bytes("Content-Type", "application/json").expect("a valid header");
    let r = tiny_http::Response::from_string(body.to_string())
        .with_status_code(code)
        .with_header(header);
    let _ = request.respond(r);
}

fn error(code: u16, message: impl std::fmt::Display) -> (u16, Value) {
    (
        code,
        json!({"error": {"message": message.to_string(), "type": "invalid_request_error"}}),
    )
}

fn handle(model: &Embedded, options: &ServeOptions, mut request: tiny_http::Request) {
    let path = request.url().split('?').next().unwrap_or("").to_owned();
    let method = request.method().clone();
    let mut body = Vec::new();
    let read = request
        .as_reader()
        .take(MAX_BODY + 1)
        .read_to_end(&mut body);
    let (code, value) = if read.is_err() {
        error(400, "cannot read the request body")
    } else if body.len() as u64 > MAX_BODY {
        error(413, format!("the body is over {MAX_BODY} bytes"))
    } else {
        match (method, path.as_str()) {
            (tiny_http::Method::Get, "/v1/models") => (
                200,
                json!({"object": "list", "data": [{"id": options.name, "object": "model", "owned_by": "hx"}]}),
            ),
            (tiny_http::Method::Post, "/v1/chat/completions") => {
                match serde_json::from_slice::<ChatBody>(&body) {
                    Ok(b) => chat(model, options, b),
                    Err(e) => error(400, format!("bad chat completion request: {e}")),
                }
            }
            (tiny_http::Method::Post, "/v1/completions") => {
                match serde_json::from_slice::<CompletionBody>(&body) {
                    Ok(b) => completion(model, options, b),
                    Err(e) => error(400, format!("bad completion request: {e}")),
                }
            }
            (_, p) => error(404, format!("no route {p}")),
        }
    };
    respond(request, code, &value);
}

fn usage_json(u: &super::Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

fn finish(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

pub(crate) fn model_error(e: Error) -> (u16, Value) {
    match e {
        // OpenAI's code for it, with llama.cpp's server's numbers, so clients (hx's among
        // them) can tell it from other bad requests and leave something out.
        Error::ContextFull { tokens, context } => (
            400,
            json!({"error": {
                "message": e.to_string(),
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
                "n_prompt_tokens": tokens,
                "n_ctx": context,
            }}),
        ),
        Error::Request(_) | Error::Template(_) => error(400, e),
        other => error(500, other),
    }
}

fn chat(model: &Embedded, options: &ServeOptions, b: ChatBody) -> (u16, Value) {
    let request = GenerateRequest {
        messages: b.messages,
        stop: stops(b.stop),
        max_tokens: b.max_tokens,
        temperature: b.temperature,
        seed: b.seed.unwrap_or(0),
    };
    match model.generate(&request) {
        Ok(g) => (
            200,
            json!({
                "object": "chat.completion",
                "model": options.name,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": g.text},
                    "finish_reason": finish(g.finish),
                }],
                "usage": usage_json(&g.usage),
            }),
        ),
        Err(e) => model_error(e),
    }
}

fn completion(model: &Embedded, options: &ServeOptions, b: CompletionBody) -> (u16, Value) {
    let prompts = match &b.prompt {
        Prompt::One(p) => vec![p.clone()],
        Prompt::Many(v) if v.is_empty() => return error(400, "the prompt list is empty"),
        Prompt::Many(v) => v.clone(),
    };
    let tokens: Vec<Vec<super::tokenizer::Token>> = prompts
        .iter()
        .map(|p| model.tokenizer().encode(p))
        .collect();
    if tokens.iter().any(Vec::is_empty) {
        return error(400, "a prompt is empty");
    }
    let request = GenerateRequest {
        messages: Vec::new(),
        stop: stops(b.stop),
        max_tokens: b.max_tokens,
        temperature: b.temperature,
        seed: b.seed.unwrap_or(0),
    };
    // Prompt log-probabilities first, all prompts in one scoring request: every token after
    // the first, as candidates after the first token (the engine computes the candidates'
    // shared prefixes once). Prompts that start with different tokens are scored apart.
    let want_logprobs = b.echo && options.logprobs && b.logprobs.is_some();
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); tokens.len()];
    if want_logprobs {
        let mut groups: Vec<(super::tokenizer::Token, Vec<usize>)> = Vec::new();
        for (i, t) in tokens.iter().enumerate() {
            match groups.iter_mut().find(|(first, _)| *first == t[0]) {
                Some((_, members)) => members.push(i),
                None => groups.push((t[0], vec![i])),
            }
        }
        for (first, members) in groups {
            let scored: Vec<usize> = members
                .into_iter()
                .filter(|&i| tokens[i].len() > 1)
                .collect();
            if scored.is_empty() {
                continue;
            }
            let candidates = scored.iter().map(|&i| tokens[i][1..].to_vec()).collect();
            match model.score_tokens(vec![first], candidates) {
                Ok(s) => {
                    for (i, p) in scored.into_iter().zip(s.per_token) {
                        per[i] = p;
                    }
                }
                Err(e) => return model_error(e),
            }
        }
    }
    // Then the completions, all in flight at once (the engine batches them).
    let generations: Vec<Result<Generation, Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = tokens
            .iter()
            .map(|t| {
                let request = &request;
                s.spawn(move || {
                    if request.max_tokens == 0 {
                        Ok(Generation {
                            text: String::new(),
                            finish: Finish::Length,
                            usage: super::Usage {
                                prompt_tokens: t.len() as u64,
                                ..Default::default()
                            },
                        })
                    } else {
                        model.generate_tokens(t.clone(), request)
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(Error::Stopped)))
            .collect()
    });
    let mut choices = Vec::new();
    let mut total = super::Usage::default();
    for (i, g) in generations.into_iter().enumerate() {
        let g = match g {
            Ok(g) => g,
            Err(e) => return model_error(e),
        };
        total += g.usage;
        let mut text = g.text.clone();
        let mut logprobs = Value::Null;
        if b.echo {
            text = format!("{}{}", prompts[i], g.text);
            if want_logprobs {
                let mut offsets = Vec::new();
                let mut texts = Vec::new();
                let mut at = 0usize;
                for &t in &tokens[i] {
                    let piece = model.tokenizer().decode(&[t]);
                    offsets.push(at);
                    at += piece.chars().count();
                    texts.push(piece);
                }
                let token_logprobs: Vec<Value> = std::iter::once(Value::Null)
                    .chain(per[i].iter().map(|l| json!(l)))
                    .collect();
                logprobs = json!({
                    "tokens": texts,
                    "token_logprobs": token_logprobs,
                    "text_offset": offsets,
                });
            }
        }
        choices.push(json!({
            "index": i,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": finish(g.finish),
        }));
    }
    (
        200,
        json!({
            "object": "text_completion",
            "model": options.name,
            "choices": choices,
            "usage": usage_json(&total),
        }),
    )
}
