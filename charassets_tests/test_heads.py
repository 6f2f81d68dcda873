"""Embedders, record vectors, heads and their MLflow lifecycle."""

from __future__ import annotations

import json

import dagster as dg
import mlflow
import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from charassets.definitions import build_definitions
from charassets.domain.demo import generate
from charassets.domain.lake import Lake, partition_batches
from charassets.domain.models.embedders import HashingEmbedder, TransformersEmbedder, make_embedder
from charassets.domain.models.features import TagVectorCache, compact_vectors, pool, record_vector_column, vector_matrix
from charassets.domain.models.heads import NEVER, choose_class_thresholds, masked_features, stable_split
from charassets.domain.models.registry import model_name
from charassets.domain.models.sampling import sample_training_data
from charassets.domain.models.training import class_bounds, field_candidates, merge_candidates, sample_hashes, with_sample_hash
from charassets.runner import heads_metadata, run_partitions, train

WORDS = ["long", "short", "hair", "blue", "eyes", "red", "girl", "boy", "smile", "dress", "hat", "white", "black"]


def _tiny_tokenizer(path):
    from transformers import BertTokenizer

    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return BertTokenizer(str(vocab))


def test_hashing_embedder_is_deterministic_and_normalised():
    e = HashingEmbedder(64)
    a, b = e.encode(["long_hair", "blue_eyes"]), e.encode(["long_hair", "blue_eyes"])
    assert a.shape == (2, 64) and a.dtype == np.float32 and np.allclose(a, b)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0)
    assert e.encode(["long_hair"]) @ e.encode(["long hair"]).T > 0.99  # underscores are spaces


def test_transformers_embedder_loads_a_saved_text_model(tmp_path):
    from transformers import BertConfig, BertModel

    _tiny_tokenizer(tmp_path).save_pretrained(tmp_path)
    BertModel(BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24)).save_pretrained(
        tmp_path
    )
    e = make_embedder(f"hf:{tmp_path}")
    out = e.encode(["long hair", "blue eyes", "long hair"])
    assert out.shape == (3, 16) and e.dim == 16 and np.allclose(out[0], out[2], atol=1e-5)


