"""Corpus and sentence scores for generated text, computed by the reference tools where they exist.

BLEU, chrF and TER come from sacrebleu so that every number carries its signature and equals the
``sacrebleu`` command line; ROUGE comes from rouge-score with a tokenizer that keeps Chinese (its own
drops every non-ASCII character). Diversity metrics (distinct-n, self-BLEU) are written here because no
standard tool owns them.

A score dict maps a metric name to ``{"score": float, ...}``: BLEU, chrF, TER, ROUGE and self-BLEU are on
a 0-100 scale, distinct-n is a fraction (0-1) as in Li et al. (2016).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.metrics.helpers import extract_all_word_ngrams

from seqsmith.errors import SeqsmithError
from seqsmith.fileio import atomic_write_text, read_lines

ROUGE_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
CORPUS_METRICS = (
    "bleu",
    "bleu1",
    "bleu2",
    "chrf",
    "chrf++",
    "ter",
    *ROUGE_METRICS,
    "distinct1",
    "distinct2",
    "self_bleu",
    "length",
    "rep3",
    "f1",
)
SENTENCE_METRICS = ("bleu", "chrf", "chrf++", "ter", *ROUGE_METRICS)
DEFAULT_SENTENCE_METRICS = ("bleu", "chrf", "rouge1", "rouge2", "rougeL")
ALIASES = {"rouge": ROUGE_METRICS, "distinct": ("distinct1", "distinct2")}
# sacrebleu tokenizers that work offline (spm/flores download a model, which seqsmith never does at run time).
BLEU_TOKENIZERS = ("13a", "intl", "zh", "char", "none", "ja-mecab", "ko-mecab")
# Tokenizations under which text has no spaces between words, so TER must split Asian characters itself.
_ASIAN_TOKENIZE = ("zh", "char", "ja-mecab", "ko-mecab")

# Han ideographs (with extensions and compatibility forms), kana and CJK symbols: one token per character.
_CJK = re.compile(
    "([\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\U00020000-\U0002fa1f])"
)
_WORD = re.compile(r"[^\W_]+")
_ARTICLES = frozenset({"a", "an", "the"})
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])")


class CJKTokenizer:
    """A tokenizer for rouge-score (its ``tokenize`` is all RougeScorer calls): lowercased words, one token
    per CJK character, punctuation dropped.

    On ASCII text it gives the same tokens as rouge-score's default tokenizer (without stemming).
    """

    def tokenize(self, text: str) -> list[str]:
        return _WORD.findall(_CJK.sub(r" \1 ", text.lower()))


def check_metrics(metrics: Sequence[str], valid: Sequence[str] = CORPUS_METRICS) -> list[str]:
    """Canonical names (case-insensitive; "rouge" and "distinct" expand); unknown names are an error."""
    by_lower: dict[str, tuple[str, ...]] = {name.lower(): (name,) for name in valid}
    by_lower.update({alias: names for alias, names in ALIASES.items() if set(names) <= set(valid)})
    unknown = [name for name in metrics if name.lower() not in by_lower]
    if unknown or not metrics:
        choices = ", ".join(by_lower[name][0] if len(by_lower[name]) == 1 else name for name in by_lower)
        problem = f"unknown metric(s) {', '.join(unknown)}" if unknown else "no metrics requested"
        raise SeqsmithError(f"{problem}; valid metrics are: {choices}")
    return list(dict.fromkeys(full for name in metrics for full in by_lower[name.lower()]))


def check_tokenize(tokenize: str) -> str:
    if tokenize not in BLEU_TOKENIZERS:
        raise SeqsmithError(
            f"unknown BLEU tokenizer {tokenize!r} (evaluate.bleu_tokenize); "
            f"valid: {', '.join(BLEU_TOKENIZERS)} (zh for Chinese)"
        )
    return tokenize


def check_counts(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    hyp_name: str = "hypotheses",
    ref_names: Sequence[str] | None = None,
) -> None:
    if not hypotheses:
        raise SeqsmithError(f"{hyp_name} is empty: there is nothing to score")
    if not references:
        raise SeqsmithError("no references given: pass at least one reference set")
    if isinstance(references, str) or any(isinstance(refs, str) for refs in references):
        raise SeqsmithError(
            "references must be a list of reference sets (lists of lines); wrap one set as [refs]"
        )
    for index, refs in enumerate(references):
        if len(refs) != len(hypotheses):
            ref_name = ref_names[index] if ref_names else f"reference set {index + 1}"
            raise SeqsmithError(
                f"{ref_name} has {len(refs)} lines but {hyp_name} has {len(hypotheses)}; "
                "every reference set needs exactly one line per hypothesis"
            )


def perplexity(total_nll: float, tokens: int) -> float:
    """exp(mean negative log-likelihood in nats per token); inf when it overflows."""
    if tokens <= 0:
        raise SeqsmithError(f"perplexity needs a positive token count (got {tokens})")
    try:
        return math.exp(total_nll / tokens)
    except OverflowError:
        return math.inf


def _bleu(tokenize: str, lowercase: bool, max_order: int = 4, sentence: bool = False) -> BLEU:
    return BLEU(tokenize=tokenize, lowercase=lowercase, max_ngram_order=max_order, effective_order=sentence)


def _ter(tokenize: str, lowercase: bool) -> TER:
    asian = tokenize in _ASIAN_TOKENIZE
    return TER(case_sensitive=not lowercase, normalized=asian, asian_support=asian)


def _chrf(lowercase: bool, word_order: int) -> CHRF:
    return CHRF(lowercase=lowercase, word_order=word_order)


def _sacrebleu_metric(name: str, tokenize: str, lowercase: bool, sentence: bool) -> BLEU | CHRF | TER:
    if name in ("bleu", "bleu1", "bleu2"):
        return _bleu(tokenize, lowercase, 4 if name == "bleu" else int(name[-1]), sentence)
    if name in ("chrf", "chrf++"):
        return _chrf(lowercase, 2 if name == "chrf++" else 0)
    return _ter(tokenize, lowercase)


def _split_sentences(text: str) -> str:
    """One sentence per line, which is how rouge-score's rougeLsum expects summaries."""
    return "\n".join(part for part in _SENTENCE_END.split(text.strip()) if part)


