//! The OpenAI-compatible HTTP backend: vLLM, SGLang, llama.cpp's server, Ollama, hosted APIs,
//! or `hx model serve`.
//!
//! Generation uses `/v1/chat/completions`, so the server applies its model's chat template.
//! Scoring uses `/v1/completions` with `echo` and `logprobs`: the prompt (the conversation
//! rendered with ChatML, which SmolLM2, Qwen and many others use) followed by one candidate is
//! sent back with each prompt token's log-probability, and the candidate's tokens are summed.
//! vLLM and llama.cpp's server (with `logits_all`) provide that; a server that does not (Ollama,
//! most hosted chat APIs) is reported as [`Error::NoLogprobs`].
//!
//! Requests are limited to `max_concurrency` in flight, time out, and are retried with
//! exponential backoff on 429 and 5xx answers and on connection failures. A server's answer
//! that the prompt does not fit its context is [`Error::ContextFull`], as the embedded model's
//! is, so the agent runtime leaves parts of the context out the same way with either.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use hx_common::backoff::Backoff;
use serde_json::{Value, json};

use super::template::{CHATML, ChatTemplate};
use super::{
    Error, Finish, GenerateRequest, Generation, ModelBackend, ScoreRequest, Scores, Usage,
};

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Base URL up to and including `/v1`.
    pub base_url: String,
    /// The model name the server knows.
    pub model: String,
    /// The API key, if the server wants one.
    pub api_key: Option<String>,
    /// Requests in flight at most.
    pub max_concurrency: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Attempts per request (first try included) on 429, 5xx or connection failure.
    pub attempts: u32,
    /// First backoff; doubles per retry.
    pub backoff: Duration,
}

impl Options {
    /// Defaults for a server and model.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Options {
        Options {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            model: model.into(),
            api_key: None,
            max_concurrency: 16,
            timeout: Duration::from_secs(120),
            attempts: 4,
            backoff: Duration::from_millis(250),
        }
    }
}

/// A counting semaphore: `max_concurrency` requests in flight.
struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Slots {
    fn acquire(&self) -> SlotGuard<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        SlotGuard(self)
    }
}

struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.cv.notify_one();
    }
}

/// An OpenAI-compatible server.
pub struct OpenAi {
    options: Options,
    agent: ureq::Agent,
    slots: Slots,
    chatml: ChatTemplate,
    /// Whether the server answered a list of prompts with one choice per prompt; cleared the
    /// first time it does not, and then each candidate goes in a request of its own.
    batches: std::sync::atomic::AtomicBool,
}