def test_transformers_embedder_uses_the_text_tower_of_clip(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    _tiny_tokenizer(tmp_path).save_pretrained(tmp_path)
    config = CLIPConfig(
        text_config={
            "vocab_size": 32,
            "hidden_size": 16,
            "intermediate_size": 24,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 32,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 24,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 16,
        },
        projection_dim=8,
    )
    CLIPModel(config).save_pretrained(tmp_path)
    e = TransformersEmbedder(str(tmp_path))
    assert e.dim == 8 and e._loaded is None  # the size is read from config.json: no model loaded for it
    out = e.encode(["red hat", "white dress"])
    assert out.shape == (2, 8) and e.dim == 8


def test_minilm_works_offline():
    e = make_embedder("minilm")
    assert e.dim == 384 and e._loaded is None  # a run that only needs the size (applying heads) loads no model
    out = e.encode(["long_hair", "very_long_hair", "red_eyes"])
    assert out.shape == (3, 384) and e.id == "all-MiniLM-L6-v2"
    assert out[0] @ out[1] > out[0] @ out[2]  # related tags are closer


def test_bundled_tag_vectors_are_what_minilm_computes_and_spare_loading_it(tmp_path):
    from charassets.domain.demo import embedded_feature_tags
    from charassets.domain.lake import Lake
    from charassets.domain.models.features import TAG_VECTOR_SCHEMA, TAG_VECTORS, bundled_tag_vectors, load_tag_cache

    e = make_embedder("minilm")
    seed = bundled_tag_vectors(e.id)
    assert seed is not None and bundled_tag_vectors("hashing-64") is None  # only the embedder they were computed with
    assert sorted(seed.get_column("tag").to_list()) == embedded_feature_tags()  # `make vocab` rewrites both together
    sample = seed.sort("tag").gather_every(40)  # 13 tags, re-encoded by the real model
    fresh = e.encode(sample.get_column("tag").to_list())
    assert np.abs(vector_matrix(sample.get_column("vector")) - fresh).max() < 1e-5  # padding within a batch moves the last bits
    # a lake whose records use only those tags encodes nothing and never loads the model
    lake, cold = Lake(str(tmp_path / "lake")), make_embedder("minilm")
    cache = load_tag_cache(lake, cold)
    assert cache.ensure(["long_hair", "red_eyes", "sailor", "1girl", "red_eyes"]) == 0 and cold._loaded is None
    # ... and the vectors it used are the rows to save in the lake (once), so its table holds every vector its records use
    assert sorted(cache.new_frame().get_column("tag").to_list()) == ["1girl", "long_hair", "red_eyes", "sailor"]
    assert cache.ensure(["long_hair"]) == 0 and cache.new_frame().height == 4
    # the lake's own rows come first: a vector cached there is the one used
    lake.append(
        *TAG_VECTORS, pl.DataFrame({"embedder": [cold.id], "tag": ["long_hair"], "vector": [[0.5] * 384]}, schema=TAG_VECTOR_SCHEMA)
    )
    assert load_tag_cache(lake, cold).matrix[load_tag_cache(lake, cold).index["long_hair"]].max() == 0.5


def test_masking_equals_pooling_the_remaining_tags(embedded_vocabulary):
    cache = TagVectorCache(HashingEmbedder(32))
    full, sums = pool(pl.Series([["1girl", "blonde_hair", "hatsune_miku", "smile"]]), cache, embedded_vocabulary)
    rest, _ = pool(pl.Series([["1girl", "hatsune_miku", "smile"]]), cache, embedded_vocabulary)
    weights = cache.weights(embedded_vocabulary)
    assert np.allclose(masked_features(full, sums, [["blonde_hair"]], cache, weights), rest, atol=1e-6)
    only, osums = pool(pl.Series([["blonde_hair"]]), cache, embedded_vocabulary)
    assert np.allclose(masked_features(only, osums, [["blonde_hair"]], cache, weights), 0.0)  # nothing left
    # a batch: records without evidence (or with tags never pooled) keep their vector
    batch = pl.Series([["1girl", "smile"], ["1girl", "blonde_hair", "hatsune_miku", "smile"], ["blonde_hair"], []])
    vecs, bsums = pool(batch, cache, embedded_vocabulary)
    masked = masked_features(vecs, bsums, [[], ["blonde_hair"], ["blonde_hair"], ["not_a_cached_tag"]], cache, weights)
    assert np.allclose(masked[0], vecs[0]) and np.allclose(masked[3], vecs[3])
    assert np.allclose(masked[1], rest[0], atol=1e-6) and np.allclose(masked[2], 0.0)


def test_record_vectors_round_trip_as_float16_bytes_through_delta(tmp_path, embedded_vocabulary):
    """features/embeddings stores float16 bytes: a Delta round trip, a sliced or multi-chunk column and masking agree with float32."""
    from charassets.domain.lake import Lake

    cache = TagVectorCache(HashingEmbedder(48))
    tags = pl.Series([["1girl", "blonde_hair", "smile"], ["1boy", "black_hair"], [], ["1girl", "red_eyes", "hatsune_miku"]] * 5)
    vecs, sums = pool(tags, cache, embedded_vocabulary)
    col = record_vector_column(vecs)
    assert col.dtype == pl.Binary and col.len() == 20 and (col.bin.size() == 48 * 2).all()
    lake = Lake(str(tmp_path))
    frame = pl.DataFrame({"record_id": [str(i) for i in range(20)], "partition": ["p0"] * 10 + ["p1"] * 10}).with_columns(col)
    lake.write_partitions("features", "embeddings", frame.head(10), ["p0"])
    lake.write_partitions("features", "embeddings", frame.tail(10), ["p1"])
    back = lake.read("features", "embeddings").sort("record_id", maintain_order=True)
    back = frame.select("record_id").join(back, on="record_id", how="left", maintain_order="left")
    m = vector_matrix(back.get_column("vector"))
    assert m.dtype == np.float32 and m.shape == vecs.shape
    assert np.allclose(m, vecs, atol=1e-3, rtol=1e-3)
    assert np.array_equal(vector_matrix(col.slice(3, 4)), m[3:7])  # an offset into the buffers
    assert np.array_equal(vector_matrix(pl.concat([col.slice(0, 5), col.slice(5, 15)], rechunk=False)), m)
    assert vector_matrix(record_vector_column(vecs[:0])).shape == (0, 0)
    few = compact_vectors(back.filter(pl.col("record_id").is_in(["3", "17"])))  # its own bytes, the same values
    assert np.array_equal(vector_matrix(few.get_column("vector")), m[[3, 17]])
    weights = cache.weights(embedded_vocabulary)
    exact = masked_features(vecs, sums, [["blonde_hair"]] * 20, cache, weights)
    assert np.allclose(masked_features(m, sums, [["blonde_hair"]] * 20, cache, weights), exact, atol=5e-3)
    with pytest.raises(ValueError, match="have no vector"):
        vector_matrix(pl.Series([None, b"\x00\x00"], dtype=pl.Binary))


def test_split_is_stable_and_stratified():
    ids = [f"s:{i}" for i in range(1000)]
    labels = ["a" if i % 10 else "b" for i in range(1000)]
    val = stable_split(ids, labels)
    assert abs(val[np.array(labels) == "b"].mean() - 0.2) < 0.06 and abs(val[np.array(labels) == "a"].mean() - 0.2) < 0.03
    tiny = stable_split(["x:1", "x:2"] + ids, ["rare", "rare"] + labels)
    assert tiny[:2].sum() >= 1  # even a two-record class is measured
    grown = stable_split(ids + [f"s:{i}" for i in range(1000, 1500)], labels + ["a"] * 500)
    assert (grown[:1000] == val).all()  # no record changes side as data grows


def test_class_thresholds_reach_target_precision_or_never_fire():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.34, 1.0, 2000)
    y = rng.integers(0, 3, 2000)
    pred = np.where(rng.uniform(size=2000) < conf, y, (y + 1) % 3)  # right with probability = confidence
    proba = np.full((2000, 3), 0.0)
    proba[np.arange(2000), pred] = conf
    thresholds, precisions = choose_class_thresholds(proba, y, 0.9)
    for k, (t, p) in enumerate(zip(thresholds, precisions, strict=True)):
        fired = (proba.argmax(1) == k) & (proba.max(1) >= t)
        assert 0.7 < t < 1 and p >= 0.9 and (y[fired] == k).mean() >= 0.9
    # a class that is never right enough, or too rare to measure, gets no threshold: it never fires
    noise = rng.dirichlet([1, 1, 1], 2000)
    thresholds, precisions = choose_class_thresholds(noise, rng.integers(0, 3, 2000), 0.9)
    assert thresholds == [NEVER] * 3 and precisions == [0.0] * 3
    rare = np.zeros((2000, 3))
    rare[:, 0], rare[:5, 0], rare[:5, 2] = 1.0, 0.0, 1.0  # class 2: right 5 times out of 5, too few to trust
    assert choose_class_thresholds(rare, np.where(np.arange(2000) < 5, 2, 0), 0.9)[0][2] == NEVER
    # multi-label: the same rule per column
    multi = choose_class_thresholds(rng.uniform(size=(500, 2)), (rng.uniform(size=(500, 2)) < 0.5).astype(float), 0.9)
    assert multi[0] == [NEVER, NEVER]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("heads")
    sources = generate(root / "demo", n=6000, rows_per_partition=2000)
    env = {"CHARASSETS_SOURCES": str(sources), "CHARASSETS_LAKE": str(root / "lake"), "CHARASSETS_HOME": str(root)}
    defs = build_definitions(env)
    instance = dg.DagsterInstance.ephemeral()
    run_partitions(defs, instance, log_level="WARNING")
    # the fields a head may fill, and a list field (trained on request only) for the multi-label path
    fields = ["Gender", "Hair Color", "Eye Color", "Hair Length", "Hair Style"]
    first = train(defs, instance, log_level="WARNING", run_config={"ops": {"models__attribute_heads": {"config": {"fields": fields}}}})
    return defs, instance, first