def _rouge(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], types: Sequence[str]
) -> list[dict[str, dict[str, float]]]:
    """Per-sentence ROUGE (x100); several references: per type the one with the best F1 (score_multi)."""
    from rouge_score import rouge_scorer  # it imports nltk and scipy: 1.5 s and ~60 MB decoding never needs

    scorer = rouge_scorer.RougeScorer(list(types), tokenizer=CJKTokenizer())
    rows = []
    for index, hypothesis in enumerate(hypotheses):
        targets = [_split_sentences(refs[index]) for refs in references]
        best = scorer.score_multi(targets, _split_sentences(hypothesis))
        rows.append(
            {
                name: {"score": 100 * s.fmeasure, "precision": 100 * s.precision, "recall": 100 * s.recall}
                for name, s in best.items()
            }
        )
    return rows


def bleu_tokens(tokenize: str, lowercase: bool) -> Callable[[str], list[str]]:
    """The tokenization BLEU applies, reused for diversity metrics so all of them count the same units."""
    bleu = _bleu(tokenize, lowercase)

    def split(line: str) -> list[str]:
        return bleu.tokenizer((line.lower() if lowercase else line).rstrip()).split()

    return split


def distinct_n(hypotheses: Sequence[str], n: int, tokenize: str = "13a", lowercase: bool = False) -> float:
    """Unique n-grams over all n-grams of the corpus (0 when no line has n tokens)."""
    split = bleu_tokens(tokenize, lowercase)
    grams: Counter[tuple[str, ...]] = Counter()
    for line in hypotheses:
        tokens = split(line)
        grams.update(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else 0.0


def mean_length(lines: Sequence[str], tokenize: str = "13a", lowercase: bool = False) -> float:
    """Mean tokens a line, in BLEU's units (a summary's length beside its reference's)."""
    split = bleu_tokens(tokenize, lowercase)
    return sum(len(split(line)) for line in lines) / len(lines) if lines else 0.0


def content_words(tokenize: str) -> Callable[[str], list[str]]:
    """A line's lowercased words without punctuation and English articles, as grounded-dialogue F1 normalizes
    them (Dinan et al., 2019): "It's a good movie." and "the movie is good!" share "movie" and "good"."""
    split = bleu_tokens(tokenize, True)
    return lambda line: [word for word in split(line) if _WORD.search(word) and word not in _ARTICLES]


def unigram_f1(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], tokenize: str = "13a"
) -> float:
    """Mean over lines of the best F1 of a line's content words against one of its references (counting
    repeats), x100: how grounded-dialogue papers score a response's content."""
    split = content_words(tokenize)
    total = 0.0
    for index, hypothesis in enumerate(hypotheses):
        words = Counter(split(hypothesis))
        best = 0.0
        for reference_set in references:
            theirs = Counter(split(reference_set[index]))
            common = sum((words & theirs).values())
            if common:
                precision, recall = common / sum(words.values()), common / sum(theirs.values())
                best = max(best, 2 * precision * recall / (precision + recall))
        total += best
    return 100 * total / len(hypotheses) if hypotheses else 0.0


