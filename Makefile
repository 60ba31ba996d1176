# Every target creates what it needs: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test test-compiled compiled unit integration lint format bench images publish e2e e2e-clean demo clean mutate mutate-ci mutate-results conformance

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Two workers, one test file each at a time (module fixtures stay in one
# worker; session peers start once per worker on their own free ports and dirs).
test: install
	$(PY) -m pytest -n 2 --dist loadfile tests/unit tests/integration
	$(MAKE) test-compiled

# The proxy image runs its request path compiled by mypyc (tools/compile.py):
# the proxy's tests again, against those extension modules (tests/conftest.py
# puts the compiled tree first and checks that it is what was imported).
COMPILED := $(VENV)/compiled
compiled: install
	$(PY) tools/compile.py --out $(COMPILED)

test-compiled: compiled
	PODKIT_COMPILED=$(COMPILED) $(PY) -m pytest -n 2 --dist loadfile -p no:cacheprovider \
		tests/unit/test_proxy*.py tests/integration/test_proxy*.py

unit: install
	$(PY) -m pytest tests/unit

integration: install
	$(PY) -m pytest tests/integration

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict podkit sidecars adapters ambassadors initkits

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install
	$(PY) bench/run.py

images: install
	images/build.sh

# Push what `make images` built, by <version> and <version>-<commit>, each with
# its SBOM; the digests go to images/.build/digests.json (docs/images.md).
publish:
	REGISTRY="$(REGISTRY)" TAG="$(TAG)" TLS_VERIFY="$(TLS_VERIFY)" images/publish.py

e2e: install
	$(PY) -m pytest tests/e2e

# The metrics adapter against the real statsd_exporter, built from source with
# Debian's Go packages (tests/conformance/exporters.py; the source comes from
# $$PODKIT_STATSD_EXPORTER_GIT or GitHub, so this is not part of `make test`).
conformance: install
	$(PY) -m pytest tests/conformance

# Mutation testing (docs/testing.md): the modules and the tests are in
# [tool.mutmut] of pyproject.toml; each mutant runs only the selected tests that
# call the function it changed. MUTATE="podkit.secrets*" narrows the run,
# MUTATE_TESTS="tests/unit/x.py ..." replaces the test selection. tools/mutate.py
# copies sidecars/, adapters/, ambassadors/, initkits/ into podkit/ (as the
# installed package maps them), so their modules mutate too:
# MUTATE="podkit.sidecars.reloader.program*". The survivors: `make mutate-results`.
# The reloader's decision code: whether and when to reload (`?` is mutmut's `ǁ`).
RELOADER_DECISIONS := $(foreach f,_on_change _arm _look_again _fire _check _submit _reload _fail,podkit.sidecars.reloader.program.*Reloader?$(f)__*)
# The proxy's head parsers, body framers and head cache (not the Conn/Pump I/O).
PROXY_PARSER := $(foreach f,parse_request parse_response _drop_listed _tokens _names_re local_reply,podkit.ambassadors.proxy.http1.x_$(f)*) $(foreach c,ChunkedFramer LengthFramer EofFramer RequestRules HeadCache,podkit.ambassadors.proxy.http1.x?$(c)?*)
# The rest of http1.py: the connections (Conn, Pump, splice, Cork), the fast path's
# request cache, and ProtocolError.
PROXY_IO := $(foreach c,Conn Pump Cork RequestCache ProtocolError,podkit.ambassadors.proxy.http1.x?$(c)?*) podkit.ambassadors.proxy.http1.x_splice* podkit.ambassadors.proxy.http1.x__relined*
MUTATE ?= podkit.secrets* podkit.http* podkit.logs.x?RateLimited?* podkit.runner* podkit.tailer* podkit.linesplit* podkit.sinks* podkit.ambassadors.proxy.signing* $(RELOADER_DECISIONS) $(PROXY_PARSER) $(PROXY_IO) podkit.sidecars.gitsync.publish*
MUTATE_TESTS ?=
# MUTATE_ONLY="podkit/tailer/core.py ..." generates only these files' mutants (faster).
MUTATE_ONLY ?=
# MUTATE_WORKERS=1 runs one mutant at a time (a shared machine).
MUTATE_WORKERS ?=
mutate: install
	$(PY) tools/mutate.py $(if $(MUTATE_WORKERS),--max-children $(MUTATE_WORKERS)) $(foreach t,$(MUTATE_TESTS),--tests $(t)) $(foreach o,$(MUTATE_ONLY),--only $(o)) $(foreach m,$(MUTATE),"$(m)")

# The fast subset CI runs (.ci/run): podkit/secrets.py and the TLS context and
# client session of podkit/http.py (about 110 mutants, under a minute), failing
# on any survivor beyond the equivalent ones docs/testing.md lists for them
# (secrets 5, those two functions 3), and on a subset that ran no mutant.
MUTATE_CI := "podkit.secrets*" "podkit.http.x_ssl_context*" "podkit.http.x_client_session*"
mutate-ci: install
	$(PY) tools/mutate.py --tree $(VENV)/mutate-ci-tree --only podkit/secrets.py --only podkit/http.py \
		--tests tests/unit/test_secrets_mutants.py --tests tests/unit/test_http_mutants.py \
		--tests tests/unit/test_tls_hostname.py --tests tests/unit/test_core.py \
		--max-survivors podkit.secrets=5 --max-survivors podkit.http=3 $(MUTATE_CI)

mutate-results: install
	cd $(VENV)/mutate-tree && ../bin/mutmut results

# Remove what an e2e run left (its pods, the network and its holder); images stay cached.
e2e-clean: install
	$(PY) -m tests.e2e.harness clean

demo: install
	@for part in examples/demo/[0-9]*.sh; do echo; echo "=== $$part"; bash "$$part" || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