@pytest.fixture
def store(trained):
    """The model store the heads were logged to, bound to its URI (the pipeline sets no process-wide MLflow URI)."""
    return trained[0].resources["mlflow_store"].store()


def _champion_pyfunc(store, field_key: str):
    """The registered champion as MLflow serves it (its fluent API pointed at the store for this call only)."""
    with store.bound():
        return mlflow.pyfunc.load_model(f"models:/{model_name(field_key)}@champion")


def test_rematerializing_unchanged_partitions_embeds_nothing(trained):
    defs, instance, _ = trained
    lake = defs.resources["lake"].lake()
    before = lake.read("features", "embeddings").sort("record_id")
    run_partitions(defs, instance, log_level="WARNING")
    counts = lake.partition_counts("features", "embeddings")

    def latest(asset: str, key: str) -> dict:  # each partition's materialization carries that partition's own figures
        (mat,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset.split("/")), asset_partitions=[key]), limit=1
        ).records
        return mat.asset_materialization.metadata

    for key, n in counts.items():
        md = latest("features/embeddings", key)
        assert md["vectors_computed"].value == 0 and md["tags_not_cached"].value == 0
        assert md["vectors_reused"].value == n and md["dagster/row_count"].value == n
        assert latest("features/tag_vectors", key)["tags_encoded"].value == 0  # every tag was cached already
    assert len(counts) > 1 and sum(counts.values()) == before.height
    assert lake.read("features", "embeddings").sort("record_id").equals(before)