def repeated_trigrams(hypotheses: Sequence[str], tokenize: str = "13a", lowercase: bool = False) -> float:
    """Percent of a line's trigrams that repeat one earlier in the same line, averaged over the lines that
    have a trigram (rep-3: the loops that copy models and sampled objectives fall into)."""
    split = bleu_tokens(tokenize, lowercase)
    shares = []
    for line in hypotheses:
        tokens = split(line)
        grams = [tuple(tokens[i : i + 3]) for i in range(len(tokens) - 2)]
        if grams:
            shares.append(1 - len(set(grams)) / len(grams))
    return 100 * sum(shares) / len(shares) if shares else 0.0


def self_bleu(hypotheses: Sequence[str], tokenize: str = "13a", lowercase: bool = False) -> float:
    """Mean sentence BLEU of each hypothesis with all the others as references (Zhu et al., 2018).

    Equals averaging sacrebleu's ``sentence_score(h, others)``, but in linear time: the clipping count of
    an n-gram against "all the others" is its largest count in any other line, so keeping the two largest
    counts per n-gram (and who holds the first) is enough.
    """
    if len(hypotheses) < 2:
        raise SeqsmithError(f"self_bleu needs at least 2 hypotheses (got {len(hypotheses)})")
    bleu = _bleu(tokenize, lowercase, sentence=True)
    order = bleu.max_ngram_order
    split = bleu_tokens(tokenize, lowercase)
    counts = []
    lengths = []
    for line in hypotheses:
        grams, length = extract_all_word_ngrams(" ".join(split(line)), 1, order)
        counts.append(grams)
        lengths.append(length)
    best: dict[tuple[str, ...], tuple[int, int, int]] = {}  # n-gram -> (top count, its line, second count)
    for index, grams in enumerate(counts):
        for gram, count in grams.items():
            top, holder, second = best.get(gram, (0, -1, 0))
            if count > top:
                best[gram] = (count, index, top)
            elif count > second:
                best[gram] = (top, holder, count)
    length_counts = Counter(lengths)
    total_score = 0.0
    for index, grams in enumerate(counts):
        correct = [0] * order
        total = [0] * order
        for gram, count in grams.items():
            top, holder, second = best[gram]
            total[len(gram) - 1] += count
            correct[len(gram) - 1] += min(count, second if holder == index else top)
        others = length_counts - Counter([lengths[index]])
        ref_len = min(others, key=lambda ref: (abs(ref - lengths[index]), ref))
        score = BLEU.compute_bleu(
            correct=correct,
            total=total,
            sys_len=lengths[index],
            ref_len=ref_len,
            smooth_method=bleu.smooth_method,
            smooth_value=bleu.smooth_value,
            effective_order=True,
            max_ngram_order=order,
        )
        total_score += score.score
    return total_score / len(hypotheses)


def corpus_scores(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    metrics: Sequence[str],
    bleu_tokenize: str = "13a",
    lowercase: bool = False,
) -> dict[str, dict[str, Any]]:
    """Corpus-level scores; ``references`` holds one list per reference set, each as long as hypotheses.

    ``bleu_tokenize`` is sacrebleu's tokenizer ("13a", "zh" for Chinese, "char", "intl", "none", ...); it
    also sets the units of distinct-n and self-BLEU. ROUGE always uses the CJK-aware tokenizer.
    """
    names = check_metrics(metrics)
    check_tokenize(bleu_tokenize)
    check_counts(hypotheses, references)
    hyps = list(hypotheses)
    refs = [list(r) for r in references]
    scores: dict[str, dict[str, Any]] = {}
    case = "lc" if lowercase else "mixed"
    rouge_types = [name for name in names if name in ROUGE_METRICS]
    rouge_rows = _rouge(hyps, refs, rouge_types) if rouge_types else []
    for name in names:
        if name in ROUGE_METRICS:
            scores[name] = {
                key: sum(row[name][key] for row in rouge_rows) / len(rouge_rows)
                for key in ("score", "precision", "recall")
            }
            scores[name]["signature"] = f"nrefs:{len(refs)}|tok:cjk-char|stem:no|agg:mean"
        elif name.startswith("distinct"):
            scores[name] = {"score": distinct_n(hyps, int(name[-1]), bleu_tokenize, lowercase)}
            scores[name]["signature"] = f"case:{case}|tok:{bleu_tokenize}"
        elif name == "length":
            own, theirs = (
                mean_length(hyps, bleu_tokenize, lowercase),
                mean_length(refs[0], bleu_tokenize, lowercase),
            )
            scores[name] = {"score": own, "ratio": own / theirs if theirs else 0.0}
            scores[name]["signature"] = f"tokens a line|ratio: to the first references|tok:{bleu_tokenize}"
        elif name == "f1":
            scores[name] = {"score": unigram_f1(hyps, refs, bleu_tokenize)}
            scores[name]["signature"] = (
                f"unigram F1|best reference|case:lc|tok:{bleu_tokenize}|no punctuation, articles"
            )
        elif name == "rep3":
            scores[name] = {"score": repeated_trigrams(hyps, bleu_tokenize, lowercase)}
            scores[name]["signature"] = f"percent repeated trigrams a line|case:{case}|tok:{bleu_tokenize}"
        elif name == "self_bleu":
            scores[name] = {"score": self_bleu(hyps, bleu_tokenize, lowercase)}
            scores[name]["signature"] = f"case:{case}|eff:yes|tok:{bleu_tokenize}|smooth:exp|order:4|agg:mean"
        else:
            metric = _sacrebleu_metric(name, bleu_tokenize, lowercase, sentence=False)
            result = metric.corpus_score(hyps, refs)
            signature = metric.get_signature().format()
            if name in ("bleu1", "bleu2"):  # sacrebleu's signature leaves out a non-default n-gram order
                signature += f"|order:{name[-1]}"
            scores[name] = {"score": result.score, "signature": signature, "details": result.format()}
    return scores


