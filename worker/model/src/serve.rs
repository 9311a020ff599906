//! `hx model serve`: the embedded model behind an OpenAI-compatible HTTP API, so other tools
//! (and hx workers on other machines) can use it, and so the HTTP backend has a real server to
//! be tested against on any machine.
//!
//! - `GET /v1/models`
//! - `POST /v1/chat/completions`: `messages`, `max_tokens`, `temperature`, `seed`, `stop`
//! - `POST /v1/completions`: `prompt` (a string; control-token text such as `<|im_start|>` is
//!   read as the control token), `max_tokens`, `temperature`, `seed`, `stop`, and `echo` with
//!   `logprobs` for the prompt's log-probabilities in OpenAI's legacy format
//!   (`token_logprobs`, `tokens`, `text_offset` in characters), as vLLM returns them.
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
struct CompletionBody {
    prompt: String,
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

fn usage_json(g: &Generation) -> Value {
    json!({
        "prompt_tokens": g.usage.prompt_tokens,
        "completion_tokens": g.usage.completion_tokens,
        "total_tokens": g.usage.prompt_tokens + g.usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": g.usage.cached_tokens},
    })
}

fn finish(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

fn model_error(e: Error) -> (u16, Value) {
    match e {
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
                "usage": usage_json(&g),
            }),
        ),
        Err(e) => model_error(e),
    }
}

fn completion(model: &Embedded, options: &ServeOptions, b: CompletionBody) -> (u16, Value) {
    let tokens = model.tokenizer().encode(&b.prompt);
    if tokens.is_empty() {
        return error(400, "the prompt is empty");
    }
    let request = GenerateRequest {
        messages: Vec::new(),
        stop: stops(b.stop),
        max_tokens: b.max_tokens,
        temperature: b.temperature,
        seed: b.seed.unwrap_or(0),
    };
    let g = if b.max_tokens == 0 {
        Generation {
            text: String::new(),
            finish: Finish::Length,
            usage: super::Usage {
                prompt_tokens: tokens.len() as u64,
                ..Default::default()
            },
        }
    } else {
        match model.generate_tokens(tokens.clone(), &request) {
            Ok(g) => g,
            Err(e) => return model_error(e),
        }
    };
    let mut text = g.text.clone();
    let mut logprobs = Value::Null;
    if b.echo {
        text = format!("{}{}", b.prompt, g.text);
        if options.logprobs && b.logprobs.is_some() {
            // Every prompt token after the first, scored as one candidate after the first.
            let per = if tokens.len() > 1 {
                match model.score_tokens(tokens[..1].to_vec(), vec![tokens[1..].to_vec()]) {
                    Ok(s) => s.per_token.into_iter().next().unwrap_or_default(),
                    Err(e) => return model_error(e),
                }
            } else {
                Vec::new()
            };
            let mut offsets = Vec::new();
            let mut texts = Vec::new();
            let mut at = 0usize;
            for &t in &tokens {
                let piece = model.tokenizer().decode(&[t]);
                offsets.push(at);
                at += piece.chars().count();
                texts.push(piece);
            }
            let token_logprobs: Vec<Value> = std::iter::once(Value::Null)
                .chain(per.into_iter().map(|l| json!(l)))
                .collect();
            logprobs = json!({
                "tokens": texts,
                "token_logprobs": token_logprobs,
                "text_offset": offsets,
            });
        }
    }
    (
        200,
        json!({
            "object": "text_completion",
            "model": options.name,
            "choices": [{
                "index": 0,
                "text": text,
                "logprobs": logprobs,
                "finish_reason": finish(g.finish),
            }],
            "usage": usage_json(&g),
        }),
    )
}