def test_heads_are_logged_registered_and_champions(trained, store):
    defs, _, first = trained
    md = heads_metadata(first)
    macro, baselines = md["macro_f1"].value, md["baselines"].value
    assert {"Gender", "Hair Color", "Eye Color", "Hair Length"} <= set(macro)
    for name in ("Gender", "Hair Color", "Eye Color", "Hair Length", "Hair Style"):
        assert macro[name] > baselines[name]["majority"], name  # better than always answering the majority class
    assert all(ev.passed for ev in first.get_asset_check_evaluations())  # first versions become champions
    rows = store.versions("hair_color")
    assert rows[0]["champion"] and rows[0]["metrics"]["macro_f1"] == pytest.approx(macro["Hair Color"], abs=1e-4)
    n_partitions = defs.resources["lake"].lake().read("raw", "source_partitions").height
    assert rows[0]["tags"]["embedder"] == "all-MiniLM-L6-v2" and int(rows[0]["tags"]["partitions"]) == n_partitions
    client = store.client
    run = client.get_run(rows[0]["run_id"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/recall_vs_support.png", "evaluation/confusion_normalized.png", "evaluation/report.json"} <= artifacts
    head = store.load_head(rows[0]["run_id"])  # safetensors, no pickle
    assert head.classes and len(head.class_thresholds) == len(head.classes) and len(head.class_precision) == len(head.classes)
    assert all(p >= 0.9 for t, p in zip(head.class_thresholds, head.class_precision, strict=True) if t < NEVER)
    model = _champion_pyfunc(store, "hair_color")
    out = model.predict(np.zeros((2, head.dim), dtype=np.float32))
    assert list(out.columns) == ["value", "confidence", "above_threshold"] and out["value"].iloc[0] in head.classes
    # a list attribute gets a multi-label head: one threshold per class, lists out
    style_run = store.versions("hair_style")[0]["run_id"]
    style = store.load_head(style_run)
    assert style.multilabel and len(style.class_thresholds) == len(style.classes) >= 5
    styles = _champion_pyfunc(store, "hair_style").predict(np.zeros((2, style.dim), dtype=np.float32))
    assert all(isinstance(v, list) and set(v) <= set(style.classes) for v in styles["value"])


def test_training_leaves_no_process_wide_mlflow_state(store):
    """Heads are logged through the store's own client: MLflow's default URI and the environment are left as they were."""
    import os

    assert mlflow.get_tracking_uri() != store.tracking_uri and "MLFLOW_TRACKING_URI" not in os.environ


def test_an_identical_retrain_registers_nothing_and_fails_no_check(trained, store):
    defs, instance, _ = trained
    before = {k: len(store.versions(k)) for k in ("hair_color", "gender", "hair_style")}
    fields = ["Gender", "Hair Color", "Eye Color", "Hair Length", "Hair Style"]
    again = train(defs, instance, log_level="WARNING", run_config={"ops": {"models__attribute_heads": {"config": {"fields": fields}}}})
    assert all(ev.passed for ev in again.get_asset_check_evaluations())
    assert {k: len(store.versions(k)) for k in before} == before
    md = again.asset_materializations_for_node("models__attribute_heads")[0].metadata
    assert {"Hair Color", "Gender", "Hair Style"} <= set(md["unchanged"].value)


def test_a_worse_challenger_does_not_take_champion(trained, store, recwarn):
    defs, instance, _ = trained
    champion_before = store.champion("hair_color")
    worse = {"ops": {"models__attribute_heads": {"config": {"epochs": 1, "lr": 1e-5, "hidden": 0, "fields": ["Hair Color"]}}}}
    result = train(defs, instance, log_level="WARNING", run_config=worse)
    assert not [str(w.message) for w in recwarn if "type hints" in str(w.message)]  # logging a head version warns nothing
    (gate,) = [
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "challenger_beats_champion" and e.asset_key == dg.AssetKey(["models", "attribute_heads"])
    ]
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.WARN
    assert store.champion("hair_color") == champion_before
    newest = store.versions("hair_color")[0]
    assert not newest["champion"] and "champion kept" in newest["tags"]["gate_decision"]


def test_models_compare_prints_versions_side_by_side(trained, store, monkeypatch):
    from click.testing import CliRunner

    from charassets.cli import main

    defs, _, _ = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", defs.resources["mlflow_store"].tracking_uri)
    result = CliRunner().invoke(main, ["models", "compare", "hair color"])  # names match in any case
    assert result.exit_code == 0, result.output
    assert "char-rule  baseline" in result.output and "firing" in result.output  # the columns are explained
    unknown = CliRunner().invoke(main, ["models", "compare", "hair colour"])
    assert unknown.exit_code == 1 and "attributes are: Age" in unknown.output and "Traceback" not in unknown.output
    lines = result.output.strip().splitlines()
    assert lines[0].split()[:4] == ["model", "ver", "champ", "macro-F1"]
    rows = [line for line in lines[1:] if line.startswith("charassets-head-hair-color")]
    assert all("nan" not in r and (" yes " in r or " no " in r) for r in rows)  # fills: yes or no, never a NaN threshold
    assert len(rows) == len(store.versions("hair_color")) and sum("*" in r.split()[2] for r in rows) == 1


def test_a_full_build_writes_the_final_table_once_and_helpers_change_nothing_in_it(tmp_path, monkeypatch):
    """A full build writes the final table once, with the new models. With ``helpers=2`` (the demo's in-process
    build) the heads' fits and the report's scans and charts go to two spawned processes, the model store's tables
    are created by one of them, and every table, head and figure is the one a build without helpers makes."""
    from concurrent.futures import ProcessPoolExecutor

    import charassets.domain.models.fitting as fitting
    import charassets.domain.report.figures as report_figures
    from charassets.runner import build_everything

    sources = generate(tmp_path / "demo", n=4000, rows_per_partition=2000)
    seen: dict[str, list] = {"fits": [], "report": []}
    for module, key in ((fitting, "fits"), (report_figures, "report")):
        monkeypatch.setattr(module, "lent", lambda key=key, lent=module.lent: seen[key].append(lent()) or seen[key][-1])
    built = {}
    for helpers in (0, 2):
        home = tmp_path / f"home{helpers}"
        env = {"CHARASSETS_SOURCES": str(sources), "CHARASSETS_LAKE": str(home / "lake"), "CHARASSETS_HOME": str(home)}
        defs = build_definitions(env)
        with dg.DagsterInstance.ephemeral() as instance:
            build = build_everything(defs, instance, log_level="WARNING", helpers=helpers)
        lake = defs.resources["lake"].lake()
        n_partitions = lake.read("raw", "source_partitions").height
        # one commit per partition: the table was not written before training and again after it
        assert lake.table_stats("marts", "character_attributes")["version"] == n_partitions - 1
        assert not build.failed_checks and set(build.seconds) == {"prepare_s", "train_s", "publish_s", "report_s"}
        report = json.loads((home / "lake" / "reports" / "dataset_report.json").read_text())
        for where_and_when in ("generated_at", "lake"):
            report.pop(where_and_when)
        built[helpers] = (
            lake.read("marts", "character_attributes").sort("record_id"),
            heads_metadata(build.trained)["macro_f1"].value,
            report,
            (home / "mlflow.db").is_file(),
        )
    pools = {key: {type(pool) for pool, _ in calls} for key, calls in seen.items()}
    assert pools == {"fits": {type(None), ProcessPoolExecutor}, "report": {type(None), ProcessPoolExecutor}}
    assert all(width == 2 for calls in seen.values() for pool, width in calls if pool is not None)
    (table0, f1_0, report0, store0), (table2, f1_2, report2, store2) = built[0], built[2]
    assert store0 and store2
    assert f1_0 == f1_2 and len(f1_0) >= 3
    assert_frame_equal(table0, table2)
    assert report0 == report2
    sources_used = table0.select(pl.col("hair_color").struct.field("source")).to_series().value_counts()
    assert {"tags", "profile"} <= set(sources_used[:, 0].drop_nulls().to_list())


def test_heads_fitted_in_a_lent_pool_stop_with_the_caller():
    """``each_head`` with a lent pool: the costliest start first and each result comes as it finishes; closed early,
    the heads not started never start, and the ones in flight finish before it returns (no fit outlives the pool).
    A thread pool stands in for the build's workers."""
    import threading
    import time as _time
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import closing

    from charassets.domain.lending import lending
    from charassets.domain.models.fitting import each_head, fit

    started, finished, lock = [], [], threading.Lock()

    def slow_square(i: int) -> int:
        with lock:
            started.append(i)
        _time.sleep(0.05 * (1 + i % 3))
        with lock:
            finished.append(i)
        return i * i

    with ThreadPoolExecutor(2) as workers, lending(workers, width=2):
        assert sorted(each_head(lambda i: fit(slow_square, i), range(6))) == [(i, i * i) for i in range(6)]
        # as they finish: a slow first head comes after two quick ones
        durations = {0: 0.4, 1: 0.01, 2: 0.01}
        assert list(each_head(lambda i: fit(lambda j: _time.sleep(durations[j]) or j, i), range(3))) == [(1, 1), (2, 2), (0, 0)]
        started.clear(), finished.clear()
        # costs 0, 1, 2, 0, 1, 2: the two costliest start first, ties in the items' order
        assert sorted(each_head(lambda i: fit(slow_square, i), range(6), cost=lambda i: i % 3)) == [(i, i * i) for i in range(6)]
        assert sorted(started[:2]) == [2, 5] and sorted(started[2:4]) == [1, 4] and sorted(started[4:]) == [0, 3]
        started.clear(), finished.clear()
        with closing(each_head(lambda i: fit(slow_square, i), range(20))) as heads:
            assert next(heads) in {(0, 0), (1, 1)}
        assert sorted(started) == sorted(finished) and len(started) < 20  # in flight finished; the rest cancelled
        settled = len(started)
        _time.sleep(0.2)
        assert len(started) == settled
    # nothing lent: fitted in this process, handed over in the items' order
    assert list(each_head(lambda i: fit(slow_square, i), range(3), cost=lambda i: i)) == [(0, 0), (1, 1), (2, 4)]


def test_a_heads_own_generator_draws_what_torchs_global_one_would():
    """Seeded alike, a head built on its own generator starts from the weights torch's own initialisation gives, and
    its dropout masks are the ones ``nn.Dropout`` draws from the global generator: heads trained before are the same."""
    import torch

    from charassets.domain.models.heads import AttributeHead, HeadConfig

    for config in (HeadConfig(hidden=16, dropout=0.3), HeadConfig(hidden=0)):
        torch.manual_seed(3)
        torchs = AttributeHead(24, 5, config)
        own = AttributeHead(24, 5, config, torch.Generator().manual_seed(3))
        assert all(torch.equal(a, b) for a, b in zip(torchs.state_dict().values(), own.state_dict().values(), strict=True))
        if config.hidden:
            x = torch.randn(64, 24)
            torch.manual_seed(11)
            expected = torchs.train()(x)
            own.net[2].generator.manual_seed(11)
            assert torch.equal(own.train()(x), expected)
            assert not torch.equal(own.eval()(x), own.train()(x))  # dropout on while training, off in eval
    everything = AttributeHead(24, 5, HeadConfig(hidden=16, dropout=1.0), torch.Generator().manual_seed(3)).train()
    assert torch.equal(everything.net[:3](torch.randn(8, 24)), torch.zeros(8, 16))  # as nn.Dropout(1.0): zeros, not NaN


def test_heads_fitted_side_by_side_in_threads_equal_heads_fitted_one_after_another():
    """A fit draws from its own seeded generator (initial weights, dropout, batch order), not torch's global one that
    every thread shares: heads fitted concurrently (``each_head`` with nothing lent: threads here) have exactly the
    weights of the same heads fitted alone, single- and multi-label, while the global generator is drawn from beside."""
    import threading

    import torch

    from charassets.domain.models.fitting import each_head
    from charassets.domain.models.heads import HeadConfig, train_head, train_multilabel_head

    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 32)).astype(np.float32)
    labels = [str(v) for v in rng.integers(0, 4, len(x))]
    sets = [[str(v) for v in rng.choice(5, rng.integers(0, 3), replace=False)] for _ in range(len(x))]
    configs = [HeadConfig(hidden=16, epochs=3, batch_size=64, seed=s) for s in (0, 1)] + [HeadConfig(hidden=0, epochs=2, batch_size=64)]
    jobs = [(kind, c) for kind in ("single", "multi") for c in configs]

    def fitted(job):
        kind, config = job
        head = train_head("f", x, labels, config) if kind == "single" else train_multilabel_head("f", x, sets, config)
        return head.module.state_dict()

    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = [fitted(job) for job in jobs]
    finally:
        torch.set_num_threads(threads_before)
    stop = threading.Event()

    def draw_from_the_global_generator():
        while not stop.is_set():
            torch.rand(1000)

    noise = threading.Thread(target=draw_from_the_global_generator)
    noise.start()
    try:
        torch.set_num_threads(2)  # each_head fits two at a time, one torch thread each
        pairs = list(each_head(fitted, jobs, cost=lambda job: job[1].epochs))  # the cheapest last, handed over in order
        assert [job for job, _ in pairs] == jobs
        side_by_side = [weights for _, weights in pairs]
        assert torch.get_num_threads() == 2  # restored

        def fails(job):
            raise ValueError("no such head")

        with pytest.raises(ValueError, match="no such head"):
            list(each_head(fails, jobs))
        assert torch.get_num_threads() == 2  # restored after a failed fit too
    finally:
        stop.set()
        noise.join()
        torch.set_num_threads(threads_before)
    for a, b in zip(alone, side_by_side, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(alone[0]["net.0.weight"], alone[1]["net.0.weight"])  # the seed decides


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from(["red", "blue", "green", "unknown"]), min_size=0, max_size=40), min_size=1, max_size=6),
    st.integers(1, 8),
    st.booleans(),
)
def test_per_class_sample_is_the_same_with_class_bounds_and_stored_hashes(partitions, per_class, stored):
    """Skipping records above a full class's bound, and reading the hash the labels stored, changes nothing sampled."""
    spec = type("Spec", (), {"key": "hair_color"})()

    def labels(i: int, values: list[str]) -> pl.DataFrame:
        ids = [f"r{i}-{j}" for j in range(len(values))]
        df = pl.DataFrame(
            {
                "record_id": ids,
                "partition": [f"p{i}"] * len(values),
                "status": ["ok"] * len(values),
                "characters": [[]] * len(values),
                "hair_color": [{"value": v, "evidence": [v]} for v in values],
            },
            schema={
                "record_id": pl.String,
                "partition": pl.String,
                "status": pl.String,
                "characters": pl.List(pl.String),
                "hair_color": pl.Struct({"value": pl.String, "evidence": pl.List(pl.String)}),
            },
        )
        return df.with_columns(sample_hashes(df.get_column("record_id"))) if stored else df

    plain = bounded = None
    for i, values in enumerate(partitions):
        frame = labels(i, values)
        plain = merge_candidates(plain, field_candidates(frame, spec, per_class), per_class)
        found = field_candidates(with_sample_hash(frame).sort("h"), spec, per_class, class_bounds(bounded, per_class))
        bounded = merge_candidates(bounded, found, per_class)
    assert bounded.sort("h").equals(plain.sort("h"))
    assert (plain.group_by("label").len().get_column("len").max() or 0) <= per_class


