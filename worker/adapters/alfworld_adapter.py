#!/usr/bin/env python3
"""hx's adapter for ALFWorld's text games (TextWorld), over hx's JSON-lines environment protocol
(documented in hx's worker/env/src/external.rs).

    {"op":"reset","task":"alfworld/test/17"}  -> observation, goal, step_limit 50, commands,
                                                 example, walkthrough, places, at, holding
    {"op":"step","command":"go to fridge 1"}   -> observation, done, won, places, at, holding
    {"op":"admissible"}                        -> {"commands":[...]}
    {"op":"exemplars","task":"alfworld/test/17","count":2,"same_type":true}
                                               -> {"tasks":["alfworld/train/...", ...]}
    {"op":"close"}                             -> (exit)

Splits: train -> train (3,553 games), validation -> valid_seen (140), test -> valid_unseen
(134, the paper's evaluation set), heldout -> valid_train (unseen games drawn like train's). A
task's seed indexes its split's games dealt round-robin over the six task types (each type's
games sorted by path, the types by name): seed 0 is the first game of the first type, seed 5
the first of the last, seed 6 the second of the first, and so on while a type has games left.
So alfworld/test/0..133 is exactly ALFWorld's out-of-distribution evaluation, and any prefix of
seeds, which is what a search's rungs and a final stage play, is spread over the task types
(games sorted by path come grouped by type: the first 18 of valid_unseen are all lamp tasks).

Commands: these game files say `move X to Y` where ReAct's prompts (and most published agents)
say `put X in/on Y`. Both are accepted (also `put X in Y` and `put X on Y`); admissible
commands and observations show ReAct's form only. The `-= Welcome to TextWorld, ALFRED! =-`
banner is stripped, as ReAct does.

Score: each step sends the share of the goal's conditions the agent has brought about, ALFRED's
goal-condition measure read off the game's PDDL goal. A goal is existential ("some apple is hot
and in some fridge"); its conditions that no action changes (what a thing is, what it can do)
only say which things may stand for its variables, and the rest are counted: the score is the
most of them that one choice of things meets now, less those met at the start, over those not
met at the start (0 at the start, never below 0, 1 exactly when the game is won). Clean, heat
and cool goals score 1/2 once the object is treated, pick-two goals 1/2 with one placed, lamp
goals a third for each of object held, lamp on, agent at the lamp (the lamp already stands in
its place); a plain pick-and-place scores only when won. A goal this count cannot read (none
in ALFWorld's release) sends no score.

Data: the games are read from $ALFWORLD_DATA/json_2.1.1/<split>/**/game.tw-pddl
($ALFWORLD_DATA defaults to ~/.cache/alfworld, where `alfworld-download` puts them). Without
internet, `--unpack DIR` fills it from DIR/{train,valid_seen,valid_unseen,valid_train}.tgz after
checking DIR/SHA256SUMS, once.

Needs `pip install alfworld` (which brings textworld and fast-downward).
"""

import sys

# Run as `python3 -c SCRIPT` (as hx runs it), Python searches the working directory first: a
# file there named like a standard module (inspect.py, json.py) would be imported in its place.
if sys.path[:1] == [""]:
    del sys.path[0]

import argparse
import functools
import glob
import hashlib
import json
import os
import re
import tarfile
import zlib

SPLITS = {
    "train": "train",
    "validation": "valid_seen",
    "test": "valid_unseen",
    "heldout": "valid_train",
}
STEP_LIMIT = 50
BANNER = "-= Welcome to TextWorld, ALFRED! =-"
COMMANDS = (
    "go to X, open X, close X, take X from Y, put X in/on Y, clean X with Y, heat X with Y, "
    "cool X with Y, use X, examine X, inventory, look"
)
MOVE = re.compile(r"^move (.+) to (.+)$")
PUT = re.compile(r"^put (.+?) (?:in/on|in|on) (.+)$")
MOVED = re.compile(r"^You move the (.+) to the (.+)\.$", re.M)
ARRIVE = re.compile(r"^You arrive at (.+?)\.", re.M)
PICK = re.compile(r"^You pick up the (.+) from the (.+)\.$", re.M)
PUT_DONE = re.compile(r"^You put the (.+) in/on the (.+)\.$", re.M)


