#!/usr/bin/env python3
"""A small hx environment adapter: the JSON-lines protocol over stdin/stdout.

Copy this file to wrap a real simulator (ALFWorld, WebShop, ScienceWorld): keep `main`,
replace `Vault` with a class that drives your simulator. The protocol is documented in
hx's worker/env/src/external.rs:

    {"op":"reset","task":"vault/train/3"}  -> {"observation":..., "goal":..., "step_limit":30,
                                               "commands":"go east, ...", "example":"go east",
                                               "walkthrough":[...]}
    {"op":"step","command":"go east"}       -> {"observation":..., "done":..., "won":..., "score":...}
    (reset and step replies may add the view: "places", "at", "holding", "state")
    {"op":"admissible"}                     -> {"commands":[...]}
    {"op":"exemplars","task":"vault/test/3","count":1,"same_type":true}
                                            -> {"tasks":["vault/train/..."]} (train tasks whose
                                               walkthroughs make worked examples; optional)
    {"op":"close"}                          -> (exit)
    any failure                             -> {"error":"why"}

The world: a row of rooms; a key lies in one, the vault door is in another, locked. Take the
key, go to the vault, unlock it, open it. Generated from the task's seed; the split picks the
size (test vaults are longer than any in train).

The --crash-at-step, --garbage-at-step, --hang-at-step, --reject-seed and --exemplars-from flags make
the adapter misbehave on purpose; hx's tests use them to check that a faulty adapter is an error, not a hang or a panic.
"""

import argparse
import json
import random
import sys
import time

# The command forms, for the agent's prompt (hx fills {commands} in harness texts with this).
COMMANDS = "go east, go west, take key, unlock vault with key, open vault, look, inventory"


class Vault:
    def __init__(self, task):
        suite, split, seed = task.split("/")
        if split not in ("train", "validation", "test"):
            raise ValueError(f"unknown split {split!r}")
        rng = random.Random(f"{split}/{int(seed)}")
        self.rooms = rng.randint(6, 8) if split == "test" else rng.randint(3, 5)
        self.at = rng.randrange(self.rooms)
        self.key = rng.randrange(self.rooms)
        self.vault = rng.choice([r for r in range(self.rooms) if r != self.key])
        self.holding = False
        self.unlocked = False
        self.opened = False

    def view(self):
        """The optional view fields: rooms are the places, the key is what can be held, the
        state is what `look` would say."""
        return {
            "places": [f"room {r + 1}" for r in range(self.rooms)],
            "at": f"room {self.at + 1}",
            "holding": ["key"] if self.holding else [],
            "state": self.describe(),
        }

    def describe(self):
        things = []
        if self.key == self.at and not self.holding:
            things.append("a key")
        if self.vault == self.at:
            things.append("the vault door, " + ("open" if self.opened else "unlocked" if self.unlocked else "locked"))
        seen = ", ".join(things) if things else "nothing"
        return f"You are in room {self.at + 1} of {self.rooms}. You see {seen}."

    def admissible(self):
        out = ["look", "inventory"]
        if self.at > 0:
            out.append("go west")
        if self.at < self.rooms - 1:
            out.append("go east")
        if self.key == self.at and not self.holding:
            out.append("take key")
        if self.vault == self.at and self.holding and not self.unlocked:
            out.append("unlock vault with key")
        if self.vault == self.at and self.unlocked and not self.opened:
            out.append("open vault")
        return out

    def step(self, command):
        c = " ".join(command.lower().split())
        if c not in self.admissible():
            return "Nothing happens."
        if c == "look":
            return self.describe()
        if c == "inventory":
            return "You carry a key." if self.holding else "You carry nothing."
        if c == "go west":
            self.at -= 1
            return self.describe()
        if c == "go east":
            self.at += 1
            return self.describe()
        if c == "take key":
            self.holding = True
            return "You take the key."
        if c == "unlock vault with key":
            self.unlocked = True
            return "The lock clicks."
        self.opened = True
        return "The vault swings open."

    def walkthrough(self):
        """The shortest solution from the start: walk to the key, take it, walk to the vault,
        unlock, open."""
        def walk(a, b):
            return ["go east" if b > a else "go west"] * abs(b - a)
        return walk(self.at, self.key) + ["take key"] + walk(self.key, self.vault) + [
            "unlock vault with key", "open vault"]

    def score(self):
        return (self.holding + self.unlocked + self.opened) / 3


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crash-at-step", type=int, help="exit with status 3 at this step")
    ap.add_argument("--garbage-at-step", type=int, help="answer this step with a line that is not JSON")
    ap.add_argument("--hang-at-step", type=int, help="never answer this step")
    ap.add_argument("--reject-seed", type=int, help="answer a reset to this seed with an error")
    ap.add_argument("--exemplars-from", default="train",
                    help="name worked examples from this split (anything but train is a fault)")
    args = ap.parse_args()

    world, steps = None, 0
    for line in sys.stdin:
        try:
            req = json.loads(line)
            op = req["op"]
        except (ValueError, KeyError, TypeError) as e:
            reply({"error": f"bad request: {e}"})
            continue
        if op == "close":
            return
        try:
            if op == "reset":
                if req["task"].endswith(f"/{args.reject_seed}"):
                    raise ValueError("this adapter cannot make that task")
                world, steps = Vault(req["task"]), 0
                reply({"observation": world.describe(), "goal": "open the vault.", "step_limit": 30,
                       "commands": COMMANDS, "example": "go east", "walkthrough": world.walkthrough(),
                       **world.view()})
            elif op == "exemplars":
                # One kind of task here, so same_type changes nothing; the same ones every time.
                seed = int(req["task"].rsplit("/", 1)[1])
                reply({"tasks": [f"vault/{args.exemplars_from}/{(seed * 7 + k) % 100}"
                                 for k in range(int(req.get("count", 1)))]})
            elif world is None:
                reply({"error": f"{op} before reset"})
            elif op == "step":
                steps += 1
                if steps == args.crash_at_step:
                    print("vault: simulated crash", file=sys.stderr, flush=True)
                    sys.exit(3)
                if steps == args.garbage_at_step:
                    sys.stdout.write("Traceback (most recent call last): <garbage>\n")
                    sys.stdout.flush()
                    continue
                if steps == args.hang_at_step:
                    time.sleep(3600)
                obs = world.step(req["command"])
                reply({"observation": obs, "done": world.opened, "won": world.opened, "score": world.score(),
                       "invalid": obs == "Nothing happens.", **world.view()})
            elif op == "admissible":
                reply({"commands": world.admissible()})
            else:
                reply({"error": f"unknown op {op!r}"})
        except (ValueError, KeyError) as e:
            reply({"error": f"{op}: {e}"})


if __name__ == "__main__":
    main()