def test_partition_batches_keep_the_order_and_bound_the_rows_read_at_once():
    assert partition_batches(["a", "b", "c", "d"], {"a": 3, "b": 3, "c": 5, "d": 1}, 6) == [["a", "b"], ["c", "d"]]
    assert partition_batches(["a", "b"], {"a": 9, "b": 1}, 6) == [["a"], ["b"]]  # a larger partition alone
    assert partition_batches([], {}, 6) == []


def test_training_sample_is_the_same_read_a_partition_at_a_time_or_all_at_once(tmp_path):
    """The per-class samples (a single-valued and a list field) do not depend on how many partitions are read at once,
    also where a record id repeats in another partition (a post in two files: its copies tie on the hash) and when
    sampling only records with a vector in their own partition; the sampled records' vectors come in the partitions'
    order, each in its own row order, whatever order the table's files are scanned in."""
    lake = Lake(str(tmp_path / "lake"))
    colours, styles = ["red", "blue", "green", "unknown"], ["ponytail", "braid", "bun"]
    parts = [f"p{i}" for i in range(4)]
    plain = {key: [f"r{i}-{j}" for j in range(60)] for i, key in enumerate(parts)}
    lowest = min(sample_hashes(pl.Series([r for ids in plain.values() for r in ids])).to_list())
    spare = [f"dup-{n}" for n in range(5000)]
    # two ids hashing below every other record, so each copy is first in line for its class's sample
    twice, moved = [r for r, h in zip(spare, sample_hashes(pl.Series(spare)).to_list(), strict=True) if h < lowest][:2]
    for i, key in enumerate(parts):  # written first to last: a scan of them all returns them last first
        ids = plain[key] + ([twice, moved] if i in (1, 2) else [])
        n = len(ids)
        colour = [colours[(j * 7 + i) % 4] for j in range(n)]
        if i in (1, 2):  # ``twice``: red in both partitions; ``moved``: blue in p1 (no vector there), red in p2
            colour[-2:] = ["red", "blue" if i == 1 else "red"]
        labels = pl.DataFrame(
            {
                "record_id": ids,
                "partition": key,
                "status": ["ok" if j % 9 else "ambiguous" for j in range(n)],
                "characters": [[f"c{(j + i) % 5}"] for j in range(n)],
                "hair_color": [{"value": c, "evidence": [f"{c}_hair"]} for c in colour],
                "hair_style": [{"value": styles[: (j + i) % 4], "evidence": styles[: (j + i) % 4]} for j in range(n)],
            }
        )
        with_vector = [r for j, r in enumerate(ids) if (j % 4 and r != moved) or r == twice or (r == moved and i == 2)]
        vectors = pl.DataFrame(
            {"record_id": with_vector[::-1], "partition": key, "vector": [bytes([i, j]) for j in range(len(with_vector))]}
        )
        lake.write_partitions("labels", "tag_attributes", labels, [key])
        lake.write_partitions("features", "embeddings", vectors, [key])
    single = type("Spec", (), {"key": "hair_color", "cardinality": "single"})()
    multi = type("Spec", (), {"key": "hair_style", "cardinality": "multi"})()
    for only_with_vectors, per_class in [(False, 1), (False, 2), (False, 6), (True, 1), (True, 6)]:
        samples = []
        for rows in (1, 10**9):  # one partition per read (as before batches), then every partition in one
            samples.append(
                sample_training_data(lake, [single, multi], parts, per_class, ("features", "embeddings"), only_with_vectors, rows)
            )
        (one, emb_one), (together, emb_together) = samples
        for key in ("hair_color", "hair_style"):
            assert one[key].sort("h", "partition").equals(together[key].sort("h", "partition"))
        assert emb_one.equals(emb_together)
        assert one["hair_color"].group_by("label").len().get_column("len").to_list() == [per_class] * 3
        red = one["hair_color"].filter(pl.col("label") == "red").sort("h", "partition")
        assert red.get_column("record_id")[0] == twice and red.get_column("partition")[0] == "p1"  # the earlier copy first
        blue = one["hair_color"].filter(pl.col("label") == "blue")
        assert (moved in blue.get_column("record_id").to_list()) != only_with_vectors  # p1's copy has no vector in p1
        sampled = pl.concat([one[k].select("record_id") for k in ("hair_color", "hair_style")]).unique()
        expected = pl.concat(
            [lake.read("features", "embeddings", [k]).join(sampled, on="record_id", how="semi", maintain_order="left") for k in parts]
        )
        assert emb_one.height > 0 and emb_one.select(expected.columns).equals(expected)