# Predicates that no action changes in ALFWorld's domain (what a thing is, what it can do,
# where a receptacle stands): in a goal they say which things may stand for its variables;
# only the rest are conditions an agent can bring about.
STATIC = {
    "objecttype", "receptacletype", "pickupable", "openable", "toggleable", "sliceable",
    "cleanable", "heatable", "coolable", "cancontain", "isreceptacleobject",
    "receptacleatlocation", "objectatlocation",
}


def parse_sexp(text):
    """The first s-expression in `text` as nested lists of lower-cased atoms."""
    tokens = re.findall(r"\(|\)|[^\s()]+", text)
    stack = [[]]
    for t in tokens:
        if t == "(":
            stack.append([])
        elif t == ")":
            if len(stack) == 1:
                raise ValueError("unbalanced ')' in the goal")
            done = stack.pop()
            stack[-1].append(done)
            if len(stack) == 1:
                return done
        else:
            stack[-1].append(t.lower())
    raise ValueError("unterminated goal")


def goal_formula(problem):
    i = problem.find(":goal")
    if i < 0:
        raise ValueError("the problem has no :goal")
    return parse_sexp(problem[i + len(":goal"):])


def typed_vars(decl):
    """`(?o - object ?r - receptacle)` or `(?o ?p - object)` as [(var, type)]."""
    out, pending, i = [], [], 0
    while i < len(decl):
        t = decl[i]
        if t == "-":
            out += [(v, decl[i + 1]) for v in pending]
            pending, i = [], i + 2
        else:
            pending.append(t)
            i += 1
    return out + [(v, "object") for v in pending]


class Goal:
    """A goal's conditions counted against a state: the most of its changeable conditions that
    one choice of things for its variables meets, out of how many it has. ALFRED's
    goal-condition success, read off the PDDL goal rather than a table per task type."""

    def __init__(self, problem):
        self.formula = goal_formula(problem)
        self.total = self._count(self.formula)
        if self.total == 0:
            raise ValueError("the goal has no changeable condition")

    def _count(self, f):
        head = f[0]
        if head == "and":
            return sum(self._count(c) for c in f[1:])
        if head == "exists":
            return self._count(f[2])
        if head == "not":
            return self._count(f[1]) if f[1][0] != "=" else 0
        if head in ("or", "forall", "imply", "when"):
            raise ValueError(f"goal uses `{head}`, which this count does not cover")
        return 0 if head in STATIC or head == "=" else 1

    def met(self, facts):
        """The most changeable conditions one binding meets (None: no binding fits)."""
        true = set()
        things = {}
        for p in facts:
            args = tuple(v.name for v in p.arguments)
            true.add((p.name,) + args)
            for v in p.arguments:
                things.setdefault(v.type, set()).add(v.name)
        things = {t: sorted(n) for t, n in things.items()}
        return self._best(self.formula, {}, true, things)

    def _atom(self, f, env):
        return tuple([f[0]] + [env.get(a, a) for a in f[1:]])

    def _best(self, f, env, true, things):
        head = f[0]
        if head == "and":
            total = 0
            # constraints first, so a binding that cannot fit is dropped early
            for c in sorted(f[1:], key=lambda c: c[0] != "exists"):
                v = self._best(c, env, true, things)
                if v is None:
                    return None
                total += v
            return total
        if head == "exists":
            return self._exists(typed_vars(f[1]), f[2], env, true, things)
        if head == "not":
            inner = f[1]
            if inner[0] == "=":
                a, b = (env.get(x, x) for x in inner[1:3])
                return None if a == b else 0
            held = self._atom(inner, env) in true
            if inner[0] in STATIC:
                return None if held else 0
            return 0 if held else 1
        if head == "=":
            a, b = (env.get(x, x) for x in f[1:3])
            return 0 if a == b else None
        held = self._atom(f, env) in true
        if head in STATIC:
            return 0 if held else None
        return 1 if held else 0

    def _exists(self, decls, body, env, true, things):
        if not decls:
            return self._best(body, env, true, things)
        (var, kind), rest = decls[0], decls[1:]
        best = None
        statics = [c for c in (body[1:] if body[0] == "and" else [body])
                   if c[0] in STATIC]
        for name in things.get(kind, []):
            env2 = dict(env)
            env2[var] = name
            # a static condition whose variables are all bound must hold already
            if any(all((a in env2) or not a.startswith("?") for a in c[1:])
                   and self._atom(c, env2) not in true for c in statics):
                continue
            v = self._exists(rest, body, env2, true, things)
            if v is not None and (best is None or v > best):
                best = v
                if best == self.total:
                    break
        return best


