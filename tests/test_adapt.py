"""`mats adapt`: memory-only adaptation leaves the base untouched and keeps its texts, the mixed
fine-tune draws both corpora in the configured ratio, the adapted folder loads, and bad input is one
line naming the file (or option) with nothing written."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from mats.adapt import AdaptConfig, AdaptError, Domain, adapt, mixed_sources, read_domain
from mats.commands import main
from mats.data.corpus import Corpus, CorpusSource, Sample, write_jsonl
from mats.pipeline import MATS


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def _siblings(parent: Path) -> list[str]:
    return sorted(p.name for p in Path(parent).iterdir())


@pytest.fixture(scope="module")
def base_copy(tiny_model, tmp_path_factory):
    """A private copy of the tiny model (tests must not depend on each other through it)."""
    import shutil
    dst = tmp_path_factory.mktemp("adapt-base") / "base"
    shutil.copytree(tiny_model, dst)
    return dst


def test_memory_only_keeps_the_base_and_its_texts(base_copy, tmp_path):
    before = _hashes(base_copy)
    report = adapt(AdaptConfig(out=str(tmp_path / "kitchen"), model=str(base_copy),
                               labels="kettle, typewriter, cuckoo clock, bicycle bell"), progress=False)
    assert _hashes(base_copy) == before  # byte-identical
    assert _siblings(tmp_path) == ["kitchen"]  # no temporary folder left behind
    out = tmp_path / "kitchen"
    assert report["how"] == "memory only" and report["memory"]["added"] > 0
    assert report["seconds"]["adapt"] < 60

    base, adapted = MATS.from_pretrained(base_copy), MATS.from_pretrained(out)  # round-trips
    m0, m1 = base.santa, adapted.santa
    assert m1.num_entries == m0.num_entries + report["memory"]["added"]
    assert m1.texts[:m0.num_entries] == m0.texts  # every base text kept, in order
    assert m1.config.gate_from == m0.num_entries and report["memory"]["gate_margin"] == AdaptConfig.gate
    assert any("kettle" in t for t in m1.texts[m0.num_entries:])
    # every base text is still the one retrieved for its own embedding
    idx, _ = m1.retrieve_indices(m0.bank, top_l=1, search="exact")
    assert (np.asarray(idx).reshape(-1) == np.arange(m0.num_entries)).all()
    # the weights are the base model's
    for name in ("mapper.safetensors", "lora/adapter_model.safetensors"):
        assert _hashes(out)[name] == before[name]
    card = (out / "README.md").read_text()
    assert "## Adaptation" in card and "memory only" in card and str(tmp_path) not in card
    assert "Added texts behind a gate" in card
    saved = json.loads((out / "adapt.json").read_text())
    assert saved["config"]["labels"].startswith("kettle") and saved["domain"]["labels"][0] == "kettle"


def test_mixed_fine_tune_draws_both_corpora_in_the_ratio(tmp_path):
    from mats.train.trainer import batch_rows, sampling_cdf, step_generators

    base_file = tmp_path / "base.jsonl"
    write_jsonl([Sample(f"The sound of thing {i}.", "caption", f"Thing {i}.") for i in range(500)], base_file)
    domain = Domain([Sample(f"A kettle {i}.", "caption", f"Kettle {i}.") for i in range(40)], [], "texts:x")
    for mix in (0.25, 0.5):
        cfg = AdaptConfig(out=str(tmp_path / "o"), texts="x", steps=10, mix=mix, base_corpus=[str(base_file)],
                          replay_rows=300)
        specs = mixed_sources(cfg, domain, {"model": {}}, tmp_path / f"work-{mix}")
        assert [round(s.weight, 6) for s in specs] == [mix, round(1 - mix, 6)]
        corpus = Corpus.load([CorpusSource(s.path, s.weight) for s in specs])
        assert np.bincount(corpus.source_of).tolist() == [40, 300]  # the base corpus subsampled
        train_rows, _ = corpus.split(16, 0)
        cdf = sampling_cdf(corpus, train_rows)
        drawn = np.concatenate([batch_rows(cdf, train_rows, step_generators(0, s, None)[0], 16)
                                for s in range(300)])
        share = float((corpus.source_of[drawn] == 0).mean())
        assert abs(share - mix) < 0.03, (mix, share)


def test_mixed_fine_tune_end_to_end(base_copy, tmp_path):
    before = _hashes(base_copy)
    base_file = tmp_path / "base.jsonl"
    write_jsonl([Sample(f"The sound of thing {i}.", "tags", f"thing {i}") for i in range(64)], base_file)
    texts = tmp_path / "domain.txt"
    texts.write_text("A kettle whistles.\n\nA typewriter clacks.\nA cuckoo clock calls.\n", encoding="utf-8")
    out = tmp_path / "out" / "ft"
    report = adapt(AdaptConfig(out=str(out), model=str(base_copy), texts=str(texts), steps=2, batch_size=4,
                               base_corpus=[str(base_file)], held_out=4), progress=False)
    assert _hashes(base_copy) == before
    assert _siblings(out.parent) == ["ft"]  # the work folder is gone once the folder is complete
    assert report["how"] == "mixed fine-tune"
    adapted = MATS.from_pretrained(out)
    assert "A kettle whistles." in adapted.santa.texts
    train = json.loads((out / "config.json").read_text())["train"]
    assert train["steps"] == 2 and [c["path"] for c in train["corpus"]] == ["adapt/domain.jsonl",
                                                                            "adapt/base-0-base.jsonl"]
    assert str(tmp_path) not in (out / "README.md").read_text()
    assert _hashes(out)["mapper.safetensors"] != before["mapper.safetensors"]  # it trained


def _bad(tmp_path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("case", ["empty", "repeated", "long", "not-utf8", "negative-steps", "empty-labels",
                                  "not-a-model", "no-source", "gate-out-of-range"])
def test_bad_input_is_one_line_and_writes_nothing(case, tiny_model, tmp_path, capsys):
    work = tmp_path / "in"
    work.mkdir()
    args = ["adapt", "--model", str(tiny_model), "--no-check", "--out", str(tmp_path / "out" / "x")]
    expect = None
    if case == "empty":
        f = _bad(work, "empty.txt", b"\n  \n")
        args += ["--texts", str(f)]
        expect = f"{f}: no descriptions"
    elif case == "repeated":
        f = _bad(work, "rep.txt", b"A kettle.\n" * 50)
        args += ["--texts", str(f)]
        expect = f"{f}: every line is the same description"
    elif case == "long":
        f = _bad(work, "long.txt", b"A kettle.\n" + b"x" * 100_000 + b"\n")
        args += ["--texts", str(f)]
        expect = f"{f}:2: a line of 100000 characters"
    elif case == "not-utf8":
        f = _bad(work, "latin.txt", b"A kettle.\nA caf\xe9 machine.\n")
        args += ["--texts", str(f)]
        expect = f"{f}:2: not UTF-8"
    elif case == "negative-steps":
        args += ["--labels", "kettle", "--steps", "-3"]
        expect = "--steps must be a whole number >= 0"
    elif case == "empty-labels":
        args += ["--labels", " , ,  "]
        expect = "--labels: no sound names"
    elif case == "not-a-model":
        args[2] = str(work)
        args += ["--labels", "kettle"]
        expect = f"{work} is not a MATS model folder"
    elif case == "gate-out-of-range":
        args += ["--labels", "kettle", "--gate", "2"]
        expect = "--gate must lie in [-1, 1]"
    elif case == "no-source":
        args += ["--corpus", str(work / "missing.jsonl")]
        expect = f"{work / 'missing.jsonl'}: no such file"
    rc = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("mats: error: ") and expect in err[0], err
    assert not (tmp_path / "out").exists()  # nothing written, not even the parent


def test_bad_corpus_rows_name_the_line(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"text": "A kettle.", "task": "caption", "answer": "A kettle."}\n'
                 '{"text": "A bell.", "task": "nope", "answer": "A bell."}\n', encoding="utf-8")
    with pytest.raises(AdaptError, match=rf"{f}:2: unknown task"):
        read_domain(AdaptConfig(out=str(tmp_path / "o"), corpus=str(f)))


@pytest.mark.parametrize("recluster", [False, True])
def test_with_texts_keeps_every_base_row(recluster):
    from mats.bridge.santa import SantaConfig, SantaMemory

    rng = np.random.default_rng(0)
    bank = rng.standard_normal((200, 16)).astype(np.float32)
    base = SantaMemory.build(bank, SantaConfig(clusters=8, top_l=4), texts=[f"t{i}" for i in range(200)])
    new = rng.standard_normal((5, 16)).astype(np.float32)
    mem = base.with_texts(new, ["n0", "n1", "t3", "n0", "n4"], recluster=recluster)  # t3 / n0 again: skipped
    assert mem.texts == base.texts + ["n0", "n1", "n4"] and base.num_entries == 200
    assert mem.num_entries == 203 and np.array_equal(mem.bank[:200], base.bank)
    if not recluster:  # the old rows keep their clusters
        assert np.array_equal(mem.assignments[:200], base.assignments)
        assert np.array_equal(mem.centroids, base.centroids)
    idx, _ = mem.retrieve_indices(base.bank, top_l=1, search="cluster")
    assert (np.asarray(idx).reshape(-1) == np.arange(200)).all()


@pytest.mark.parametrize("search", ["cluster", "exact", "ivf"])
def test_gated_texts_reach_only_the_queries_near_them(search, tmp_path):
    """Behind the gate, a query whose best base row beats every added row (by the margin) is
    answered by the base rows alone: the same retrieved rows and the same Santa output as the base
    memory; a query at an added text gets it. The gate survives save/load."""
    import torch

    from mats.bridge.santa import SantaConfig, SantaMemory
    from mats.clap import l2_normalize

    rng = np.random.default_rng(1)
    bank = l2_normalize(rng.standard_normal((300, 16))).astype(np.float32)
    base = SantaMemory.build(bank, SantaConfig(clusters=8, top_l=6, search=search, ivf_nprobe=2),
                             texts=[f"t{i}" for i in range(300)])
    new = l2_normalize(rng.standard_normal((4, 16))).astype(np.float32)
    margin = 0.05
    mem = base.with_texts(new, ["n0", "n1", "n2", "n3"], recluster=False, gate_margin=margin)
    assert mem.gated and mem.config.gate_from == 300 and mem.config.gate_margin == margin
    queries = l2_normalize(rng.standard_normal((200, 16)) + np.concatenate([new] * 50)).astype(np.float32)
    idx0, sims0 = base.retrieve_indices(queries, top_l=6)
    idx1, _ = mem.retrieve_indices(queries, top_l=6)
    best_new = (queries @ new.T).max(1)
    closed = best_new < sims0[:, 0] + margin
    assert 0 < closed.sum() < len(queries)  # both kinds of query occur
    assert np.array_equal(idx1[closed], idx0[closed])
    if search == "exact":  # an opened query's best row is an added one (cluster/ivf may not probe its list)
        assert (idx1[~closed][:, 0] >= 300).all()
    assert (idx1[~closed] >= 300).any()
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    z0, z1 = base.apply(queries, generator=gen()), mem.apply(queries, generator=gen())
    # the noise is drawn per retrieved row in the batch, so compare closed queries one by one
    for i in np.flatnonzero(closed)[:20]:
        a = base.apply(queries[i:i + 1], generator=gen())
        b = mem.apply(queries[i:i + 1], generator=gen())
        assert np.array_equal(a, b)
    assert not np.array_equal(z0, z1)
    # at an added text, that text comes first
    idx_at, _ = mem.retrieve_indices(new, top_l=1, search="exact")
    assert np.asarray(idx_at).reshape(-1).tolist() == [300, 301, 302, 303]
    again = SantaMemory.load(mem.save(tmp_path / "m"))
    assert again.config.gate_from == 300 and np.array_equal(again.retrieve_indices(queries, top_l=6)[0], idx1)
    # more texts for a gated memory join the added rows; the base rows stay as they were
    more = again.with_texts(new[:1] * -1, ["n4"], recluster=False)
    assert more.config.gate_from == 300 and more.num_entries == 305


def test_existing_output_and_foreign_work_folder_are_refused(tiny_model, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(AdaptError, match="already exists"):
        adapt(AdaptConfig(out=str(out), model=str(tiny_model), labels="kettle"), progress=False)
    assert _siblings(out) == ["keep.txt"]
    with pytest.raises(AdaptError, match="the base model's"):
        adapt(AdaptConfig(out=str(tiny_model), model=str(tiny_model), labels="kettle"), progress=False)
    # a fine-tune started with other options is not resumed into a different one
    work = tmp_path / ".ft.adapt-work"
    work.mkdir()
    (work / "adapt.json").write_text(json.dumps({"format": "mats-adapt", "config": {"steps": 99}}))
    with pytest.raises(AdaptError, match="other options"):
        adapt(AdaptConfig(out=str(tmp_path / "ft"), model=str(tiny_model), labels="kettle", steps=1,
                          base_corpus=[str(work / "adapt.json")]), progress=False)
    assert not (tmp_path / "ft").exists()


def test_corpus_with_a_huge_field_names_the_line(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"text": "A kettle.", "task": "caption", "answer": "A kettle."}) + "\n"
                 + json.dumps({"text": "x" * 100_000, "task": "caption", "answer": "A bell."}) + "\n",
                 encoding="utf-8")
    with pytest.raises(AdaptError, match=rf"{f}:2: field 'text' has 100000 characters"):
        read_domain(AdaptConfig(out=str(tmp_path / "o"), corpus=str(f)))


def test_labels_expand_into_captions_tags_and_qa_with_one_memory_text_per_name(tmp_path):
    d = read_domain(AdaptConfig(out=str(tmp_path / "o"), labels=" kettle ,typewriter,, kettle "))
    assert d.labels == ["kettle", "typewriter"]
    assert d.texts == ["The sound of kettle.", "The sound of typewriter."]
    assert {s.task for s in d.samples} == {"caption", "tags", "qa"}
    assert {s.answer for s in d.samples if s.task == "tags"} >= {"kettle", "typewriter"}
    again = read_domain(AdaptConfig(out=str(tmp_path / "o"), labels="kettle,typewriter"))
    assert [(s.text, s.answer) for s in again.samples] == [(s.text, s.answer) for s in d.samples]  # seeded


def test_before_and_after_on_a_labelled_folder_reach_the_report_and_the_card(base_copy, tmp_path):
    """Real clips of the dev split, scored through the evaluation runner with the base and the
    adapted model; the comparison is in the report, adapt.json and the model card."""
    import shutil

    from mats.data.sounds import fetch_sound_split, read_metadata

    src = fetch_sound_split("dev")
    rows = read_metadata(src)[:3]
    data = tmp_path / "mine"
    (data / "clips").mkdir(parents=True)
    for r in rows:
        shutil.copy(src / r["file"], data / "clips" / Path(r["file"]).name)
    (data / "metadata.jsonl").write_text("".join(json.dumps({"file": f"clips/{Path(r['file']).name}",
                                                             "labels": r["labels"], "synonyms": r["synonyms"]}) + "\n"
                                                 for r in rows))
    report = adapt(AdaptConfig(out=str(tmp_path / "o"), model=str(base_copy), labels="kettle,typewriter"),
                   evals={"mine": data}, progress=False)
    c = report["evaluation"]["mine"]
    assert c["n"] == 3 and 0 <= c["correct_before"] <= 3
    assert c["won"] - c["lost"] == c["correct_after"] - c["correct_before"]
    assert json.loads((tmp_path / "o" / "adapt.json").read_text())["evaluation"]["mine"] == c
    assert "mine: tag keyword acc. before -> after" in (tmp_path / "o" / "README.md").read_text()


def test_the_base_models_scores_are_remembered_by_content(base_copy, tmp_path, monkeypatch):
    """evaluate_cached: the second evaluation of the same model on the same clips is read back (same
    hits), and a different model folder or other clips is a different key."""
    import shutil

    from mats.adapt import evaluate_cached, evaluation_key
    from mats.data.sounds import fetch_sound_split, read_metadata

    src = fetch_sound_split("dev")
    rows = read_metadata(src)[:2]
    data = tmp_path / "two"
    (data / "clips").mkdir(parents=True)
    for r in rows:
        shutil.copy(src / r["file"], data / "clips" / Path(r["file"]).name)
    (data / "metadata.jsonl").write_text("".join(json.dumps({"file": f"clips/{Path(r['file']).name}",
                                                             "labels": r["labels"]}) + "\n" for r in rows))
    monkeypatch.setenv("MATS_HOME", str(tmp_path / "home"))
    model = MATS.from_pretrained(base_copy)
    first = evaluate_cached(model, data)
    assert "cached" not in first and len(list((tmp_path / "home" / "adapt-evaluations").iterdir())) == 1
    again = evaluate_cached(model, data)
    assert again["cached"] and again["hits"] == first["hits"] and again["files"] == first["files"]
    key = evaluation_key(model, data)
    assert evaluation_key(model, data, limit=1) != key
    (data / "metadata.jsonl").write_text((data / "metadata.jsonl").read_text().splitlines()[0] + "\n")
    assert evaluation_key(model, data) != key  # other clips
    adapted = adapt(AdaptConfig(out=str(tmp_path / "o"), model=str(base_copy), labels="kettle"), base=model,
                    progress=False)["_model"]
    assert evaluation_key(adapted, data) not in (key, evaluation_key(model, data))  # another folder


def test_the_gate_is_on_by_default_and_off_with_no_gate(tiny_model, tmp_path, capsys):
    for flag, gate in (([], AdaptConfig.gate), (["--gate", "0.02"], 0.02), (["--no-gate"], None)):
        out = tmp_path / f"o{len(flag)}{gate}"
        assert main(["adapt", "--model", str(tiny_model), "--no-check", "--labels", "kettle,typewriter",
                     "--out", str(out), *flag]) == 0
        cfg = json.loads((out / "santa" / "santa.json").read_text())["config"]
        assert cfg["gate_margin" if gate is not None else "gate_from"] == (gate if gate is not None else None)
        assert json.loads((out / "adapt.json").read_text())["memory"]["gate_margin"] == gate
