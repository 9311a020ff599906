//! The household world's state and rules: where every object is, what is open, where the
//! agent stands, and what each command does. Observations follow ALFWorld's text style.
//!
//! Every object is in exactly one place (`Loc`), so the world cannot be left inconsistent by
//! any command; unknown or impossible commands answer "Nothing happens.".

use std::fmt::Write as _;

use super::catalog::{ObjectKind, ReceptacleKind, Treatment};

/// Where an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loc {
    /// In or on the receptacle with this index.
    In(usize),
    /// In the agent's hands.
    Held,
}

/// A receptacle instance, e.g. `fridge 1`.
#[derive(Debug, Clone)]
pub struct Receptacle {
    /// Its kind.
    pub kind: &'static ReceptacleKind,
    /// Its name with number.
    pub name: String,
    /// Whether it is open (always true for kinds that do not open).
    pub open: bool,
}

/// An object instance, e.g. `apple 2`.
#[derive(Debug, Clone)]
pub struct Object {
    /// Its kind.
    pub kind: &'static ObjectKind,
    /// Its name with number.
    pub name: String,
    /// Where it is.
    pub loc: Loc,
    /// Cleaned at a basin.
    pub clean: bool,
    /// Heated in a microwave.
    pub hot: bool,
    /// Cooled in a fridge.
    pub cool: bool,
    /// The agent has seen it (in an open receptacle it stood at, or in its hands).
    pub seen: bool,
    /// The agent has held it at some point.
    pub taken: bool,
}

impl Object {
    /// Whether the object has had `t` done to it (and not undone by its opposite).
    pub fn is(&self, t: Treatment) -> bool {
        match t {
            Treatment::Clean => self.clean,
            Treatment::Heat => self.hot,
            Treatment::Cool => self.cool,
        }
    }
}

/// The desk lamp of rooms that have one.
#[derive(Debug, Clone)]
pub struct Lamp {
    /// The receptacle it stands on.
    pub at: usize,
    /// Whether it is on.
    pub on: bool,
}

/// The lamp's name in commands and observations.
pub const LAMP: &str = "desklamp 1";

/// What the task asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Goal {
    /// Put `count` objects of a kind, treated if asked, in one receptacle of a kind.
    Place {
        /// Object kind.
        object: &'static str,
        /// Receptacle kind.
        target: &'static str,
        /// 1, or 2 for pick-two tasks.
        count: usize,
        /// Clean, heat or cool first.
        treatment: Option<Treatment>,
    },
    /// Hold an object of a kind under the lit desk lamp.
    Examine {
        /// Object kind.
        object: &'static str,
    },
}

/// A household world.
#[derive(Debug, Clone)]
pub struct World {
    /// The room type.
    pub room: &'static str,
    /// Receptacles, in the order the room lists them.
    pub receptacles: Vec<Receptacle>,
    /// Objects.
    pub objects: Vec<Object>,
    /// The desk lamp, if any.
    pub lamp: Option<Lamp>,
    /// Where the agent stands; `None` in the middle of the room.
    pub at: Option<usize>,
    /// What the task asks.
    pub goal: Goal,
}

pub(super) const NOTHING: &str = "Nothing happens.";

/// "a apple 1, a bread 1, and a knife 2", or "nothing", as ALFWorld lists things.
fn list(names: &[&str]) -> String {
    match names {
        [] => "nothing".to_owned(),
        [one] => format!("a {one}"),
        many => {
            let mut s = String::new();
            for (i, n) in many.iter().enumerate() {
                if i + 1 == many.len() {
                    let _ = write!(s, "and a {n}");
                } else {
                    let _ = write!(s, "a {n}, ");
                }
            }
            s
        }
    }
}

impl World {
    /// The held object, if any.
    pub fn held(&self) -> Option<usize> {
        self.objects.iter().position(|o| o.loc == Loc::Held)
    }

    fn receptacle(&self, name: &str) -> Option<usize> {
        self.receptacles.iter().position(|r| r.name == name)
    }

    fn object(&self, name: &str) -> Option<usize> {
        self.objects.iter().position(|o| o.name == name)
    }

