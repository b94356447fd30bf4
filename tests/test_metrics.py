"""Scores against the reference tools (sacrebleu's CLI, rouge-score) and hand or brute-force references."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from itertools import product
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer
from rouge_score import tokenize as rouge_tokenize
from sacrebleu.metrics import BLEU

from seqsmith.errors import SeqsmithError
from seqsmith.evaluation.metrics import (
    CORPUS_METRICS,
    CJKTokenizer,
    check_metrics,
    corpus_scores,
    distinct_n,
    evaluate_files,
    format_markdown,
    perplexity,
    self_bleu,
    sentence_scores,
    write_outputs,
)
from seqsmith.fileio import read_lines

FIXTURES = Path(__file__).parent / "fixtures"
EN_HYP = FIXTURES / "en.hyp"
EN_REFS = [FIXTURES / f"en.ref{i}" for i in (1, 2, 3)]
ZH_HYP = FIXTURES / "zh.hyp"
ZH_REF = FIXTURES / "zh.ref"


def sacrebleu_cli(hyp: Path, refs: list[Path], *flags: str) -> list[float]:
    command = [sys.executable, "-m", "sacrebleu", *map(str, refs), "-i", str(hyp)]
    command += ["-m", "bleu", "chrf", "ter", "-b", "-w", "4", *flags]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return [float(value) for value in json.loads(output)]


@pytest.mark.parametrize(
    ("hyp", "refs", "tokenize", "lowercase", "flags"),
    [
        (EN_HYP, EN_REFS[:1], "13a", False, ["--ter-case-sensitive"]),
        (EN_HYP, EN_REFS, "13a", False, ["--ter-case-sensitive"]),
        (EN_HYP, EN_REFS[1:], "13a", True, ["-lc", "--chrf-lowercase"]),
        (
            ZH_HYP,
            [ZH_REF],
            "zh",
            False,
            ["-tok", "zh", "--ter-case-sensitive", "--ter-normalized", "--ter-asian-support"],
        ),
    ],
    ids=["en-1ref", "en-3refs", "en-lowercase", "zh"],
)
def test_bleu_chrf_ter_equal_sacrebleu_command_line(
    hyp: Path, refs: list[Path], tokenize: str, lowercase: bool, flags: list[str]
) -> None:
    scores = evaluate_files(hyp, refs, ["bleu", "chrf", "ter"], bleu_tokenize=tokenize, lowercase=lowercase)
    expected = sacrebleu_cli(hyp, refs, *flags)
    assert [scores[m]["score"] for m in ("bleu", "chrf", "ter")] == pytest.approx(expected, abs=1e-4)
    assert scores["bleu"]["signature"].startswith(f"nrefs:{len(refs)}|case:{'lc' if lowercase else 'mixed'}")
    assert f"tok:{tokenize}" in scores["bleu"]["signature"]
    assert "version:" in scores["chrf"]["signature"] and "tok:tercom" in scores["ter"]["signature"]


def test_rouge_equals_rouge_score_script(tmp_path: Path) -> None:
    out = tmp_path / "rouge.csv"
    command = [sys.executable, "-m", "rouge_score.rouge", f"--target_filepattern={EN_REFS[0]}"]
    command += [f"--prediction_filepattern={EN_HYP}", f"--output_filename={out}", "--noaggregate"]
    command += ["--rouge_types=rouge1,rouge2,rougeL"]
    subprocess.run(command, capture_output=True, check=True)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 20
    scores = evaluate_files(EN_HYP, EN_REFS[:1], ["rouge1", "rouge2", "rougeL"])
    for name in ("rouge1", "rouge2", "rougeL"):
        for key, column in (("score", "F"), ("precision", "P"), ("recall", "R")):
            mean = 100 * sum(float(row[f"{name}-{column}"]) for row in rows) / len(rows)
            assert scores[name][key] == pytest.approx(mean, abs=1e-4)


def test_multi_reference_rouge_takes_best_reference_per_sentence() -> None:
    hyps = read_lines(EN_HYP)
    refs = [read_lines(path) for path in EN_REFS]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    best = [scorer.score_multi([r[i] for r in refs], h) for i, h in enumerate(hyps)]
    scores = corpus_scores(hyps, refs, ["rouge1", "rouge2", "rougeL"])
    single = corpus_scores(hyps, refs[:1], ["rouge1"])
    for name in ("rouge1", "rouge2", "rougeL"):
        expected = 100 * sum(b[name].fmeasure for b in best) / len(best)
        assert scores[name]["score"] == pytest.approx(expected, abs=1e-9)
    assert scores["rouge1"]["score"] > single["rouge1"]["score"]
    assert scores["rouge1"]["signature"].startswith("nrefs:3")


def test_rouge_lsum_splits_sentences_like_newline_separated_summaries() -> None:
    hyp = "The cat sat on the mat. It was very happy! Then it slept."
    ref = "A cat was on the mat. The cat slept after that."
    scorer = rouge_scorer.RougeScorer(["rougeLsum", "rougeL"])
    expected = scorer.score(ref.replace(". ", ".\n"), hyp.replace(". ", ".\n").replace("! ", "!\n"))
    scores = corpus_scores([hyp], [[ref]], ["rougeLsum", "rougeL"])
    assert scores["rougeLsum"]["score"] == pytest.approx(100 * expected["rougeLsum"].fmeasure)
    assert scores["rougeL"]["score"] == pytest.approx(100 * expected["rougeL"].fmeasure)
    assert scores["rougeLsum"]["score"] != pytest.approx(scores["rougeL"]["score"])


def _lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, j in product(range(len(a)), range(len(b))):
        table[i + 1][j + 1] = table[i][j] + 1 if a[i] == b[j] else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def _f1(overlap: float, hyp_count: int, ref_count: int) -> float:
    if not overlap:
        return 0.0
    precision, recall = overlap / hyp_count, overlap / ref_count
    return 2 * precision * recall / (precision + recall)


def _reference_rouge(hyp: str, ref: str) -> dict[str, float]:
    """Character-level ROUGE written independently: Chinese characters are the tokens, punctuation dropped."""
    h = [c for c in hyp if c.isalnum()]
    r = [c for c in ref if c.isalnum()]
    result = {"rougeL": _f1(_lcs(h, r), len(h), len(r))}
    for n in (1, 2):
        hg = [tuple(h[i : i + n]) for i in range(len(h) - n + 1)]
        rg = [tuple(r[i : i + n]) for i in range(len(r) - n + 1)]
        overlap = sum(min(hg.count(g), rg.count(g)) for g in set(hg))
        result[f"rouge{n}"] = _f1(overlap, len(hg), len(rg))
    return result


def test_chinese_rouge_equals_character_level_reference() -> None:
    hyps, refs = read_lines(ZH_HYP), read_lines(ZH_REF)
    shuffled = refs[1:] + refs[:1]
    scores = corpus_scores(hyps, [refs], ["rouge1", "rouge2", "rougeL"])
    multi = corpus_scores(hyps, [shuffled, refs], ["rouge1", "rouge2", "rougeL"])
    for name in ("rouge1", "rouge2", "rougeL"):
        single = [_reference_rouge(h, r)[name] for h, r in zip(hyps, refs)]
        best = [max(_reference_rouge(h, r)[name] for r in pair) for h, pair in zip(hyps, zip(shuffled, refs))]
        assert scores[name]["score"] == pytest.approx(100 * sum(single) / len(single), abs=1e-9)
        assert multi[name]["score"] == pytest.approx(100 * sum(best) / len(best), abs=1e-9)
    assert 50 < scores["rouge1"]["score"] < 100


def test_cjk_tokenizer_splits_han_and_kana_keeps_latin_words() -> None:
    tokens = CJKTokenizer().tokenize("Hello, World! 我爱北京。Café au lait, 日本語のテキスト x2")
    expected = ["hello", "world", "我", "爱", "北", "京", "café", "au", "lait", *"日本語のテキスト", "x2"]
    assert tokens == expected


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_cjk_tokenizer_equals_rouge_score_default_on_ascii(text: str) -> None:
    assert CJKTokenizer().tokenize(text) == rouge_tokenize.tokenize(text, None)


def test_length_and_repeated_trigrams_hand_computed() -> None:
    hyps = ["a b c a b c", "x y", "p q r s"]  # trigrams abc bca cab abc: 1 of 4 repeats; none; none
    refs = [["a b", "x y z", "p"]]
    scores = corpus_scores(hyps, refs, ["length", "rep3"], "none")
    assert scores["length"]["score"] == pytest.approx(12 / 3)
    assert scores["length"]["ratio"] == pytest.approx((12 / 3) / (6 / 3))
    assert scores["rep3"]["score"] == pytest.approx(100 * (0.25 + 0.0) / 2)  # "x y" has no trigram


def test_unigram_f1_hand_computed() -> None:
    hyps = ["Cat sat down", "c c b"]
    refs = [["the cat sat", "x"], ["zzz", "c b b"]]  # 1: cat sat of 3 words / of 2; 2: the second set
    # line 1: p 2/3, r 1 -> 0.8; line 2 against "c b b": common c, b = 2; p = r = 2/3 -> 2/3
    assert corpus_scores(hyps, refs, ["f1"], "none")["f1"]["score"] == pytest.approx(100 * (0.8 + 2 / 3) / 2)
    assert corpus_scores(["q"], [["r"]], ["f1"], "none")["f1"]["score"] == 0.0


def test_unigram_f1_counts_content_words_only() -> None:
    """Punctuation and articles are not content: a generic reply must not score by its full stop."""
    hyps = ["It's a good movie.", "The cat sat!", "..."]
    refs = [["the movie is great .", "a dog ?", "a cat ?"]]
    # 1: it's good movie / movie is great -> 1 common, p 1/3 r 1/3; 2: cat sat / dog -> 0; 3: no words -> 0
    assert corpus_scores(hyps, refs, ["f1"], "13a")["f1"]["score"] == pytest.approx(100 * (1 / 3) / 3)
    assert corpus_scores(["Ein Hund."], [["der Hund"]], ["f1"], "13a")["f1"]["score"] == pytest.approx(50.0)


def test_distinct_n_hand_computed() -> None:
    hyps = ["a b a b", "a c"]
    # unigrams a b a b a c: 3 unique of 6; bigrams ab ba ab ac: 3 unique of 4
    assert distinct_n(hyps, 1, "none") == pytest.approx(3 / 6)
    assert distinct_n(hyps, 2, "none") == pytest.approx(3 / 4)
    assert distinct_n(["a", "b"], 2, "none") == 0.0
    assert distinct_n(["A a"], 1, "none", lowercase=True) == pytest.approx(1 / 2)
    scores = corpus_scores(hyps, [["x", "y"]], ["distinct1", "distinct2"], bleu_tokenize="none")
    assert (scores["distinct1"]["score"], scores["distinct2"]["score"]) == pytest.approx((0.5, 0.75))


def test_self_bleu_hand_computed() -> None:
    assert self_bleu(["a b c d", "a b c d", "a b c d"], "none") == pytest.approx(100.0)
    # each against the other: precisions 3/4, 2/3, 1/2 and 0/1, which sacrebleu's exp smoothing makes
    # 1/(2*1); equal lengths so no brevity penalty
    expected = 100 * (0.75 * (2 / 3) * 0.5 * 0.5) ** 0.25
    assert self_bleu(["a b c d", "a b c e"], "none") == pytest.approx(expected)
    assert self_bleu(["a b", "c d"], "none") == 0.0
    with pytest.raises(SeqsmithError, match="at least 2"):
        self_bleu(["only one"])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.sampled_from("abcde"), max_size=8).map(" ".join), min_size=2, max_size=8))
def test_self_bleu_equals_brute_force_sacrebleu(hyps: list[str]) -> None:
    bleu = BLEU(tokenize="none", effective_order=True)
    brute = [bleu.sentence_score(h, hyps[:i] + hyps[i + 1 :]).score for i, h in enumerate(hyps)]
    assert self_bleu(hyps, "none") == pytest.approx(sum(brute) / len(brute), abs=1e-9)


def test_bleu1_bleu2_hand_computed() -> None:
    scores = corpus_scores(["the cat the cat"], [["the cat sat"]], ["bleu1", "bleu2"], bleu_tokenize="none")
    # clipped unigrams 2/4; bigrams "the cat" x2 + "cat the": 1/3; hypothesis longer, so no brevity penalty
    assert scores["bleu1"]["score"] == pytest.approx(50.0)
    assert scores["bleu2"]["score"] == pytest.approx(100 * math.sqrt(0.5 / 3))
    assert scores["bleu2"]["signature"].endswith("|order:2")


def test_perplexity() -> None:
    assert perplexity(10 * math.log(7.0), 10) == pytest.approx(7.0)
    assert perplexity(0.0, 3) == 1.0
    assert perplexity(1e6, 1) == math.inf
    with pytest.raises(SeqsmithError, match="positive token count"):
        perplexity(1.0, 0)


def test_unknown_metric_lists_valid_ones() -> None:
    with pytest.raises(SeqsmithError) as error:
        corpus_scores(["a"], [["a"]], ["bleu", "meteor"])
    message = str(error.value)
    assert "meteor" in message and all(name in message for name in CORPUS_METRICS)
    assert list(corpus_scores(["a b"], [["a b"]], ["ROUGEL", "Bleu"])) == ["rougeL", "bleu"]


def test_count_mismatch_names_counts_and_files(tmp_path: Path) -> None:
    with pytest.raises(SeqsmithError, match=r"reference set 2 has 1 lines but hypotheses has 2"):
        corpus_scores(["a", "b"], [["a", "b"], ["a"]], ["bleu"])
    short = tmp_path / "short.ref"
    short.write_text("one line\n", encoding="utf-8")
    with pytest.raises(SeqsmithError) as error:
        evaluate_files(EN_HYP, [EN_REFS[0], short], ["bleu"])
    assert f"reference file {short} has 1 lines" in str(error.value)
    assert f"hypothesis file {EN_HYP} has 20" in str(error.value)
    with pytest.raises(SeqsmithError, match=r"wrap one set as \[refs\]"):
        corpus_scores(["a", "b"], ["a", "b"], ["bleu"])
    with pytest.raises(SeqsmithError, match="nothing to score"):
        corpus_scores([], [[]], ["bleu"])


def test_read_lines_errors_and_line_splitting(tmp_path: Path) -> None:
    with pytest.raises(SeqsmithError, match=r"hypothesis file .*missing\.txt not found"):
        evaluate_files(tmp_path / "missing.txt", EN_REFS[:1], ["bleu"])
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good\nstill good\ncaf\xe9\n")
    with pytest.raises(SeqsmithError, match=r"bad\.txt:3: not valid UTF-8"):
        read_lines(bad)
    odd = tmp_path / "odd.txt"
    odd.write_bytes("one\u2028same line\r\ntwo\n\nfour".encode())
    assert read_lines(odd) == ["one\u2028same line", "two", "", "four"]
    with pytest.raises(SeqsmithError, match="is a directory"):
        read_lines(tmp_path)


def test_sentence_scores_match_sacrebleu_and_rouge() -> None:
    hyps, refs = read_lines(EN_HYP), [read_lines(p) for p in EN_REFS[:2]]
    rows = sentence_scores(hyps, refs)
    bleu = BLEU(effective_order=True)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    assert len(rows) == 20 and rows[3]["index"] == 3 and rows[3]["references"] == [refs[0][3], refs[1][3]]
    for row, hyp, pair in zip(rows, hyps, zip(*refs)):
        assert row["bleu"] == pytest.approx(bleu.sentence_score(hyp, list(pair)).score)
        assert row["rougeL"] == pytest.approx(100 * scorer.score_multi(list(pair), hyp)["rougeL"].fmeasure)
        assert set(row) >= {"chrf", "rouge1", "rouge2"}
    json.dumps(rows)
    with pytest.raises(SeqsmithError, match="valid metrics are"):
        sentence_scores(hyps, refs, ["distinct1"])


def test_write_outputs_and_markdown(tmp_path: Path) -> None:
    hyps, refs = read_lines(ZH_HYP), [read_lines(ZH_REF)]
    scores = corpus_scores(hyps, refs, ["bleu", "rouge1", "distinct2"], bleu_tokenize="zh")
    rows = sentence_scores(hyps, refs, ["bleu"], bleu_tokenize="zh")
    out = tmp_path / "eval"
    paths = write_outputs(scores, rows, out)
    assert [p.name for p in paths] == ["scores.json", "scores.md", "sentences.jsonl"]
    assert json.loads((out / "scores.json").read_text(encoding="utf-8")) == scores
    lines = (out / "sentences.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == rows and "我今天很忙。" in lines[0]
    markdown = (out / "scores.md").read_text(encoding="utf-8")
    assert markdown == format_markdown(scores)
    assert f"| bleu | {scores['bleu']['score']:.2f} | {scores['bleu']['signature']} |" in markdown
    assert f"| distinct2 | {scores['distinct2']['score']:.4f} |" in markdown
    blocker = tmp_path / "taken"
    blocker.write_text("keep me", encoding="utf-8")
    with pytest.raises(SeqsmithError, match="is a file"):
        write_outputs(scores, rows, blocker)
    assert blocker.read_text(encoding="utf-8") == "keep me"
    assert sorted(p.name for p in out.iterdir()) == ["scores.json", "scores.md", "sentences.jsonl"]


def test_aliases_and_tokenizer_check() -> None:
    assert check_metrics(["rouge", "distinct", "bleu", "rouge1"]) == [
        "rouge1", "rouge2", "rougeL", "rougeLsum", "distinct1", "distinct2", "bleu"
    ]  # fmt: skip
    with pytest.raises(SeqsmithError, match=r"unknown BLEU tokenizer 'spm'.*valid: 13a"):
        corpus_scores(["a"], [["a"]], ["bleu"], bleu_tokenize="spm")
    with pytest.raises(SeqsmithError, match="no metrics requested"):
        check_metrics([])


SHARED = Path(__file__).parents[2] / "shared" / "data"


@pytest.mark.may_skip
@pytest.mark.skipif(not (SHARED / "dialogsum").is_dir(), reason="needs ../shared/data/dialogsum")
def test_dialogsum_three_references_against_reference_tools(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (SHARED / "dialogsum" / "test.jsonl").open(encoding="utf-8")][:150]
    hyps = [row["summary1"] for row in rows]  # one annotator scored against the other two, and the dialogue
    refs = [[row["summary2"] for row in rows], [row["summary3"] for row in rows]]
    scores = corpus_scores(hyps, refs, ["bleu", "chrf", "ter", "rouge1", "rouge2", "rougeL"])
    paths = []
    for name, lines in (("hyp", hyps), ("ref2", refs[0]), ("ref3", refs[1])):
        paths.append(tmp_path / name)
        paths[-1].write_text("".join(line.replace("\n", " ") + "\n" for line in lines), encoding="utf-8")
    expected = sacrebleu_cli(paths[0], paths[1:], "--ter-case-sensitive")
    assert [scores[m]["score"] for m in ("bleu", "chrf", "ter")] == pytest.approx(expected, abs=1e-4)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    best = [scorer.score_multi([refs[0][i], refs[1][i]], h) for i, h in enumerate(hyps)]
    for name in ("rouge1", "rouge2", "rougeL"):
        assert scores[name]["score"] == pytest.approx(100 * sum(b[name].fmeasure for b in best) / len(best))
