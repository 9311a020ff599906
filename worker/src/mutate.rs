//! The model-guided variation operator, **text**: the model rewrites a prompt text given the
//! parent's failure digest. The operators that need no model (structural, parametric, adopt,
//! crossover) live beside the algebra, in [`hx_common::harness::mutate`].

use hx_common::harness::algebra::{Edit, TextEdit};
use hx_common::harness::catalog::{Kind, PLACEHOLDERS};
use hx_common::harness::param::{ParamType, ParamValue};
use hx_common::harness::{Component, Harness};
use hx_common::protocol::{MutationOp, MutationSpec};
use hx_model::{self as model, GenerateRequest, Message, ModelBackend, Role as MsgRole, Usage};
use rand::SeedableRng as _;
use rand::seq::IndexedRandom as _;
use rand_chacha::ChaCha8Rng;

pub use hx_common::harness::mutate::{Child, Limits, NoValidChild, crossover, offline};

/// Why no child was made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operator found no edit the algebra accepts, or the edits given do not apply.
    #[error(transparent)]
    NoValidChild(#[from] NoValidChild),
    /// The model failed during a text mutation or a proposal.
    #[error("model: {0}")]
    Model(#[from] model::Error),
    /// A reflective child's gate episode failed (a world or model error, not a loss).
    #[error("gate: {0}")]
    Gate(String),
}

/// Makes a child of `parent` as `spec` says, within `limits`, with the tokens the model spent
/// on it (text mutation only; zero for the others).
pub fn mutate(
    parent: &Harness,
    spec: &MutationSpec,
    limits: Limits,
    model: &dyn ModelBackend,
) -> Result<(Child, Usage), Error> {
    match &spec.op {
        MutationOp::Reflect { .. } => Err(refused(
            "reflective mutation runs inside a job (its gate plays episodes)".into(),
        )),
        MutationOp::Text { component } => text(
            parent,
            component.as_deref(),
            &spec.failure_digest,
            spec.seed,
            model,
        ),
        _ => Ok((
            offline(parent, spec, limits)
                .expect("only text and reflective mutation need a model")?,
            Usage::default(),
        )),
    }
}

/// Model-guided text mutation: the model rewrites one prompt text given the failure digest.
fn text(
    parent: &Harness,
    component: Option<&str>,
    digest: &str,
    seed: u64,
    model: &dyn ModelBackend,
) -> Result<(Child, Usage), Error> {
    // Text parameters that are prompts (the system prompt, hints, framing).
    let texts: Vec<(&Component, &str, usize)> = parent
        .components()
        .filter(|c| component.is_none_or(|n| c.name == n))
        .flat_map(|c| {
            c.spec().params.iter().filter_map(move |p| match p.ty {
                ParamType::Text { max_len } if c.param(p.name).is_some() => {
                    Some((c, p.name, max_len))
                }
                _ => None,
            })
        })
        .filter(|(c, _, _)| matches!(c.kind, Kind::SystemPrompt | Kind::Hint | Kind::TaskFraming))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let Some(&(c, param, max_len)) = texts.choose(&mut rng) else {
        return Err(refused(match component {
            Some(n) => format!("text: {n} has no prompt text"),
            None => "text: the harness has no prompt text".into(),
        }));
    };
    let old = c.param(param).and_then(ParamValue::as_text).unwrap_or("");
    // The placeholders the runtime fills (the goal, the world's commands and an example).
    let keep: Vec<&str> = PLACEHOLDERS
        .into_iter()
        .filter(|p| old.contains(p))
        .collect();
    let digest: String = digest.chars().take(600).collect();
    let ask = format!(
        "Here are instructions for an agent that acts in a text world:\n\n{old}\n\n\
         The agent failed like this:\n{}\n\n\
         Write better instructions that would help it avoid these failures. \
         Keep them short and concrete.{}",
        if digest.is_empty() {
            "(no details)"
        } else {
            digest.as_str()
        },
        if keep.is_empty() {
            String::new()
        } else {
            format!(
                " Keep the placeholders {} exactly as written: the agent's runtime fills them in.",
                keep.join(" and ")
            )
        }
    );
    let g = model.generate(&GenerateRequest {
        messages: vec![
            Message::new(MsgRole::System, "You write instructions for agents."),
            Message::new(MsgRole::User, ask),
        ],
        stop: Vec::new(),
        max_tokens: 160,
        temperature: 0.7,
        seed,
    })?;
    let new = g.text.trim();
    let reason = if new.is_empty() {
        Some("the model wrote nothing".to_owned())
    } else if new.len() > max_len {
        Some(format!(
            "the model wrote {} bytes; {param} holds {max_len}",
            new.len()
        ))
    } else if let Some(lost) = keep.iter().find(|p| !new.contains(*p)) {
        Some(format!("the model dropped the {lost} placeholder"))
    } else if new == old {
        Some("the model wrote the same text".into())
    } else {
        None
    };
    if let Some(r) = reason {
        return Err(refused(format!("text: {r}")));
    }
    let edit = Edit::EditText {
        component: c.name.clone(),
        param: param.to_owned(),
        edit: TextEdit::Set(new.to_owned()),
    };
    let harness = parent
        .apply(&edit)
        .map_err(|e| refused(format!("text: {e}")))?;
    Ok((
        Child {
            harness,
            edits: vec![edit],
            operator: "text",
        },
        g.usage,
    ))
}

fn refused(reason: String) -> Error {
    Error::NoValidChild(NoValidChild(reason))
}
