# clipeval: `make help` lists every target.
PROFILE ?= offline
CHECKPOINTS ?=
PYTHON_BOOT ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
ENV_STAMP := $(VENV)/.clipeval-installed
TINY := data/checkpoints/tiny-random/.built
CHALLENGE := data/generated/challenge/pairs.csv
SCENES := data/generated/scenes/metadata.json
DUAL := outputs/offline/models/dual/model.safetensors
SCENE_CLASSIFIER := outputs/offline/models/scene-classifier/config.json
REHEARSAL_HUB := data/rehearsal-hub/hf/clipeval_mirror.json
export HF_HUB_DISABLE_TELEMETRY := 1

.DEFAULT_GOAL := help
.PHONY: help env data model reproduce notebooks report rehearsal-hub rehearse gpu-check measured lint chromium test test-slow test-network bench bench-finder bench-rehearsal bench-train clear-cache lab clean

help: ## list the targets with a one-line description
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

env: $(ENV_STAMP) ## create .venv: the package (editable) with every extra (notebooks, ray, finder, dev), pinned; torch first

$(ENV_STAMP): pyproject.toml
	test -x $(PYTHON) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet $$(grep -oE '"torch(vision)?==[^"]+"' pyproject.toml | tr -d '"')
	$(PYTHON) -m pip install --quiet -e ".[notebooks,ray,finder,dev]"
	touch $@

$(TINY): $(ENV_STAMP) src/clipeval/models/tiny.py
	$(PYTHON) -m clipeval tiny-checkpoints --out $(dir $@)
	touch $@

$(CHALLENGE): $(ENV_STAMP) src/clipeval/data/challenge.py
	$(PYTHON) -m clipeval challenge-set --out $(dir $@)

$(SCENES): $(ENV_STAMP) src/clipeval/data/scenes.py
	$(PYTHON) -m clipeval make-scenes --out $(dir $@)

$(DUAL): $(SCENES) src/clipeval/models/dual.py src/clipeval/train/dual.py
	$(PYTHON) -m clipeval train --scenes $(dir $(SCENES)) --out $(dir $@)

data: $(TINY) $(CHALLENGE) $(SCENES) ## prepare embedded data, the captioned scenes and local checkpoints

$(SCENE_CLASSIFIER): $(SCENES) src/clipeval/train/scene_classifier.py
	$(PYTHON) -m clipeval train-scene-classifier --scenes $(dir $(SCENES)) --out $(dir $@)

model: $(DUAL) $(SCENE_CLASSIFIER) ## train the dual encoder and the scenes' timm classifier once (outputs/offline/models/)

# The offline profile scores with the dual encoder trained here; other profiles do not need it.
PROFILE_NEEDS := $(if $(filter offline,$(PROFILE)),model)

notebooks: data $(PROFILE_NEEDS) ## run the profile's notebooks with papermill (PROFILE=offline, CHECKPOINTS="spec ...")
	$(PYTHON) -m clipeval run-notebooks --profile $(PROFILE) --checkpoints "$(CHECKPOINTS)"

reproduce: env data notebooks ## everything: environment, data, the offline model, every notebook, the report -> outputs/$(PROFILE)/
	@$(MAKE) --no-print-directory report PROFILE=$(PROFILE)

report: env ## write outputs/$(PROFILE)/report/index.html: the run's tables, figures and notebooks on one page
	$(PYTHON) -m clipeval report --profile $(PROFILE)