def data_root():
    base = os.environ.get("ALFWORLD_DATA") or os.path.expanduser("~/.cache/alfworld")
    return os.path.join(base, "json_2.1.1")


def unpack(src):
    """Extracts DIR/<split>.tgz into $ALFWORLD_DATA/json_2.1.1 after checking SHA256SUMS; a
    split already there (its marker file present) is left alone."""
    root = data_root()
    os.makedirs(root, exist_ok=True)
    sums = {}
    with open(os.path.join(src, "SHA256SUMS")) as f:
        for line in f:
            if line.strip():
                digest, name = line.split()
                sums[name.lstrip("*")] = digest
    for split in SPLITS.values():
        marker = os.path.join(root, f".{split}.unpacked")
        if os.path.exists(marker):
            continue
        name = f"{split}.tgz"
        path = os.path.join(src, name)
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if sums.get(name) != h.hexdigest():
            raise SystemExit(f"{path}: SHA-256 {h.hexdigest()} does not match SHA256SUMS")
        with tarfile.open(path) as t:
            t.extractall(root, filter="data")
        open(marker, "w").close()
        print(f"unpacked {name} into {root}", file=sys.stderr)


@functools.lru_cache(maxsize=None)
def games(split):
    """The split's game files in seed order: dealt round-robin over the task types."""
    where = os.path.join(data_root(), SPLITS[split])
    found = sorted(glob.glob(os.path.join(where, "**", "game.tw-pddl"), recursive=True))
    if not found:
        raise ValueError(
            f"no ALFWorld games under {where}: run `alfworld-download`, or "
            f"`python3 alfworld_adapter.py --unpack DIR` with the .tgz files (ALFWORLD_DATA sets where)"
        )
    by_type = {}
    for path in found:
        # .../<split>/<type>-<object>-...-<scene>/<trial>/game.tw-pddl
        by_type.setdefault(task_type(path, split), []).append(path)
    lists = [by_type[k] for k in sorted(by_type)]
    order = []
    for r in range(max(len(g) for g in lists)):
        order += [g[r] for g in lists if r < len(g)]
    return order


def task_type(path, split):
    """A game's task type, the first part of its directory name (`pick_heat_then_place_in_recep`)."""
    where = os.path.join(data_root(), SPLITS[split])
    return os.path.relpath(path, where).split(os.sep)[0].split("-")[0]


def game(task):
    """A task name's suite, split, seed and game file, or a ValueError saying what is wrong."""
    suite, split, seed = task.split("/")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; ALFWorld has {', '.join(SPLITS)}")
    files = games(split)
    seed = int(seed)
    if not 0 <= seed < len(files):
        raise ValueError(f"{task}: the {split} split has {len(files)} games (seeds 0..{len(files) - 1})")
    return suite, split, seed, files[seed]


def exemplars(task, count, same_type):
    """Up to `count` train tasks whose walkthroughs make worked examples for `task`: games of
    its task type where `same_type`, the same ones every time (picked by a hash of the task's
    name), never the task itself. Train games only, whatever the task's split."""
    suite, split, seed, path = game(task)
    kind = task_type(path, split)
    train = games("train")
    pool = [i for i, p in enumerate(train)
            if (not same_type or task_type(p, "train") == kind) and not (split == "train" and i == seed)]
    if not pool:
        return []
    start = zlib.crc32(task.encode()) % len(pool)
    picked = [pool[(start + k * 7919) % len(pool)] for k in range(min(count, len(pool)))]
    return [f"{suite}/train/{i}" for i in dict.fromkeys(picked)]


def shown(command):
    """ReAct's form of a command: `move X to Y` is shown as `put X in/on Y`."""
    m = MOVE.match(command)
    return f"put {m.group(1)} in/on {m.group(2)}" if m else command


def game_form(command):
    """The game's form of a command: `put X in/on Y` (or `in`, `on`) becomes `move X to Y`."""
    m = PUT.match(command.strip())
    return f"move {m.group(1)} to {m.group(2)}" if m else command.strip()


def observed(text):
    """An observation as shown: no banner, ReAct's verb for moving things."""
    text = text.replace(BANNER, "").strip()
    return MOVED.sub(r"You put the \1 in/on the \2.", text)