def sentence_scores(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    metrics: Sequence[str] = DEFAULT_SENTENCE_METRICS,
    bleu_tokenize: str = "13a",
    lowercase: bool = False,
) -> list[dict[str, Any]]:
    """One dict per hypothesis (index, texts and scores) for a JSON-lines file; BLEU uses effective order."""
    names = check_metrics(metrics, SENTENCE_METRICS)
    check_tokenize(bleu_tokenize)
    check_counts(hypotheses, references)
    rouge_types = [name for name in names if name in ROUGE_METRICS]
    rouge_rows = _rouge(hypotheses, references, rouge_types) if rouge_types else []
    scorers = {
        name: _sacrebleu_metric(name, bleu_tokenize, lowercase, sentence=True)
        for name in names
        if name not in ROUGE_METRICS
    }
    rows = []
    for index, hypothesis in enumerate(hypotheses):
        refs = [ref_set[index] for ref_set in references]
        row: dict[str, Any] = {"index": index, "hypothesis": hypothesis, "references": refs}
        for name in names:
            if name in ROUGE_METRICS:
                row[name] = rouge_rows[index][name]["score"]
            else:
                row[name] = scorers[name].sentence_score(hypothesis, refs).score
        rows.append(row)
    return rows


def format_markdown(scores: dict[str, dict[str, Any]]) -> str:
    """A Markdown table: metric, score, signature (how to reproduce it)."""
    lines = ["| metric | score | signature |", "|---|---:|---|"]
    for name, entry in scores.items():
        value = entry["score"]
        shown = f"{value:.4f}" if name.startswith("distinct") else f"{value:.2f}"
        lines.append(f"| {name} | {shown} | {entry.get('signature', '')} |")
    return "\n".join(lines) + "\n"


def evaluate_files(
    hyp: Path,
    refs: Sequence[Path],
    metrics: Sequence[str],
    bleu_tokenize: str = "13a",
    lowercase: bool = False,
) -> dict[str, dict[str, Any]]:
    """Corpus scores of a hypothesis file against one or more reference files (one line per segment)."""
    if not refs:
        raise SeqsmithError("no reference files given: pass at least one")
    check_metrics(metrics)
    check_tokenize(bleu_tokenize)
    hypotheses = read_lines(hyp, "hypothesis file")
    references = [read_lines(path, "reference file") for path in refs]
    check_counts(hypotheses, references, f"hypothesis file {hyp}", [f"reference file {p}" for p in refs])
    return corpus_scores(hypotheses, references, metrics, bleu_tokenize, lowercase)


def write_outputs(
    scores: dict[str, dict[str, Any]], per_sentence: Sequence[dict[str, Any]] | None, out_dir: Path
) -> list[Path]:
    """``scores.json``, ``scores.md`` and (with per-sentence rows) ``sentences.jsonl`` in ``out_dir``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SeqsmithError(f"output directory {out_dir} is a file; choose a directory path")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "scores.json", out_dir / "scores.md"]
    atomic_write_text(written[0], json.dumps(scores, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(written[1], format_markdown(scores))
    if per_sentence is not None:
        written.append(out_dir / "sentences.jsonl")
        atomic_write_text(
            written[2], "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in per_sentence)
        )
    return written


def reference_sets(per_example: Sequence[Sequence[str]]) -> list[list[str]]:
    """Per-example reference lists -> reference sets (sacrebleu's layout); an example with fewer
    references than the most repeats its last one, which leaves max-over-references scores unchanged."""
    width = max((len(refs) for refs in per_example), default=0)
    return [[refs[min(k, len(refs) - 1)] for refs in per_example] for k in range(width)]