$(REHEARSAL_HUB): $(ENV_STAMP) $(wildcard src/clipeval/rehearsal/*.py)
	$(PYTHON) -m clipeval rehearsal-hub --out data/rehearsal-hub

rehearsal-hub: $(REHEARSAL_HUB) ## build the hub mirror: the paper profile's repositories, random, under real names (data/rehearsal-hub)

rehearse: env data $(REHEARSAL_HUB) ## the paper profile, offline on the hub mirror (params/rehearsal.yaml) -> outputs/rehearsal/
	$(PYTHON) -m clipeval run-notebooks --profile rehearsal
	@$(MAKE) --no-print-directory report PROFILE=rehearsal

gpu-check: env ## on a CUDA machine: the reduced rehearsal in fp32/fp16/bf16 and the pipeline on CUDA -> bench/results/gpu_check.json
	$(PYTHON) bench/gpu_check.py

measured: env ## copy outputs/offline's measured files to bench/results/offline/ and regenerate the docs' measured tables
	$(PYTHON) bench/measured.py --from-run outputs/offline

lint: env ## ruff (style, imports, bugs) and import-linter (the package layers)
	$(VENV)/bin/ruff check src tests bench notebooks
	$(VENV)/bin/lint-imports

BENCH_PEERS := $(VENV)/.bench-peers-installed

$(BENCH_PEERS): bench/requirements.txt $(ENV_STAMP)
	$(PYTHON) -m pip install --quiet --no-deps -r bench/requirements.txt
	touch $@

# the peers a test runs beside clipeval (clip-benchmark's own zero-shot functions) are the benchmarks' peers
test: env lint chromium $(BENCH_PEERS) ## lint, then run the test suite (fails if no test ran); installs Chromium and the peer packages first when missing
	$(PYTHON) -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$status

# The finder's browser tests and notebook 10's page photo drive Debian's Chromium and chromedriver (found as the
# package finds them: CLIPEVAL_CHROMIUM / CLIPEVAL_CHROMEDRIVER, else the PATH). When missing they are installed
# with apt-get (sudo when not root); where that cannot be done, make stops before any test, saying how in one line.
CHROMIUM_FOUND := $(PYTHON) -c "from clipeval.finder.browser import find_chromium; find_chromium()" 2>/dev/null

chromium: env
	@$(CHROMIUM_FOUND) || { \
	  if command -v apt-get >/dev/null; then \
	    sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	    echo "make test: installing Debian's chromium and chromium-driver (the browser tests drive them)"; \
	    $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      chromium chromium-driver >/dev/null; \
	  fi; \
	  $(CHROMIUM_FOUND) || { echo "make test: Chromium and chromedriver are missing and could not be installed here:" \
	    "install them (Debian: sudo apt-get install -y chromium chromium-driver) or set CLIPEVAL_CHROMIUM and" \
	    "CLIPEVAL_CHROMEDRIVER to their paths" >&2; exit 1; }; }

test-slow: env ## run only the slow tests (real-size training and data; about 20 min)
	$(PYTHON) -m pytest -m slow; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no slow tests: failing"; exit 1; fi; exit $$status

test-network: env ## run only the network tests (real checkpoints vs published numbers; fail without a model hub)
	$(PYTHON) -m pytest -m network; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no network tests: failing"; exit 1; fi; exit $$status


bench: env data $(BENCH_PEERS) ## pipeline, speed, zero-shot, retrieval, sharded-run, shard-size and finder benchmarks (about 50 min); JSON in bench/results/, a table printed
	$(PYTHON) bench/bench_pipeline.py
	$(PYTHON) bench/bench_speed.py
	$(PYTHON) bench/bench_zero_shot.py
	$(PYTHON) bench/bench_retrieval.py
	$(PYTHON) bench/bench_sharded.py
	$(PYTHON) bench/bench_shard_size.py
	$(PYTHON) bench/bench_finder.py

bench-finder: env data model ## the finder: exact vs approximate search at 10k/100k/1M synthetic vectors, float16 vs float32 ranking (about 6 min) -> bench/results/finder*.json
	$(PYTHON) bench/bench_finder.py
	$(PYTHON) bench/bench_finder_float16.py

bench-rehearsal: env data ## time make rehearsal-hub and make rehearse, cold, from the shell (about 15 min) -> bench/results/rehearsal.json
	$(PYTHON) bench/bench_rehearsal.py

bench-train: env ## the dual encoder's training benchmark (about 10 min), then fine-tuning steps/s and peak memory per mode (dual encoder, ViT-B/32; a few min) -> bench/results/train_dual.json, finetune.json
	$(PYTHON) bench/bench_train_dual.py
	$(PYTHON) bench/bench_finetune.py

clear-cache: env ## delete the embedding cache's files (~/.cache/clipeval/embeddings, or CLIPEVAL_EMBEDDING_CACHE's); others stay
	$(PYTHON) -c "from clipeval.embed.cache import clear_cache; print(clear_cache().describe())"

lab: env ## start JupyterLab on the notebooks
	$(VENV)/bin/jupyter lab notebooks/

clean: ## remove generated outputs (the trained model too), data, local checkpoints and the hub mirror (keeps .venv)
	rm -rf outputs/*/ data/generated data/checkpoints data/cache data/rehearsal-hub