impl OpenAi {
    /// A client; nothing is sent until the first call.
    pub fn new(options: Options) -> Result<OpenAi, Error> {
        let agent = ureq::AgentBuilder::new()
            .timeout(options.timeout)
            .max_idle_connections_per_host(options.max_concurrency.max(1))
            .build();
        Ok(OpenAi {
            slots: Slots {
                free: Mutex::new(options.max_concurrency.max(1)),
                cv: Condvar::new(),
            },
            agent,
            chatml: ChatTemplate::new(CHATML, "", "<|im_end|>")?,
            batches: std::sync::atomic::AtomicBool::new(true),
            options,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.options.base_url)
    }

    /// POSTs JSON, retrying transient failures; returns the JSON answer.
    fn post(&self, path: &str, body: &Value) -> Result<Value, Error> {
        let url = self.url(path);
        let _slot = self.slots.acquire();
        let mut waits = Backoff::new(self.options.backoff, Duration::MAX);
        let mut last = String::new();
        for attempt in 1..=self.options.attempts.max(1) {
            let mut req = self.agent.post(&url);
            if let Some(key) = &self.options.api_key {
                req = req.set("Authorization", &format!("Bearer {key}"));
            }
            match req.send_json(body) {
                Ok(resp) => {
                    return resp.into_json::<Value>().map_err(|e| Error::Server {
                        url: url.clone(),
                        reason: format!("the answer is not JSON: {e}"),
                    });
                }
                Err(ureq::Error::Status(code, resp)) => {
                    let text = resp.into_string().unwrap_or_default();
                    if (400..500).contains(&code)
                        && let Some(full) = context_full(&text)
                    {
                        return Err(full);
                    }
                    let text = text.chars().take(500).collect::<String>();
                    if code == 429 || code >= 500 {
                        last = format!("HTTP {code}: {text}");
                    } else {
                        return Err(Error::Server {
                            url,
                            reason: format!("HTTP {code}: {text}"),
                        });
                    }
                }
                Err(ureq::Error::Transport(t)) => {
                    last = match t.kind() {
                        ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns => {
                            format!("cannot connect: {t}")
                        }
                        _ => t.to_string(),
                    };
                }
            }
            if attempt < self.options.attempts {
                tracing::debug!(%url, attempt, reason = %last, "retrying");
                std::thread::sleep(waits.next().unwrap_or_default());
            }
        }
        Err(Error::Server {
            url,
            reason: format!("{last} (after {} attempts)", self.options.attempts),
        })
    }

    /// `/v1/completions` with `echo` and `logprobs` for `prompt` (one text or a list), with
    /// a server's refusal of prompt log-probabilities turned into [`Error::NoLogprobs`].
    fn echo(&self, prompt: Value) -> Result<Value, Error> {
        let body = json!({
            "model": self.options.model,
            "prompt": prompt,
            "max_tokens": 1,
            "temperature": 0.0,
            "echo": true,
            "logprobs": 1,
        });
        self.post("/completions", &body).map_err(|e| match e {
            Error::Server { url, reason }
                if reason.contains("HTTP 4")
                    && (reason.contains("logprob") || reason.contains("echo")) =>
            {
                Error::NoLogprobs {
                    url,
                    reason: format!("the server refuses prompt log-probabilities: {reason}"),
                }
            }
            other => other,
        })
    }

    /// Log-probabilities of the tokens of `prompt + candidate` that start at or after
    /// `prompt`'s end, one request per candidate.
    fn score_one(&self, prompt: &str, candidate: &str) -> Result<Scored, Error> {
        let text = format!("{prompt}{candidate}");
        let v = self.echo(json!(text))?;
        let per_token = self.candidate_logprobs(&v["choices"][0], &text, candidate)?;
        Ok((per_token, usage(&v["usage"])))
    }

    /// Every candidate in one request (a list of prompts), as vLLM batches them with their
    /// shared prefix and `hx model serve` scores them as one batch. `None` when the server
    /// does not answer a list with one choice per prompt (it is then not asked again).
    fn score_batch(
        &self,
        prompt: &str,
        candidates: &[String],
    ) -> Result<Option<Vec<Scored>>, Error> {
        use std::sync::atomic::Ordering;
        if candidates.len() < 2 || !self.batches.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let texts: Vec<String> = candidates.iter().map(|c| format!("{prompt}{c}")).collect();
        let v = match self.echo(json!(texts)) {
            Ok(v) => v,
            // A server that takes one prompt per request may refuse the list outright
            // (llama-cpp-python's answers HTTP 500); each candidate then goes alone.
            Err(Error::Server { url, reason }) => {
                tracing::warn!(%url, %reason, "the server refused a list of prompts; one request per candidate from now");
                self.batches.store(false, Ordering::Relaxed);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let choices = v["choices"].as_array().map_or(&[][..], Vec::as_slice);
        let by_index: Vec<Option<&Value>> = (0..texts.len())
            .map(|i| {
                choices
                    .iter()
                    .find(|c| c["index"].as_u64() == Some(i as u64))
            })
            .collect();
        if choices.len() != texts.len() || by_index.iter().any(Option::is_none) {
            tracing::debug!(
                asked = texts.len(),
                got = choices.len(),
                "the server does not answer a list of prompts; one request per candidate from now"
            );
            self.batches.store(false, Ordering::Relaxed);
            return Ok(None);
        }
        let mut out = Vec::with_capacity(texts.len());
        for (i, c) in by_index.into_iter().flatten().enumerate() {
            let per_token = self.candidate_logprobs(c, &texts[i], &candidates[i])?;
            // The request's usage, counted once.
            let u = if i == 0 {
                usage(&v["usage"])
            } else {
                Usage::default()
            };
            out.push((per_token, u));
        }
        Ok(Some(out))
    }

    /// The log-probabilities of the echoed tokens that cover `candidate` at the end of
    /// `text`, from one choice of a `/v1/completions` answer.
    fn candidate_logprobs(
        &self,
        choice: &Value,
        text: &str,
        candidate: &str,
    ) -> Result<Vec<f64>, Error> {
        let url = self.url("/completions");
        let no = |what: &str| Error::NoLogprobs {
            url: url.clone(),
            reason: format!(
                "the server returned no prompt log-probabilities ({what}); scoring needs \
                 /v1/completions with echo and logprobs, as vLLM and llama.cpp's server provide"
            ),
        };
        let lp = &choice["logprobs"];
        let logprobs = lp["token_logprobs"]
            .as_array()
            .ok_or_else(|| no("no choices[0].logprobs.token_logprobs"))?;
        let tokens = lp["tokens"]
            .as_array()
            .ok_or_else(|| no("no choices[0].logprobs.tokens"))?;
        if tokens.len() != logprobs.len() {
            return Err(no("tokens and token_logprobs differ in length"));
        }
        // Servers disagree on offsets (llama.cpp's skip control tokens), so align from the
        // end: skip the generated text, then take the tokens that cover the candidate.
        let echoed = choice["text"].as_str().unwrap_or(text);
        let generated = echoed.strip_prefix(text).map_or(0, |g| g.chars().count());
        let want = candidate.chars().count();
        let mut skip = generated;
        let mut covered = 0;
        let mut per_token = Vec::new();
        for (t, l) in tokens.iter().zip(logprobs).rev() {
            let n = t.as_str().map_or(0, |s| s.chars().count());
            if skip > 0 {
                skip = skip.saturating_sub(n);
                continue;
            }
            if covered >= want {
                break;
            }
            covered += n;
            per_token.push(
                l.as_f64()
                    .ok_or_else(|| no("a candidate token has no log-probability"))?,
            );
        }
        per_token.reverse();
        if per_token.is_empty() && !candidate.is_empty() {
            return Err(no("no echoed token covers the candidate"));
        }
        Ok(per_token)
    }
}

/// One candidate's per-token log-probabilities and the tokens its request used.
type Scored = (Vec<f64>, Usage);

/// A server's answer (the body of a 4xx) that the prompt does not fit its context, as
/// [`Error::ContextFull`] with the numbers the answer gives: OpenAI's and llama-cpp-python's
/// `context_length_exceeded` ("This model's maximum context length is 2048 tokens, however you
/// requested 2100 tokens ..."), vLLM's ("... maximum context length is 4096 tokens and your
/// request has 4100 input tokens"), llama.cpp's server's `exceed_context_size_error` (with
/// `n_prompt_tokens` and `n_ctx`), and `hx model serve`'s. `None` for any other answer.
fn context_full(body: &str) -> Option<Error> {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let e = if v["error"].is_object() {
        &v["error"]
    } else {
        &v
    };
    let message = e["message"].as_str().unwrap_or(body).to_lowercase();
    let said = e["code"] == "context_length_exceeded"
        || e["type"] == "exceed_context_size_error"
        || [
            "maximum context length",
            "exceeds the available context size",
            "exceed context window",
        ]
        .iter()
        .any(|m| message.contains(m));
    if !said {
        return None;
    }
    let field = |k: &str| e[k].as_u64().and_then(|n| usize::try_from(n).ok());
    let after = |markers: &[&str]| markers.iter().find_map(|m| number_after(&message, m));
    Some(Error::ContextFull {
        tokens: field("n_prompt_tokens")
            .or_else(|| after(&["requested ", "request has ", "request ("])),
        context: field("n_ctx").or_else(|| {
            after(&[
                "maximum context length is ",
                "available context size (",
                "context window of ",
            ])
        }),
    })
}

/// The whole number that follows the first `marker` in `text`.
fn number_after(text: &str, marker: &str) -> Option<usize> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn usage(u: &Value) -> Usage {
    Usage {
        prompt_tokens: u["prompt_tokens"].as_u64().unwrap_or(0),
        cached_tokens: u["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or(0),
        completion_tokens: u["completion_tokens"].as_u64().unwrap_or(0),
    }
}

impl ModelBackend for OpenAi {
    fn describe(&self) -> String {
        format!("openai {} at {}", self.options.model, self.options.base_url)
    }

    fn generate(&self, request: &GenerateRequest) -> Result<Generation, Error> {
        let mut body = json!({
            "model": self.options.model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "seed": request.seed,
        });
        if !request.stop.is_empty() {
            body["stop"] = json!(request.stop);
        }
        let v = self.post("/chat/completions", &body)?;
        let choice = &v["choices"][0];
        let text = choice["message"]["content"]
            .as_str()
            .ok_or_else(|| Error::Server {
                url: self.url("/chat/completions"),
                reason: format!(
                    "the answer has no choices[0].message.content: {}",
                    v.to_string().chars().take(300).collect::<String>()
                ),
            })?
            .to_owned();
        let finish = match choice["finish_reason"].as_str() {
            Some("length") => Finish::Length,
            _ => Finish::Stop,
        };
        Ok(Generation {
            text,
            finish,
            usage: usage(&v["usage"]),
        })
    }

    fn score(&self, request: &ScoreRequest) -> Result<Scores, Error> {
        if request.candidates.is_empty() {
            return Err(Error::Request("nothing to score".into()));
        }
        let prompt = self.chatml.render(&request.messages)?;
        let results: Vec<Result<(Vec<f64>, Usage), Error>> =
            match self.score_batch(&prompt, &request.candidates)? {
                Some(all) => all.into_iter().map(Ok).collect(),
                // One request per candidate, in parallel within the concurrency limit.
                None => std::thread::scope(|s| {
                    let handles: Vec<_> = request
                        .candidates
                        .iter()
                        .map(|c| {
                            let prompt = &prompt;
                            s.spawn(move || self.score_one(prompt, c))
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().unwrap_or(Err(Error::Stopped)))
                        .collect()
                }),
            };
        let mut scores = Scores {
            logprobs: Vec::new(),
            tokens: Vec::new(),
            per_token: Vec::new(),
            usage: Usage::default(),
        };
        for r in results {
            let (per_token, u) = r?;
            scores.logprobs.push(per_token.iter().sum());
            scores.tokens.push(per_token.len() as u32);
            scores.per_token.push(per_token);
            scores.usage += u;
        }
        Ok(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(body: &str) -> (Option<usize>, Option<usize>) {
        match context_full(body) {
            Some(Error::ContextFull { tokens, context }) => (tokens, context),
            other => panic!("{body}: {other:?}"),
        }
    }

    /// The answers of the servers hx talks to when a prompt does not fit, with their numbers.
    #[test]
    fn servers_answers_that_a_prompt_does_not_fit_are_context_full() {
        // llama-cpp-python 0.3.36 (its error formatter), text completion.
        assert_eq!(
            full(
                r#"{"error":{"message":"This model's maximum context length is 2048 tokens, however you requested 3001 tokens (3000 in your prompt; 1 for the completion). Please reduce your prompt; or completion length.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#
            ),
            (Some(3001), Some(2048))
        );
        // vLLM, older and newer wording.
        assert_eq!(
            full(
                r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 4200 tokens (4199 in the messages, 1 in the completion). Please reduce the length of the messages or completion.","type":"BadRequestError","param":null,"code":400}"#
            ),
            (Some(4200), Some(4096))
        );
        assert_eq!(
            full(
                r#"{"error":{"message":"'max_tokens' or 'max_completion_tokens' is too large: 8000. This model's maximum context length is 4096 tokens and your request has 2778 input tokens (8000 > 4096 - 2778). None","type":"BadRequestError","param":null,"code":400}}"#
            ),
            (Some(2778), Some(4096))
        );
        // llama.cpp's server.
        assert_eq!(
            full(
                r#"{"error":{"code":400,"message":"request (4476 tokens) exceeds the available context size (4096 tokens)","type":"exceed_context_size_error","n_prompt_tokens":4476,"n_ctx":4096}}"#
            ),
            (Some(4476), Some(4096))
        );
        // hx model serve's own answer, and a code without numbers.
        let ours = Error::ContextFull {
            tokens: Some(2100),
            context: Some(2048),
        };
        let (code, body) = crate::serve::model_error(ours);
        assert_eq!(code, 400);
        assert_eq!(full(&body.to_string()), (Some(2100), Some(2048)));
        assert_eq!(
            full(r#"{"error":{"message":"too long","code":"context_length_exceeded"}}"#),
            (None, None)
        );
    }

    #[test]
    fn other_bad_requests_are_not_context_full() {
        for body in [
            r#"{"error":{"message":"The model `x` does not exist","type":"invalid_request_error","code":"model_not_found"}}"#,
            r#"{"error":{"message":"logprobs are not supported","type":"invalid_request_error"}}"#,
            "Bad Request",
            "",
        ] {
            assert!(context_full(body).is_none(), "{body}");
        }
    }

    #[test]
    fn context_full_says_what_it_knows() {
        let e = Error::ContextFull {
            tokens: Some(2100),
            context: Some(2048),
        };
        assert_eq!(
            e.to_string(),
            "bad request: the prompt does not fit the model's context (it takes 2100 tokens; \
             the context holds 2048)"
        );
        let e = Error::ContextFull {
            tokens: None,
            context: None,
        };
        assert_eq!(
            e.to_string(),
            "bad request: the prompt does not fit the model's context (more tokens than it holds)"
        );
    }
}
