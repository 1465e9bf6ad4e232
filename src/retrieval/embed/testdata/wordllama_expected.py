# Writes wordllama_expected.json: what wordllama 0.4.0.post1's own code gives for a few texts
# (token ids from WordLlamaInference.tokenize, vectors from .embed(texts, norm=True)), which
# wordllama_tests.rs compares the Rust embedder against.
#
# To run it: in a virtualenv, `pip install wordllama==0.4.0.post1` (it brings numpy, tokenizers
# and safetensors), copy the wheel's wordllama/tokenizers/l2_supercat_tokenizer_config.json to
# CACHE/tokenizers/, then `python wordllama_expected.py CACHE wordllama_expected.json`.
# (wordllama 0.4.0 looks for its bundled tokenizer under wordllama/tokenizer/, which the wheel
# does not have, so the file is handed over as if cached; the weights come from the wheel.)
import json
import sys

import numpy as np
from wordllama import WordLlama

cache, out_path = sys.argv[1], sys.argv[2]
wl = WordLlama.load(cache_dir=cache, disable_download=True)
texts = [
    "The cat sat on the mat.",
    "  Leading spaces,\ttabs and\nnewlines  ",
    "Ünïcödé text: naïve café, 東京タワー, emoji 🦀🚀!",
    "def add(a, b):\n    return a + b  # four-space indent\n",
    "Rust's ownership model guarantees memory safety without a garbage collector.",
    " ",
]
enc = wl.tokenize(texts)
ids = [[i for i, m in zip(e.ids, e.attention_mask) if m] for e in enc]
vecs = wl.embed(texts, norm=True)
out = {
    "source": "wordllama 0.4.0.post1: WordLlama.load().embed(texts, norm=True) and .tokenize(texts)",
    "cases": [
        {"text": t, "ids": i, "embedding": [float(x) for x in v]}
        for t, i, v in zip(texts, ids, vecs)
    ],
}
with open(out_path, "w") as f:
    json.dump(out, f, ensure_ascii=False)
print([len(i) for i in ids], np.linalg.norm(vecs, axis=1))
