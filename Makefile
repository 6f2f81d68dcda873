# Every target creates .venv on first use. DAGSTER_HOME is the project root (dagster.yaml).
PY := .venv/bin/python
VENV_STAMP := .venv/.installed
export DAGSTER_HOME := $(CURDIR)
N ?= 100000
EXAMPLES ?= 500
TEST_WORKERS ?= 2

.PHONY: setup demo test test-hostile dev mlflow app lint bench bench-images vocab clean

$(VENV_STAMP): pyproject.toml
	test -d .venv || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(VENV_STAMP)

setup: $(VENV_STAMP)

demo: $(VENV_STAMP)  ## generate the demo dataset and materialize the whole graph on it
	.venv/bin/charassets demo

test: $(VENV_STAMP)  ## run every test, one file per worker on TEST_WORKERS processes (default 2: both cores here)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-hostile: $(VENV_STAMP)  ## the property-based hostile-input suite with more examples: make test-hostile EXAMPLES=500
	CHARASSETS_HYPOTHESIS_EXAMPLES=$(EXAMPLES) $(PY) -m pytest -q charassets_tests/test_hostile_input.py

dev: $(VENV_STAMP)  ## Dagster UI on http://127.0.0.1:3000
	.venv/bin/dagster dev -h 127.0.0.1 -p 3000

mlflow: $(VENV_STAMP)  ## MLflow UI on http://127.0.0.1:5000 against the project's store
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false .venv/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/.charassets/mlflow.db \
		--default-artifact-root $(CURDIR)/.charassets/mlartifacts --host 127.0.0.1 --port 5000

app: $(VENV_STAMP)  ## upload an image or paste tags: http://127.0.0.1:7860
	GRADIO_ANALYTICS_ENABLED=False $(PY) -m charassets.app --host 127.0.0.1 --port 7860

lint: $(VENV_STAMP)
	.venv/bin/ruff check charassets charassets_tests bench
	.venv/bin/ruff format --check charassets charassets_tests bench
	.venv/bin/lint-imports

bench: $(VENV_STAMP)  ## make bench N=1000000
	$(PY) bench/run.py --records $(N)

bench-images: $(VENV_STAMP)  ## make bench-images N=2000: N images through the whole graph
	$(PY) bench/images.py --images $(N)

vocab: $(VENV_STAMP)  ## rewrite the bundled vocabulary: Danbooru's tag list (from $$CHARASSETS_SHARED_DATA, default ../shared/data), the project's own tags and their MiniLM vectors
	$(PY) -c "from charassets.domain.tags.vocabulary import write_bundled, shared_data_dir as d; print(write_bundled(d() / 'vocab' / 'danbooru_tags.csv'))"
	$(PY) -c "from charassets.domain.demo import write_embedded_vocabulary as w; w('charassets/data/vocabulary.csv')"
	$(PY) -c "from charassets.domain.demo import embedded_feature_tags as t; from charassets.domain.models.embedders import minilm; from charassets.domain.models.features import write_bundled_tag_vectors as w; print(w(minilm(), t()))"

clean:
	rm -rf .charassets