    /// Names of what lies in or on receptacle `r`, the lamp included.
    fn contents(&self, r: usize) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .objects
            .iter()
            .filter(|o| o.loc == Loc::In(r))
            .map(|o| o.name.as_str())
            .collect();
        if self.lamp.as_ref().is_some_and(|l| l.at == r) {
            names.push(LAMP);
        }
        names
    }

    /// What the agent sees of receptacle `r`.
    fn describe(&self, r: usize) -> String {
        let rec = &self.receptacles[r];
        if rec.kind.openable && !rec.open {
            format!("The {} is closed.", rec.name)
        } else if rec.kind.openable {
            format!(
                "The {} is open. In it, you see {}.",
                rec.name,
                list(&self.contents(r))
            )
        } else {
            format!("On the {}, you see {}.", rec.name, list(&self.contents(r)))
        }
    }

    /// The first observation.
    pub fn intro(&self) -> String {
        let names: Vec<&str> = self.receptacles.iter().map(|r| r.name.as_str()).collect();
        format!(
            "You are in the middle of a room. Looking quickly around you, you see {}.",
            list(&names)
        )
    }

    /// The goal as the task states it.
    pub fn goal_text(&self, variant: usize) -> String {
        let prep = |kind: &str| super::catalog::receptacle(kind).preposition;
        match &self.goal {
            Goal::Place {
                object,
                target,
                count,
                treatment,
            } => {
                let p = prep(target);
                match (count, treatment, variant % 2) {
                    (2, _, 0) => format!("put two {object} {p} {target}."),
                    (2, _, _) => format!("find two {object} and put them {p} {target}."),
                    (_, None, 0) => format!("put a {object} {p} {target}."),
                    (_, None, _) => format!("put some {object} {p} {target}."),
                    (_, Some(t), 0) => format!("put a {} {object} {p} {target}.", t.adjective()),
                    (_, Some(t), _) => {
                        format!("{} some {object} and put it {p} {target}.", t.verb())
                    }
                }
            }
            Goal::Examine { object } if variant.is_multiple_of(2) => {
                format!("examine the {object} with the desklamp.")
            }
            Goal::Examine { object } => format!("look at {object} under the desklamp."),
        }
    }

    /// Whether the goal holds now.
    pub fn won(&self) -> bool {
        match &self.goal {
            Goal::Place {
                object,
                target,
                count,
                treatment,
            } => self.receptacles.iter().enumerate().any(|(r, rec)| {
                rec.kind.name == *target
                    && self
                        .objects
                        .iter()
                        .filter(|o| {
                            o.loc == Loc::In(r)
                                && o.kind.name == *object
                                && treatment.is_none_or(|t| o.is(t))
                        })
                        .count()
                        >= *count
            }),
            Goal::Examine { object } => match (&self.lamp, self.held()) {
                (Some(lamp), Some(h)) => {
                    lamp.on && self.at == Some(lamp.at) && self.objects[h].kind.name == *object
                }
                _ => false,
            },
        }
    }

    /// Whether the agent stands at `r` and can reach inside it.
    fn reachable(&self, r: usize) -> bool {
        self.at == Some(r) && self.receptacles[r].open
    }

    /// Carries out a command and returns the world's answer. Any string is accepted.
    pub fn act(&mut self, command: &str) -> String {
        let words: Vec<&str> = command.split_whitespace().collect();
        let cmd = words.join(" ").to_ascii_lowercase();
        let answer = self
            .act_normalized(&cmd)
            .unwrap_or_else(|| NOTHING.to_owned());
        // What the agent can reach now is what the answer showed it (arriving at or opening a
        // receptacle lists its contents; taking puts the object in its hands).
        for o in &mut self.objects {
            match o.loc {
                Loc::Held => (o.seen, o.taken) = (true, true),
                Loc::In(r) => o.seen |= self.at == Some(r) && self.receptacles[r].open,
            }
        }
        answer
    }

    /// How far the goal is reached, in `[0, 1]`: the fraction of its conditions that hold,
    /// 0 at the start and 1 exactly when [`World::won`].
    ///
    /// A place goal has, for each of its `count` objects, the conditions found (seen), taken,
    /// treated (when asked) and placed (in the one target receptacle holding the most good
    /// objects, and treated); the best `count` objects of the goal's kind are counted. An
    /// examine goal has found, taken, the lamp on, and holding it at the lit lamp.
    pub fn progress(&self) -> f32 {
        let met = |b: bool| u32::from(b);
        match &self.goal {
            Goal::Place {
                object,
                target,
                count,
                treatment,
            } => {
                let good = |o: &Object| treatment.is_none_or(|t| o.is(t));
                // The target instance with the most good goal objects: placing one object in
                // each of two sinks is not half of "two in one sink" twice over.
                let best_target = (0..self.receptacles.len())
                    .filter(|&r| self.receptacles[r].kind.name == *target)
                    .max_by_key(|&r| {
                        self.objects
                            .iter()
                            .filter(|o| o.loc == Loc::In(r) && o.kind.name == *object && good(o))
                            .count()
                    });
                let mut per_object: Vec<u32> = self
                    .objects
                    .iter()
                    .filter(|o| o.kind.name == *object)
                    .map(|o| {
                        met(o.seen)
                            + met(o.taken)
                            + treatment.map_or(0, |t| met(o.is(t)))
                            + met(best_target.is_some_and(|r| o.loc == Loc::In(r)) && good(o))
                    })
                    .collect();
                per_object.sort_unstable_by(|a, b| b.cmp(a));
                let per = 3 + u32::from(treatment.is_some());
                let done: u32 = per_object.iter().take(*count).sum();
                done as f32 / (per * *count as u32) as f32
            }
            Goal::Examine { object } => {
                let kind = |o: &&Object| o.kind.name == *object;
                let lit = self.lamp.as_ref().is_some_and(|l| l.on);
                let done = met(self.objects.iter().filter(kind).any(|o| o.seen))
                    + met(self.objects.iter().filter(kind).any(|o| o.taken))
                    + met(lit)
                    + met(self.won());
                done as f32 / 4.0
            }
        }
    }

    fn act_normalized(&mut self, cmd: &str) -> Option<String> {
        if cmd == "look" {
            return Some(match self.at {
                None => self.intro(),
                Some(r) => format!(
                    "You are facing the {}. Next to it, you see nothing.",
                    self.receptacles[r].name
                ),
            });
        }
        if cmd == "inventory" {
            return Some(match self.held() {
                Some(o) => format!("You are carrying: a {}.", self.objects[o].name),
                None => "You are not carrying anything.".to_owned(),
            });
        }
        if let Some(rest) = cmd.strip_prefix("go to ") {
            let r = self.receptacle(rest)?;
            if self.at == Some(r) {
                return None;
            }
            self.at = Some(r);
            return Some(format!(
                "You arrive at {}. {}",
                self.receptacles[r].name,
                self.describe(r)
            ));
        }
        if let Some(rest) = cmd.strip_prefix("open ") {
            let r = self.receptacle(rest)?;
            let rec = &self.receptacles[r];
            if self.at != Some(r) || !rec.kind.openable || rec.open {
                return None;
            }
            self.receptacles[r].open = true;
            let name = &self.receptacles[r].name;
            return Some(format!("You open the {name}. {}", self.describe(r)));
        }
        if let Some(rest) = cmd.strip_prefix("close ") {
            let r = self.receptacle(rest)?;
            let rec = &self.receptacles[r];
            if self.at != Some(r) || !rec.kind.openable || !rec.open {
                return None;
            }
            self.receptacles[r].open = false;
            return Some(format!("You close the {}.", self.receptacles[r].name));
        }
        if let Some(rest) = cmd.strip_prefix("take ") {
            let (o, r) = rest.split_once(" from ")?;
            let (o, r) = (self.object(o)?, self.receptacle(r)?);
            if self.held().is_some() || !self.reachable(r) || self.objects[o].loc != Loc::In(r) {
                return None;
            }
            self.objects[o].loc = Loc::Held;
            return Some(format!(
                "You pick up the {} from the {}.",
                self.objects[o].name, self.receptacles[r].name
            ));
        }
        if let Some(rest) = cmd.strip_prefix("put ") {
            let (o, r) = ["in/on", "in", "on"]
                .iter()
                .find_map(|p| rest.split_once(&format!(" {p} ")))?;
            let (o, r) = (self.object(o)?, self.receptacle(r)?);
            if self.objects[o].loc != Loc::Held || !self.reachable(r) {
                return None;
            }
            self.objects[o].loc = Loc::In(r);
            let rec = &self.receptacles[r];
            return Some(format!(
                "You put the {} {} the {}.",
                self.objects[o].name, rec.kind.preposition, rec.name
            ));
        }
        for t in [Treatment::Clean, Treatment::Heat, Treatment::Cool] {
            if let Some(rest) = cmd.strip_prefix(&format!("{} ", t.verb())) {
                let (o, r) = rest.split_once(" with ")?;
                let (o, r) = (self.object(o)?, self.receptacle(r)?);
                let obj = &self.objects[o];
                if obj.loc != Loc::Held
                    || self.at != Some(r)
                    || self.receptacles[r].kind.appliance != Some(t)
                    || !obj.kind.treatments.contains(&t)
                {
                    return None;
                }
                let obj = &mut self.objects[o];
                match t {
                    Treatment::Clean => obj.clean = true,
                    Treatment::Heat => (obj.hot, obj.cool) = (true, false),
                    Treatment::Cool => (obj.cool, obj.hot) = (true, false),
                }
                return Some(format!(
                    "You {} the {} using the {}.",
                    t.verb(),
                    self.objects[o].name,
                    self.receptacles[r].name
                ));
            }
        }
        if let Some(rest) = cmd.strip_prefix("use ") {
            let lamp = self.lamp.as_mut()?;
            if rest != LAMP || self.at != Some(lamp.at) || lamp.on {
                return None;
            }
            lamp.on = true;
            return Some(format!("You turn on the {LAMP}."));
        }
        if let Some(rest) = cmd.strip_prefix("examine ") {
            if let Some(r) = self.receptacle(rest) {
                return (self.at == Some(r)).then(|| self.describe(r));
            }
            let o = self.object(rest)?;
            let visible = match self.objects[o].loc {
                Loc::Held => true,
                Loc::In(r) => self.reachable(r),
            };
            return visible.then(|| format!("There's nothing special about {}.", rest));
        }
        None
    }

    /// The commands that change something or tell something in the current state.
    pub fn admissible(&self) -> Vec<String> {
        let mut out = vec!["look".to_owned(), "inventory".to_owned()];
        for (r, rec) in self.receptacles.iter().enumerate() {
            if self.at != Some(r) {
                out.push(format!("go to {}", rec.name));
            }
        }
        let held = self.held();
        if let Some(r) = self.at {
            let rec = &self.receptacles[r];
            out.push(format!("examine {}", rec.name));
            if rec.kind.openable {
                let verb = if rec.open { "close" } else { "open" };
                out.push(format!("{verb} {}", rec.name));
            }
            if rec.open {
                match held {
                    None => {
                        for o in self.objects.iter().filter(|o| o.loc == Loc::In(r)) {
                            out.push(format!("take {} from {}", o.name, rec.name));
                        }
                    }
                    Some(h) => out.push(format!(
                        "put {} {} {}",
                        self.objects[h].name, rec.kind.preposition, rec.name
                    )),
                }
            }
            if let (Some(h), Some(t)) = (held, rec.kind.appliance) {
                let obj = &self.objects[h];
                if obj.kind.treatments.contains(&t) {
                    out.push(format!("{} {} with {}", t.verb(), obj.name, rec.name));
                }
            }
            if self.lamp.as_ref().is_some_and(|l| l.at == r && !l.on) {
                out.push(format!("use {LAMP}"));
            }
        }
        if let Some(h) = held {
            out.push(format!("examine {}", self.objects[h].name));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_like_alfworld() {
        assert_eq!(list(&[]), "nothing");
        assert_eq!(list(&["apple 1"]), "a apple 1");
        assert_eq!(list(&["apple 1", "knife 2"]), "a apple 1, and a knife 2");
        assert_eq!(
            list(&["apple 1", "bread 1", "knife 2"]),
            "a apple 1, a bread 1, and a knife 2"
        );
    }
}
