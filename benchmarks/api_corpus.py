"""Explanation-like texts and their embeddings for bench_api.py, a million at a time.

Texts follow the shapes real auto-interpretability labels take ("mentions of bridges in travel
writing", 'the token "def" in Python code', "French verbs, especially irregular ones"), with
topics drawn from a Zipf distribution, so a common word matches a large share of the rows (as
"token" or "names" do in real label sets) and a rare one a few dozen.  Embedding a million texts
with MiniLM takes an hour on two cores, so each row's vector is built from the real MiniLM
embeddings of its parts (topic, second part, frame) plus noise, then normalised: the vectors
cluster the way the texts do, which is what an ANN index's speed and recall depend on.
"""

from __future__ import annotations

import numpy as np

TOPICS = """bridges rivers mountains cities capital-cities islands oceans deserts forests weather storms rain snow
birds dogs cats horses insects fish flowers trees fruit vegetables bread cheese coffee wine beer recipes spices
cars trains aircraft ships bicycles roads airports football basketball tennis baseball cricket golf chess
olympics athletes coaches music songs guitars pianos drums orchestras operas films actors directors novels
poems poets authors painters paintings sculptures museums theatres dance photography fashion jewellery
furniture kitchens bathrooms gardens houses churches castles temples schools universities students teachers
exams hospitals doctors nurses diseases vaccines medicines surgery symptoms genes proteins cells bacteria
viruses chemistry physics astronomy planets stars galaxies telescopes mathematics equations numbers fractions
percentages dates years months weekdays clocks money prices taxes banks loans stocks markets companies
startups contracts lawyers courts judges crimes police prisons elections voters parliaments presidents kings
queens wars soldiers weapons battles treaties revolutions empires colonies migration languages grammar verbs
nouns adjectives adverbs pronouns plurals negation questions quotations punctuation commas parentheses
brackets hyphens apostrophes abbreviations acronyms names surnames nicknames emails urls hashtags emojis
functions variables loops exceptions classes imports decorators comments docstrings indentation strings
integers booleans arrays dictionaries databases queries servers networks passwords encryption browsers
websites keyboards screens phones cameras batteries robots algorithms emotions anger joy sadness fear
surprise love friendship family children parents weddings funerals birthdays holidays christmas religion
philosophy ethics politics economics psychology sociology history archaeology geography""".split()

ADJECTIVES = """historical technical medical legal fictional negative positive small large ancient modern
german french spanish chinese japanese russian latin british american formal informal scientific
religious military financial academic regional""".split()

CONTEXTS = ["python code", "legal documents", "news articles", "recipes", "chat messages", "scientific papers",
            "song lyrics", "sports reports", "wikipedia biographies", "html markup", "json files", "math proofs",
            "product reviews", "poetry", "dialogue", "emails", "forum posts", "stack traces", "sql queries",
            "travel writing", "children's stories", "patents", "job adverts", "cooking blogs", "subtitles"]

FRAMES = ["{t}", "mentions of {t}", "references to {t}", "{t} in {c}", "words related to {t}",
          "phrases about {t} and {u}", "{t}, especially {u}", "{a} {t}", "descriptions of {a} {t}",
          "text about {t} in {c}", "names of {t}", 'the token "{w}" in {c}', 'the word "{w}"',
          "tokens following {t}", "{t} (mostly in {c})", "lists of {t}", "the end of sentences about {t}",
          "questions about {t}", "{a} terms for {t}", "numbers next to {t}"]

QUERY_WORDS = ["token", "names", "python", "code", "bridges", "french", "verbs", "dates", "music", "football",
               "legal", "medical", "numbers", "emotions", "recipes", "negation", "punctuation", "rivers",
               "functions", "history"]


def zipf_weights(n: int, s: float = 1.0) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


class ExplanationCorpus:
    """Deterministic rows: ``block(start, n)`` -> (texts, [n, dim] unit vectors)."""

    def __init__(self, embed, seed: int = 0, noise: float = 0.35):
        self.seed, self.noise = seed, noise
        self.topic_p = zipf_weights(len(TOPICS))
        self.frame_p = zipf_weights(len(FRAMES), 0.6)
        parts = TOPICS + ADJECTIVES + CONTEXTS + [f.replace("{t}", "").replace("{u}", "").replace("{a}", "")
                                                  .replace("{c}", "").replace("{w}", "") for f in FRAMES]
        vecs = embed([p.replace("-", " ") for p in parts])
        n_t, n_a, n_c = len(TOPICS), len(ADJECTIVES), len(CONTEXTS)
        self.topic_v, self.adj_v = vecs[:n_t], vecs[n_t:n_t + n_a]
        self.ctx_v, self.frame_v = vecs[n_t + n_a:n_t + n_a + n_c], vecs[n_t + n_a + n_c:]
        self.dim = int(vecs.shape[1])

    def block(self, start: int, n: int) -> tuple[list[str], np.ndarray]:
        rng = np.random.default_rng([self.seed, start])
        t = rng.choice(len(TOPICS), n, p=self.topic_p)
        u = rng.choice(len(TOPICS), n, p=self.topic_p)
        a = rng.integers(0, len(ADJECTIVES), n)
        c = rng.integers(0, len(CONTEXTS), n)
        f = rng.choice(len(FRAMES), n, p=self.frame_p)
        texts = []
        for i in range(n):
            topic = TOPICS[t[i]].replace("-", " ")
            texts.append(FRAMES[f[i]].format(t=topic, u=TOPICS[u[i]].replace("-", " "), a=ADJECTIVES[a[i]],
                                             c=CONTEXTS[c[i]], w=topic.split()[0][:4]))
        uses_u = np.array(["{u}" in FRAMES[j] for j in f])
        uses_a = np.array(["{a}" in FRAMES[j] for j in f])
        uses_c = np.array(["{c}" in FRAMES[j] for j in f])
        v = (self.topic_v[t] + 0.6 * uses_u[:, None] * self.topic_v[u] + 0.5 * uses_a[:, None] * self.adj_v[a]
             + 0.5 * uses_c[:, None] * self.ctx_v[c] + 0.3 * self.frame_v[f])
        v += rng.normal(0.0, self.noise / np.sqrt(self.dim), v.shape)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return texts, v.astype(np.float32)

    def query_texts(self, n: int, seed: int = 1) -> list[str]:
        """Search phrases people type: a topic (popular ones more often), sometimes with a context."""
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            topic = TOPICS[rng.choice(len(TOPICS), p=self.topic_p)].replace("-", " ")
            out.append(topic if rng.random() < 0.6 else f"{topic} in {CONTEXTS[rng.integers(len(CONTEXTS))]}")
        return out
