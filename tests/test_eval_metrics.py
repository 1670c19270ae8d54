"""Caption metrics against the stock pycocoevalcap pipeline, and free-text scoring (real MiniLM, real Java)."""

import math

import numpy as np
import pytest

from mats.evaluation import metrics as M
from mats.evaluation.scoring import (
    average_precision,
    choose_option,
    mean_average_precision,
    mentioned_labels,
    normalize_answer,
    score_task,
)

PREDS = [
    "A dog barks loudly while cars pass by.",
    "Rain is falling on a metal roof",
    "someone's talking; a door creaks",
    "Birds are chirping in the forest and wind blows.",
    "an engine idles and then revs up",
    "",
]
REFS = [
    ["A dog is barking.", "Dogs bark as vehicles drive by.", "a dog barks at passing cars"],
    ["Heavy rain falls on a roof.", "Rain pours down on metal", "rain hitting a tin roof"],
    ["A man talks and a door creaks open.", "People speak, door squeaks", "a person speaks while a door opens"],
    ["Birds chirp in a forest.", "Many birds sing while the wind blows", "bird calls and wind"],
    ["A car engine idles then accelerates.", "An engine revs", "a motor is running and revving"],
    ["Water trickles from a tap.", "water is running"],
]

need_java = pytest.mark.skipif(M.java_executable() is None, reason="java not installed")