class Game:
    def __init__(self, task):
        try:
            import textworld
            from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos
        except ImportError as e:
            raise RuntimeError(
                f"ALFWorld is not installed ({e}): python3 -m pip install alfworld"
            ) from e

        self.path = game(task)[3]
        with open(self.path) as f:
            data = json.load(f)
        self.walkthrough = [shown(c) for c in data.get("walkthrough", [])]
        try:
            self.goal = Goal(data["pddl_problem"])
        except (KeyError, ValueError) as e:
            print(f"{self.path}: no score for this game: {e}", file=sys.stderr)
            self.goal = None
        infos = textworld.EnvInfos(won=True, admissible_commands=True, feedback=True)
        self.env = textworld.start(self.path, request_infos=infos,
                                   wrappers=[AlfredDemangler(), AlfredInfos])
        self.state = self.env.reset()
        self.met_at_start = self.goal.met(self.state["_facts"]) if self.goal else None
        self.at = None
        self.holding = []
        self.places = []

    def view(self):
        """The world's view for hx: receptacles the agent can go to, where it is, what it holds."""
        go = [c[len("go to "):] for c in self.state["admissible_commands"] if c.startswith("go to ")]
        for p in go:
            if p not in self.places:
                self.places.append(p)
        return {"places": list(self.places), "at": self.at, "holding": list(self.holding)}

    def follow(self, text):
        """Tracks position and inventory from the game's own answers."""
        if m := ARRIVE.search(text):
            self.at = m.group(1)
        if m := PICK.search(text):
            self.holding = [m.group(1)]
        if PUT_DONE.search(text):
            self.holding = []

    def reset_reply(self):
        text = observed(self.state["feedback"])
        goal = text.split("Your task is to: ", 1)[1].strip().rstrip(".") if "Your task is to: " in text else ""
        admissible = self.admissible()
        example = next((c for c in admissible if c.startswith("go to ")), admissible[0] if admissible else "look")
        reply = {
            "observation": text,
            "goal": goal,
            "step_limit": STEP_LIMIT,
            "commands": COMMANDS,
            "example": example,
            "walkthrough": self.walkthrough,
        }
        reply.update(self.view())
        return reply

    def step(self, command):
        self.state, _, done = self.env.step(game_form(command))
        text = observed(self.state["feedback"])
        self.follow(text)
        won = bool(self.state["won"])
        reply = {"observation": text, "done": bool(done), "won": won,
                 "invalid": text == "Nothing happens."}
        if (score := self.score(won)) is not None:
            reply["score"] = score
        reply.update(self.view())
        return reply

    def score(self, won):
        """The share of the goal's conditions not met at the start that are met now."""
        if self.goal is None or self.met_at_start is None:
            return None
        if won:
            return 1.0
        room = self.goal.total - self.met_at_start
        if room <= 0:
            return None
        met = self.goal.met(self.state["_facts"]) or 0
        gained = max(0, met - self.met_at_start)
        # Not won means some condition is unmet, whatever the count says.
        return min(gained, room - 1) / room

    def admissible(self):
        # `help` only lists the command forms ({commands} already gives them); not an action.
        return [shown(c) for c in self.state["admissible_commands"] if c != "help"]

    def close(self):
        self.env.close()


def serve():
    # Replies go to the real stdout; anything else that writes to fd 1 (TextWorld's planner
    # prints) lands on stderr, where hx keeps it for error messages.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    game = None
    for line in sys.stdin:
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "reset":
                if game is not None:
                    game.close()
                    game = None
                game = Game(req["task"])
                reply = game.reset_reply()
            elif op == "step":
                if game is None:
                    raise ValueError("step before reset")
                reply = game.step(req["command"])
            elif op == "admissible":
                if game is None:
                    raise ValueError("admissible before reset")
                reply = {"commands": game.admissible()}
            elif op == "exemplars":
                reply = {"tasks": exemplars(req["task"], int(req.get("count", 1)),
                                            bool(req.get("same_type", False)))}
            elif op == "close":
                break
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as e:  # every failure is the protocol's error reply
            reply = {"error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    if game is not None:
        game.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--unpack", metavar="DIR",
                    help="fill $ALFWORLD_DATA from DIR's .tgz files (checked against SHA256SUMS) and exit")
    a = ap.parse_args()
    if a.unpack:
        unpack(a.unpack)
        return
    serve()


if __name__ == "__main__":
    main()
