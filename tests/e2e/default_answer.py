#!/usr/bin/env python3
"""The embedded default config's model (models/testbed/chat) answers a chat request in English:
a greedy answer of mostly letters and spaces, holding some of the commonest English words (the
random-weight model it replaced answered "\\u001f\\u001f...right heart heart's's").

  default_answer.py URL      (a server started on the default config, served as "tiny")
"""
import json
import re
import sys
import urllib.request

COMMON = {"the", "a", "and", "of", "to", "in", "is", "you", "that", "it", "he", "for", "was",
          "on", "are", "with", "as", "i", "his", "they", "be", "at", "one", "have", "this",
          "not", "but", "by", "from", "or", "all", "your", "will", "if", "my", "me", "we"}


def main():
    body = {"model": "tiny", "max_tokens": 48, "temperature": 0,
            "messages": [{"role": "user", "content": "Tell me a fortune."}]}
    req = urllib.request.Request(sys.argv[1] + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    text = json.load(urllib.request.urlopen(req, timeout=60))["choices"][0]["message"]["content"]
    letters = sum(c.isalpha() or c.isspace() for c in text) / max(1, len(text))
    words = re.findall(r"[a-z']+", text.lower())
    ok = len(words) >= 5 and letters >= 0.8 and len(COMMON & set(words)) >= 2
    print(("" if ok else "FAIL default_answer_english: ") + repr(text))
    print(f"arbor-tests: {int(ok)} passed, {int(not ok)} failed, 0 skipped")


if __name__ == "__main__":
    main()