def test_heads_logged_as_their_fits_finish_are_reported_in_the_fields_order(tmp_path):
    """With workers lent, a head is logged as soon as its fit is done (here the first field's fit is slowed, so the
    second is logged first); the gate rows, the summary and the skipped fields still come in the fields' order."""
    import time as _time
    from concurrent.futures import ThreadPoolExecutor

    from charassets.domain.lending import lending
    from charassets.domain.models.champion import train_log_and_gate
    from charassets.domain.models.features import record_vector_column
    from charassets.domain.models.heads import HeadConfig
    from charassets.domain.models.registry import ModelStore
    from charassets.domain.ontology import Ontology

    fields = {f.key: f for f in Ontology.load().fields}
    chosen = [fields["gender"], fields["hair_length"], fields["eye_color"]]  # eye colour: one class only, skipped
    rng = np.random.default_rng(0)
    ids = [f"r{i}" for i in range(120)]
    emb = pl.DataFrame({"record_id": ids}).with_columns(record_vector_column(rng.standard_normal((120, 16)).astype(np.float32)))

    def sample(values: list[str], n: int) -> pl.DataFrame:
        return pl.DataFrame(
            {"record_id": ids[:n], "label": [values[i % len(values)] for i in range(n)], "characters": [[f"c{i % 7}"] for i in range(n)]}
        )

    cands = {"gender": sample(["female", "male"], 60), "hair_length": sample(["long", "short"], 120), "eye_color": sample(["blue"], 40)}
    logged: list[str] = []

    class SlowFirst(ThreadPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            if args and args[0] == "Gender":  # the first field's fit finishes last
                return super().submit(lambda *a: _time.sleep(1.0) or fn(*a), *args)
            return super().submit(fn, *args, **kwargs)

    class Log:
        def info(self, message: str) -> None:
            logged.append(message.split(":")[0])

    store = ModelStore(f"sqlite:///{tmp_path}/mlflow.db", "heads", str(tmp_path / "artifacts"))
    with SlowFirst(2) as workers, lending(workers, 2):
        out = train_log_and_gate(store, chosen, cands, emb, None, None, HeadConfig(hidden=8, epochs=2, batch_size=32), 100, {}, log=Log())
    assert logged == ["Hair Length", "Gender"]  # as the fits finished
    assert [g["field"] for g in out.gate_rows] == [s["field"] for s in out.summary] == ["Gender", "Hair Length"]
    assert list(out.skipped) == ["Eye Color"]