class TinyEncoder:
    """A real (non-learned) encoder for structure tests: bag of hashed character trigrams."""

    name = "trigram-hash"

    def encode(self, texts):
        out = np.zeros((len(texts), 256))
        for i, t in enumerate(texts):
            t = f"  {t.lower()} "
            for k in range(len(t) - 2):
                out[i, hash(t[k:k + 3]) % 256] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def _stock_coco(preds, refs):
    """coco-caption's own pipeline: PTBTokenizer -> Bleu(4), Meteor, Rouge, Cider."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": r} for r in rs] for i, rs in enumerate(refs)})
    res = tok.tokenize({i: [{"caption": p}] for i, p in enumerate(preds)})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    # the same unmodified pycocoevalcap Meteor class; its kept instance saves a 5-10 s JVM start
    meteor, meteor_per = M.meteor_scorer().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, cider_per = Cider().compute_score(gts, res)
    return {"bleu_1": bleu[0], "bleu_2": bleu[1], "bleu_3": bleu[2], "bleu_4": bleu[3], "meteor": meteor,
            "rouge_l": rouge, "cider_d": cider}, {"meteor": meteor_per, "cider_d": list(cider_per)}


@need_java
def test_agrees_with_stock_pycocoevalcap_and_python_tokenizer():
    preds, refs = PREDS, REFS  # includes an empty prediction
    ours = M.caption_metrics(preds, refs, ["bleu", "meteor", "rouge_l", "cider_d"], tokenizer="ptb")
    stock, stock_per = _stock_coco(preds, refs)
    assert ours.tokenizer == "ptb"
    for k, v in stock.items():
        assert ours[k] == pytest.approx(float(v), abs=1e-9), k
    assert ours.per_item["cider_d"] == pytest.approx(stock_per["cider_d"], abs=1e-9)
    assert ours.per_item["meteor"] == pytest.approx(stock_per["meteor"], abs=1e-9)
    assert 0.3 < ours["cider_d"] < 3 and 0 < ours["meteor"] < 1

    # the Python tokenizer gives the PTB tokens on these captions, hence identical scores
    texts = PREDS + [r for rs in REFS for r in rs] + ["It's a high-pitched beep (3.5 kHz)!",
                                                      "kids' voices \"shouting\""]
    assert [M.simple_tokenize(t) for t in texts] == M.ptb_tokenize(texts)
    simple = M.caption_metrics(preds, refs, ["bleu", "meteor", "rouge_l", "cider_d"], tokenizer="simple")
    for k in stock:
        assert simple[k] == pytest.approx(ours[k], abs=1e-12), k


@need_java
def test_full_call_unavailable_reasons_and_determinism():
    enc = TinyEncoder()
    a = M.caption_metrics(PREDS, REFS, encoder=enc)
    b = M.caption_metrics(PREDS, REFS, encoder=enc)
    assert list(a) == list(M.ALL_METRICS)
    assert dict(a) == dict(b)
    assert a.per_item["cider_d"][-1] == 0.0 and a.per_item["sbert_sim"][-1] == 0.0  # empty prediction
    assert len(a.per_item["bleu_4"]) == len(PREDS)
    assert a["fense"] is None and "echecker" in a.unavailable["fense"]
    ok, why = M.spice_status()
    if not ok:  # this machine: CoreNLP 3.6.0 jars cannot be had offline
        assert a["spice"] is None and a["spider"] is None
        assert "stanford-corenlp-3.6.0" in a.unavailable["spice"] and "SPICE" in a.unavailable["spider"]
    else:
        assert a["spider"] == pytest.approx((a["cider_d"] + a["spice"]) / 2)
    for m in ("bleu_1", "meteor", "rouge_l", "cider_d", "sbert_sim"):
        assert isinstance(a[m], float) and m not in a.unavailable and m in a.implementations
    # one clip: CIDEr-D's idf is log(1/1) = 0, as in coco-caption
    one = M.caption_metrics(PREDS[:1], REFS[:1], ["cider", "bleu_1"], tokenizer="simple")
    assert one["cider_d"] == 0.0 and one["bleu_1"] > 0.5


def test_sbert_sim_with_real_minilm():
    preds = ["a dog is barking", "a dog is barking", "a violin plays a slow melody"]
    refs = [["a dog is barking"], ["a dog barks loudly", "dogs barking"], ["a dog barks loudly", "dogs barking"]]
    r = M.caption_metrics(preds, refs, ["sbert_sim"])
    per = r.per_item["sbert_sim"]
    assert per[0] == pytest.approx(1.0, abs=1e-5)
    assert per[1] > 0.7 > per[2]
    assert r["sbert_sim"] == pytest.approx(np.mean(per))
    assert "MiniLM" in r.implementations["sbert_sim"]


def test_input_validation_and_names():
    with pytest.raises(ValueError, match="2 predictions but 1"):
        M.caption_metrics(["a", "b"], [["a"]])
    with pytest.raises(TypeError):
        M.caption_metrics(["a"], ["a dog"])
    with pytest.raises(ValueError, match="empty"):
        M.caption_metrics(["a"], [[]])
    with pytest.raises(ValueError, match="unknown caption metric"):
        M.caption_metrics(["a"], [["a"]], ["bertscore"])
    assert M.expand_metric_names(["bleu", "cider", "CIDEr-D"]) == ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider_d"]


# ----------------------------------------------------------------------------- scoring
def test_label_mentions_and_normalisation():
    labels = ["dog", "car", "car_horn", "crying_baby", "footsteps", "siren", "glass_breaking"]
    assert mentioned_labels("Two DOGS barking and a car-horn.", labels) == ["dog", "car_horn"]
    assert mentioned_labels("a footstep, then sirens wail", labels) == ["footsteps", "siren"]
    assert mentioned_labels("a hotdog stand", labels) == []            # word boundaries
    assert mentioned_labels("an infant wails", labels, {"crying_baby": ["infant"]}) == ["crying_baby"]
    assert mentioned_labels("crying babies", labels) == ["crying_baby"]
    assert normalize_answer("The  Dog, barked!") == "dog barked"


def test_average_precision_matches_hand_computation():
    # ranking: +, -, +, -  -> AP = (1/1 + 2/3) / 2
    assert average_precision(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1])) == pytest.approx(5 / 6)
    # ties count as one threshold (scikit-learn's convention): all tied -> precision 2/4
    assert average_precision(np.array([1, 0, 1, 0]), np.ones(4)) == pytest.approx(0.5)
    m, aps = mean_average_precision(np.array([[1, 0], [0, 0]]), np.array([[0.2, 0.1], [0.1, 0.9]]))
    assert m == 1.0 and math.isnan(aps[1])


def test_classification_tagging_qa_with_real_minilm():
    items = [{"id": "a", "labels": ["dog"]}, {"id": "b", "labels": ["rain"]},
             {"id": "c", "labels": ["church_bells"]}, {"id": "d", "labels": ["dog"]}]
    preds = ["A dog is barking.", "water drops falling from the sky during a storm",
             "bells ringing from a church tower", "a cat meows"]
    out = score_task("classification", items, preds, labels=["dog", "rain", "church_bells", "cat"])
    assert out["task"] == "classify" and out["n"] == 4
    rows = out["per_item"]
    assert rows[0]["label_string"] == "dog" and rows[1]["label_string"] is None
    assert rows[1]["label_embedding"] == "rain" and rows[2]["label"] == "church_bells"
    assert out["metrics"]["accuracy"] == 0.75
    assert out["metrics"]["accuracy_string"] == 0.25
    assert out["metrics"]["accuracy_embedding"] >= 0.5

    tag_items = [{"labels": ["dog", "speech"]}, {"labels": ["rain", "thunder"]}, {"labels": ["speech"]}]
    tag_preds = ["dog, speech", "rain and thunder", "a man is talking"]
    t = score_task("tag", tag_items, tag_preds)
    assert t["metrics"]["map"] == pytest.approx(1.0)
    assert t["metrics"]["precision_string"] == 1.0 and t["metrics"]["recall_string"] == pytest.approx(0.8)
    assert set(t["per_class_ap"]) == {"dog", "speech", "rain", "thunder"}

    qa_items = [
        {"question": "Is a dog barking?", "answer": "yes"},
        {"question": "What animal is heard?", "answer": "dog"},
        {"question": "Which instrument?", "answer": "piano", "choices": ["guitar", "piano", "drums", "violin"]},
        {"question": "Which instrument?", "answer": "violin", "choices": ["guitar", "piano", "drums", "violin"]},
        {"question": "What is heard?", "answer": "a car", "choices": ["a car", "a bird"]},
    ]
    qa_preds = ["Yes, a dog barks.", "The dog.", "(B)", "a bowed string instrument, like a fiddle", "a bird."]
    q = score_task("qa", qa_items, qa_preds)
    r = q["per_item"]
    assert [x["correct"] for x in r] == [True, True, True, True, False]
    assert [x["exact_match"] for x in r] == [False, True, False, False, False]
    assert r[3]["choice_string"] is None and r[3]["choice_embedding"] == "violin"
    assert q["metrics"]["accuracy"] == pytest.approx(0.8)
    assert choose_option("Answer: C. drums", ["guitar", "piano", "drums"]) == "drums"


@need_java
def test_score_task_caption_per_item():
    items = [{"id": str(i), "captions": rs} for i, rs in enumerate(REFS[:3])]
    out = score_task("caption", items, PREDS[:3], metrics=["bleu_4", "cider_d", "meteor"], encoder=TinyEncoder())
    assert set(out["metrics"]) == {"bleu_4", "cider_d", "meteor"}
    assert [row["id"] for row in out["per_item"]] == ["0", "1", "2"]
    assert all("cider_d" in row and "meteor" in row for row in out["per_item"])
    with pytest.raises(ValueError, match="unknown task"):
        score_task("summarise", items, PREDS[:3])
