#!/usr/bin/env python3
"""CPU checks of the pure-Python parts of tools/train (no torch, no packages needed): the corpus
splitter and parsers, the arithmetic task's generator and verifier, and train_all.py's planning
helpers (plan.py). Prints the
"arbor-tests: N passed, N failed, 0 skipped" line tools/test_summary.sh sums.

  python3 tools/train/selftest.py
"""
import os
import random
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arith  # noqa: E402
import corpus  # noqa: E402
import plan  # noqa: E402

passed = failed = 0


def check(name, ok):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print("FAILED:", name)


# ---- corpus: splitting by document
docs = [{"title": str(i), "text": f"document number {i} " * 3} for i in range(3000)]
splits = corpus.split_docs("src", docs + docs[:100])   # 100 exact duplicates
n = {s: len(v) for s, v in splits.items()}
check("every distinct document lands in exactly one split", sum(n.values()) == 3000)
check("about 90/5/5", 2550 < n["train"] < 2850 and 80 < n["validation"] < 220 and 80 < n["test"] < 220)
texts = {s: {d["text"] for d in v} for s, v in splits.items()}
check("splits are disjoint", not (texts["train"] & texts["validation"]) and
      not (texts["train"] & texts["test"]) and not (texts["validation"] & texts["test"]))
check("a document's split does not depend on the others",
      all(corpus.split_of("src", d["text"]) == s for s, v in splits.items() for d in v) and
      corpus.split_docs("src", list(reversed(docs)))["test"][0]["text"] in texts["test"])
check("the split depends on the source", any(corpus.split_of("a", d["text"]) != corpus.split_of("b", d["text"])
                                              for d in docs[:200]))
check("subsampling keeps about the fraction",
      250 < sum(corpus.keep_fraction(str(i), 0.1) for i in range(3000)) < 350)

# ---- corpus: parsers on small samples of each format
bible = "\nGenesis 1\n\n  1 In the beginning God created.\n  2 And the earth was void.\n\nExodus 2\n\n  1 And there went a man.\n"
kjv = corpus.kjv_docs(bible)
check("kjv: a chapter a document, a verse a line, no numbers",
      kjv == [{"title": "Genesis 1", "text": "In the beginning God created.\nAnd the earth was void."},
              {"title": "Exodus 2", "text": "And there went a man."}])
f = corpus.parse_fortunes("A stitch in time.\n%\nTwo lines\n\tindented.\n%\n%\nLast one.\n")
check("fortunes: entries split on %, empty ones dropped", f == ["A stitch in time.", "Two lines\n    indented.", "Last one."])
g = corpus.clean_gcide('Abdication \\Ab`di*ca"tion\\, n. [L. abdicatio.]\n   The act of abdicating;\n   a renunciation. --Bailey.\n   [1913 Webster]\n')
check("gcide: pronunciation, citations and source tags removed", g == "Abdication, n. [L. abdicatio.] The act of abdicating; a renunciation.")
check("dictd base64 numbers", corpus.dictd_number("Kj") == 10 * 64 + 35 and corpus.dictd_number("A") == 0)
check("unwrap joins paragraphs", corpus.unwrap(["a b", " c", "", "d"]) == ["a b c", "d"])

# ---- the pack is deterministic and holds every split
with tempfile.TemporaryDirectory() as tmp:
    srcs = {"kjv": corpus.split_docs("kjv", kjv * 1), "devil": splits}
    corpus.write_pack(os.path.join(tmp, "a.tar.xz"), srcs)
    corpus.write_pack(os.path.join(tmp, "b.tar.xz"), srcs)
    a, b = (open(os.path.join(tmp, x), "rb").read() for x in ("a.tar.xz", "b.tar.xz"))
    check("pack is byte-identical across runs", a == b)
    names = tarfile.open(os.path.join(tmp, "a.tar.xz")).getnames()
    check("pack has manifest and split files", "corpus/manifest.json" in names and
          "corpus/validation/devil.jsonl" in names and "corpus/test/kjv.jsonl" in names)

# ---- arithmetic task
rng = random.Random(0)
probs = [arith.make_problem(rng) for _ in range(2000)]
check("values stay <= MAX_VALUE", all(arith.answer(p) <= arith.MAX_VALUE for p in probs))
check("2..4 operations", all(2 <= len(p["ops"]) <= 4 for p in probs))
p = {"start": 7, "ops": [("+", 5), ("*", 3), ("+", 12)]}
check("prompt text", arith.prompt(p) == "Problem: Start with 7. Add 5. Multiply by 3. Add 12.\nSolution:\n")
check("solution text", arith.solution(p) == "7 + 5 = 12\n12 * 3 = 36\n36 + 12 = 48\nThe answer is 48\n")
check("right solutions verify", all(arith.is_correct(q, arith.solution(q)) for q in probs))
check("right solutions label all +",
      all(all(arith.label_steps(q, arith.solution_steps(q))) for q in probs))
