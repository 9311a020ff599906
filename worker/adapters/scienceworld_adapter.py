#!/usr/bin/env python3
"""hx's adapter for ScienceWorld (30 science tasks in a text world), over hx's JSON-lines
environment protocol (documented in hx's worker/env/src/external.rs).

    {"op":"reset","task":"scienceworld/test/17"}  -> observation, goal, commands, example,
                                                     walkthrough, places, at, holding, state
    {"op":"step","command":"open door to kitchen"} -> observation, done, won, score, places, at,
                                                     holding, state
    {"op":"admissible"}                           -> {"commands":[...]}
    {"op":"exemplars",...}                        -> {"tasks":[]}
    {"op":"close"}                                -> (exit)

Splits: ScienceWorld's own variation splits: train -> train (3,592 variations), validation ->
dev (1,796), test -> test (1,819). There is no heldout split. A task's seed indexes the split's
variations taken round-robin over the 30 task types (sorted by name): seed 0 is the first
variation of the first task type, seed 29 the first of the last, seed 30 the second of the
first, and so on, skipping task types whose variations have run out. So `scienceworld/test/0..29`
is one variation of every task type and any prefix of seeds is spread over them.

Score: ScienceWorld's score / 100 on every step (a failed task's negative score counts as 0);
won exactly when the task is completed with score 100. Admissible commands are ScienceWorld's
`get_valid_action_object_combinations()`, unchanged (often several hundred), asked once per
state (ScienceWorld words a third of them differently on each call). The reset reply
carries the variation's gold path as the walkthrough, which `hx tasks check` replays. No step
limit is sent: hx's configured limit applies (the shipped default is 100 steps).

Worked examples: none (the `exemplars` op names no tasks). A gold path runs 3-95 commands of
room-long observations, several thousand tokens, more than a small model's prompt can spare for
an example.

The variation lists are computed once (loading all 30 task types takes about 10 s) and kept in
$XDG_CACHE_HOME/hx/scienceworld-<version>-variations.json.

Needs `pip install scienceworld` (the wheel carries its JAR) and a Java runtime (Debian:
`apt-get install default-jre-headless`). Each adapter process runs one JVM.
"""

import sys

# Run as `python3 -c SCRIPT` (as hx runs it), Python searches the working directory first: a
# file there named like a standard module (inspect.py, json.py) would be imported in its place.
if sys.path[:1] == [""]:
    del sys.path[0]

import json
import os
import re

SPLITS = {"train": "train", "validation": "dev", "test": "test"}
ROOM = re.compile(r"^This room is called the (.+?)\.", re.M)
DOOR = re.compile(r"door to the (.+?) \(", re.M)
INVENTORY_HEADER = "In your inventory, you see:"


def cache_path(version):
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "hx", f"scienceworld-{version}-variations.json")


def variation_lists(env, version):
    """{split: [[task, variation], ...]} in seed order, computed once and cached."""
    path = cache_path(version)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        pass
    per_task = {}
    for name in sorted(env.get_task_names()):
        env.load(name, 0, "")
        per_task[name] = {
            "train": list(env.get_variations_train()),
            "dev": list(env.get_variations_dev()),
            "test": list(env.get_variations_test()),
        }
    lists = {}
    for split in SPLITS.values():
        order, r = [], 0
        while True:
            row = [[n, v[split][r]] for n, v in per_task.items() if r < len(v[split])]
            if not row:
                break
            order.extend(row)
            r += 1
        lists[split] = order
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(lists, f)
    os.replace(tmp, path)
    return lists


def unique(items):
    seen, out = set(), []
    for c in items:
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


class World:
    def __init__(self):
        try:
            import scienceworld
            from scienceworld import ScienceWorldEnv
        except ImportError as e:
            raise RuntimeError(f"ScienceWorld is not installed ({e}): python3 -m pip install scienceworld") from e
        try:
            # hx counts steps itself; ScienceWorld's own limit is set out of the way.
            self.env = ScienceWorldEnv("", envStepLimit=1_000_000)
        except Exception as e:
            raise RuntimeError(
                f"ScienceWorld's Java server did not start ({type(e).__name__}: {e}): it needs a Java "
                "runtime (Debian: apt-get install default-jre-headless)"
            ) from e
        version = getattr(scienceworld, "__version__", "unknown")
        self.lists = variation_lists(self.env, version)
        self.started = False
        self.commands = None

    def view(self, look, inventory):
        """The world's view for hx: rooms seen, the room the agent is in, what it carries, and
        the state as ScienceWorld's own `look around` tells it (an observation often only says
        what the latest command did)."""
        at = ROOM.search(look)
        if at:
            self.at = at.group(1)
        for room in ([self.at] if self.at else []) + DOOR.findall(look):
            if room not in self.places:
                self.places.append(room)
        holding = []
        for line in inventory.splitlines():
            line = line.strip()
            if line and not line.startswith(INVENTORY_HEADER):
                holding.append(line.split(",")[0])
        return {"places": list(self.places), "at": self.at, "holding": holding, "state": look.strip()}

    def reset(self, task):
        suite, split, seed = task.split("/")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; ScienceWorld has {', '.join(SPLITS)}")
        order = self.lists[SPLITS[split]]
        seed = int(seed)
        if not 0 <= seed < len(order):
            raise ValueError(f"{task}: the {split} split has {len(order)} variations (seeds 0..{len(order) - 1})")
        name, variation = order[seed]
        self.env.load(name, variation, "", generateGoldPath=True)
        observation, info = self.env.reset()
        self.started = True
        self.commands = None
        self.places, self.at = [], None
        admissible = self.admissible()
        reply = {
            "observation": observation.strip(),
            "goal": self.env.get_task_description().strip(),
            "commands": ", ".join(self.env.get_possible_actions()),
            "example": next((c for c in admissible if c.startswith("open door")), "look around"),
            "walkthrough": list(self.env.get_gold_action_sequence()),
        }
        reply.update(self.view(info["look"], info["inv"]))
        return reply

    def step(self, command):
        observation, _, done, info = self.env.step(command)
        self.commands = None
        score = info["score"]
        reply = {
            "observation": observation.strip(),
            "done": bool(done),
            "won": bool(done and score >= 100),
            "score": max(0, min(score, 100)) / 100,
            "invalid": observation.strip() == "No known action matches that input.",
        }
        reply.update(self.view(info["look"], info["inv"]))
        return reply

    def admissible(self):
        # ScienceWorld names objects afresh on every call: the same state lists "cup containing
        # red paint" once and "paint in wood cup" the next, a fifth to a third of the commands
        # differing. So the list is computed once per state, and every reader of one step (the
        # scorer's candidates, an admissibility check) sees the same commands.
        if self.commands is None:
            self.commands = unique(self.env.get_valid_action_object_combinations())
        return self.commands

    def close(self):
        self.env.close()


def serve():
    # Replies go to the real stdout; anything else that writes to fd 1 (the JVM, py4j) lands
    # on stderr, where hx keeps it for error messages.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    world = None
    for line in sys.stdin:
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "close":
                break
            if op == "exemplars":
                out.write(json.dumps({"tasks": []}) + "\n")
                out.flush()
                continue
            if op not in ("reset", "step", "admissible"):
                raise ValueError(f"unknown op {op!r}")
            if world is None:
                world = World()
            if op == "reset":
                reply = world.reset(req["task"])
            elif not world.started:
                raise ValueError(f"{op} before reset")
            elif op == "step":
                reply = world.step(req["command"])
            else:
                reply = {"commands": world.admissible()}
        except Exception as e:  # every failure is the protocol's error reply
            reply = {"error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    if world is not None:
        world.close()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    serve()
