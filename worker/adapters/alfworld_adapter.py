#!/usr/bin/env python3
"""hx's adapter for ALFWorld's text games (TextWorld), over hx's JSON-lines environment protocol
(documented in hx's worker/env/src/external.rs).

    {"op":"reset","task":"alfworld/test/17"}  -> observation, goal, step_limit 50, commands,
                                                 example, walkthrough, places, at, holding
    {"op":"step","command":"go to fridge 1"}   -> observation, done, won, places, at, holding
    {"op":"admissible"}                        -> {"commands":[...]}
    {"op":"close"}                             -> (exit)

Splits: train -> train (3,553 games), validation -> valid_seen (140), test -> valid_unseen
(134, the paper's evaluation set), heldout -> valid_train (unseen games drawn like train's). A
task's seed indexes the sorted list of its split's games, so alfworld/test/0..133 is exactly
ALFWorld's out-of-distribution evaluation.

Commands: these game files say `move X to Y` where ReAct's prompts (and most published agents)
say `put X in/on Y`. Both are accepted (also `put X in Y` and `put X on Y`); admissible
commands and observations show ReAct's form only. The `-= Welcome to TextWorld, ALFRED! =-`
banner is stripped, as ReAct does. No partial score is sent: ALFWorld's goals are existential
PDDL formulas, and no honest fraction of them is defined.

Data: the games are read from $ALFWORLD_DATA/json_2.1.1/<split>/**/game.tw-pddl
($ALFWORLD_DATA defaults to ~/.cache/alfworld, where `alfworld-download` puts them). Without
internet, `--unpack DIR` fills it from DIR/{train,valid_seen,valid_unseen,valid_train}.tgz after
checking DIR/SHA256SUMS, once.

Needs `pip install alfworld` (which brings textworld and fast-downward).
"""

import argparse
import glob
import hashlib
import json
import os
import re
import sys
import tarfile

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


def games(split):
    """The split's game files, sorted by path (the seed indexes this list)."""
    where = os.path.join(data_root(), SPLITS[split])
    found = sorted(glob.glob(os.path.join(where, "**", "game.tw-pddl"), recursive=True))
    if not found:
        raise ValueError(
            f"no ALFWorld games under {where}: run `alfworld-download`, or "
            f"`python3 alfworld_adapter.py --unpack DIR` with the .tgz files (ALFWORLD_DATA sets where)"
        )
    return found


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

        suite, split, seed = task.split("/")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; ALFWorld has {', '.join(SPLITS)}")
        files = games(split)
        seed = int(seed)
        if not 0 <= seed < len(files):
            raise ValueError(f"{task}: the {split} split has {len(files)} games (seeds 0..{len(files) - 1})")
        self.path = files[seed]
        with open(self.path) as f:
            self.walkthrough = [shown(c) for c in json.load(f).get("walkthrough", [])]
        infos = textworld.EnvInfos(won=True, admissible_commands=True, feedback=True)
        self.env = textworld.start(self.path, request_infos=infos,
                                   wrappers=[AlfredDemangler(), AlfredInfos])
        self.state = self.env.reset()
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
        reply = {"observation": text, "done": bool(done), "won": bool(self.state["won"]),
                 "invalid": text == "Nothing happens."}
        reply.update(self.view())
        return reply

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
