"""The synthetic multi-step arithmetic task of issue 13 (standard library only).

A problem is a start value and a chain of operations; its solution is one step per line and
ends with "The answer is N":

  Problem: Start with 7. Add 5. Multiply by 3. Add 12.
  Solution:
  7 + 5 = 12
  12 * 3 = 36
  36 + 12 = 48
  The answer is 48

The policy sees PROMPT (problem + "Solution:\\n") and writes the steps. The process reward model
(PRM) sees the same prompt and the steps, each followed by STEP_TAG and a newline, and scores a
step by its "+" / "-" logits at the tag. A step is good ("+") when it and every step before it
are right (Math-Shepherd's labels: after the first error every step is "-").
"""
import random
import re

STEP_TAG = "<|step|>"
MAX_VALUE = 999


def make_problem(rng, min_ops=2, max_ops=4):
    """{'start': int, 'ops': [('+'|'*', int)]}, every intermediate value <= MAX_VALUE."""
    while True:
        start = rng.randint(2, 30)
        ops, v = [], start
        for _ in range(rng.randint(min_ops, max_ops)):
            if rng.random() < 0.5:
                op = ("+", rng.randint(2, 50))
            else:
                op = ("*", rng.randint(2, 9))
            v = v + op[1] if op[0] == "+" else v * op[1]
            ops.append(op)
        if v <= MAX_VALUE:
            return {"start": start, "ops": ops}


def problem_text(p):
    words = [f"Start with {p['start']}."]
    for op, b in p["ops"]:
        words.append(f"Add {b}." if op == "+" else f"Multiply by {b}.")
    return " ".join(words)


def prompt(p):
    return f"Problem: {problem_text(p)}\nSolution:\n"


def answer(p):
    v = p["start"]
    for op, b in p["ops"]:
        v = v + b if op == "+" else v * b
    return v


def solution_steps(p):
    """The right steps, without newlines."""
    steps, v = [], p["start"]
    for op, b in p["ops"]:
        nv = v + b if op == "+" else v * b
        steps.append(f"{v} {op} {b} = {nv}")
        v = nv
    steps.append(f"The answer is {v}")
    return steps


def solution(p):
    return "".join(s + "\n" for s in solution_steps(p))


def corrupt_steps(p, rng):
    """A wrong solution and its labels: one step's result is off, later steps carry the error
    (computed right from the wrong value), or only the final line states a wrong answer."""
    n = len(p["ops"])
    bad = rng.randint(0, n)   # n: only the final line is wrong
    steps, labels, v, ok = [], [], p["start"], True
    for i, (op, b) in enumerate(p["ops"]):
        nv = v + b if op == "+" else v * b
        if i == bad:
            delta = rng.choice([-10, -2, -1, 1, 2, 10, rng.randint(-30, 30) or 3])
            nv = max(0, nv + delta)
            if nv == (v + b if op == "+" else v * b):
                nv += 1
            ok = False
        steps.append(f"{v} {op} {b} = {nv}")
        labels.append(ok)
        v = nv
    final = v
    if bad == n:
        final = v + rng.choice([-3, -1, 1, 2, 7])
        ok = False
    steps.append(f"The answer is {final}")
    labels.append(ok)
    return steps, labels


def split_problems(seed, n_train, n_dev, n_test):
    """Disjoint train / dev / test problem sets (no problem text in two sets)."""
    rng = random.Random(seed)
    seen, sets = set(), []
    for n in (n_test, n_dev, n_train):   # test first: its set never depends on n_train
        out = []
        while len(out) < n:
            p = make_problem(rng)
            key = problem_text(p)
            if key in seen:
                continue
            seen.add(key)
            out.append(p)
        sets.append(out)
    test, dev, train = sets
    return train, dev, test


_STEP = re.compile(r"^\s*(\d+) ([+*]) (\d+) = (\d+)\s*$")
_FINAL = re.compile(r"^\s*The answer is (-?\d+)\s*\.?\s*$")


def final_answer(text):
    """The N of the first 'The answer is N' line, or None."""
    for line in text.splitlines():
        m = _FINAL.match(line)
        if m:
            return int(m.group(1))
    return None


def is_correct(p, text):
    return final_answer(text) == answer(p)


def label_steps(p, lines):
    """Per line of a solution: True while it and every earlier line are right steps of p."""
    labels, v, ok, i = [], p["start"], True, 0
    for line in lines:
        m, f = _STEP.match(line), _FINAL.match(line)
        if ok and m and i < len(p["ops"]):
            a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
            want_op, want_b = p["ops"][i]
            ok = (a == v and op == want_op and b == want_b and
                  c == (a + b if op == "+" else a * b))
            v, i = c, i + 1
        elif ok and f:
            ok = i == len(p["ops"]) and int(f.group(1)) == v
        else:
            ok = False
        labels.append(ok)
    return labels