check("wrong answer is wrong", not arith.is_correct(p, "7 + 5 = 12\nThe answer is 47\n"))
check("no answer line is wrong", arith.final_answer("7 + 5 = 12\n") is None)
check("labels after an error are -",
      arith.label_steps(p, ["7 + 5 = 13", "13 * 3 = 39", "39 + 12 = 51", "The answer is 51"]) == [False] * 4)
check("labels up to an error are +",
      arith.label_steps(p, ["7 + 5 = 12", "12 * 3 = 35", "35 + 12 = 47", "The answer is 47"]) == [True, False, False, False])
check("a skipped operation is -",
      arith.label_steps(p, ["7 + 5 = 12", "12 + 12 = 24", "The answer is 24"]) == [True, False, False])
check("an early answer is -", arith.label_steps(p, ["7 + 5 = 12", "The answer is 12"]) == [True, False])
ok = True
for q in probs[:500]:
    steps, labels = arith.corrupt_steps(q, rng)
    ok &= (labels == arith.label_steps(q, steps)) and not all(labels) and labels[-1] is False
    ok &= not arith.is_correct(q, "\n".join(steps))
check("corrupted solutions: labels agree with the verifier, final answer wrong", ok)
tr, dv, te = arith.split_problems(1, 3000, 200, 300)
keys = [set(map(arith.problem_text, s)) for s in (tr, dv, te)]
check("train/dev/test problems disjoint and distinct",
      len(keys[0]) == 3000 and len(keys[1]) == 200 and len(keys[2]) == 300 and
      not (keys[0] & keys[2]) and not (keys[0] & keys[1]) and not (keys[1] & keys[2]))
check("the test set does not depend on the train size",
      [arith.problem_text(x) for x in arith.split_problems(1, 10, 200, 300)[2]] == [arith.problem_text(x) for x in te])

# ---- plan: stage time, adapter caps, checkpoint choice, specificity
shares = {"a": 0.18, "p": 0.14, "r": 0.08}
over = {"a": 20, "p": 60, "r": 12}
t = plan.stage_seconds(300, 20, ["a", "p", "r"], shares, over)
check("stage time: its share of what is left after reserve and overheads",
      abs(t - (300 - 20 - 92) * 0.18 / 0.40) < 1e-9)
check("stage time: the last stage gets everything but its overhead and the reserve",
      abs(plan.stage_seconds(100, 20, ["r"], shares, over) - 68) < 1e-9)
check("stage time: never below the minimum", plan.stage_seconds(10, 20, ["a", "r"], shares, over) == 5.0)
check("adapter steps: epochs x tokens / (batch x seq), rounded up",
      plan.adapter_max_steps(388607, 1.5, 8, 512) == 143 and plan.adapter_max_steps(10, 1.5, 8, 512) == 1)
check("adapter lr: base up to rank 16, 1/sqrt(rank) above",
      plan.adapter_lr(8) == 1e-3 and plan.adapter_lr(16) == 1e-3 and abs(plan.adapter_lr(64) - 5e-4) < 1e-12)
check("eval points: spread, the last at max_steps",
      plan.eval_points(60, 6) == [10, 20, 30, 40, 50, 60] and plan.eval_points(3, 6) == [1, 2, 3] and
      plan.eval_points(1, 6) == [1])
base = {"kjv": 40.0, "fortunes": 90.0, "jargon": 120.0}
own, other, spec = plan.specificity(base, {"kjv": 20.0, "fortunes": 90.0, "jargon": 100.0}, "kjv")
check("specificity: own ratio over the largest other ratio", own == 2.0 and other == 1.2 and abs(spec - 2.0 / 1.2) < 1e-12)
check("specificity < 1 when another source gains more",
      plan.specificity(base, {"kjv": 39.0, "fortunes": 45.0, "jargon": 120.0}, "kjv")[2] < 1)
check("closest check to the target, ties to the earlier",
      plan.closest_check([0.64, 0.71, 0.86], 0.8) == 2 and plan.closest_check([0.64, 0.78, 0.9], 0.8) == 1 and plan.closest_check([0.5, 1.0], 0.75) == 0 and
      plan.closest_check([0.5], 0.8) == 0 and plan.closest_check([], 0.8) is None)
check("policy stops at the first check at or past the target",
      not plan.policy_should_stop(0.79, 0.8) and plan.policy_should_stop(0.8, 0.8))

print(f"arbor-tests: {passed} passed, {failed} failed, 0 skipped")
sys.exit(1 if failed else 0)
