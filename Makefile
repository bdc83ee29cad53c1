# Builds ngx_http_lifecycle_module.so against Debian's nginx-dev sources
# with Debian's own configure flags, in a private copy under build/.
#
#   make            the module: build/ngx_http_lifecycle_module.so
#   make agent      lifecycle-agent: build/lifecycle-agent
#   make asan       the same with AddressSanitizer: build-asan/...
#   make test       install what is missing, build the module and the
#                   agent, check js/dist, run t/ with prove (the browser
#                   tests of lifecycle.js included)
#   make js         npm ci + esbuild: js/src/lifecycle.js into
#                   js/dist/lifecycle.min.js (committed), size budget checked
#   make test-asan  the suite against the ASan build
#   make demo       install what is missing, build, start the demo shop
#   make bench      install what is missing, build, run the benchmark
#                   harness (BENCH=../shared/bench, BENCH_ARGS="-r 3")

SHELL    := /bin/bash
NGX_SRC  ?= /usr/share/nginx/src
MODULE    = ngx_http_lifecycle_module.so
SOURCES   = config $(wildcard ngx_lifecycle_module/*.[ch]) \
            js/dist/lifecycle.min.js
PROVE    ?= prove
PROVE_ARGS ?= -r t/

ASAN_CC_OPT = -fsanitize=address -fno-omit-frame-pointer -fPIC -g -O1
ASAN_LD_OPT = -fsanitize=address -fPIC

# lifecycle-agent: its own sources and the module's plain-C ones
AGENT        = build/lifecycle-agent
AGENT_SRCS   = $(wildcard agent/*.c) \
               ngx_lifecycle_module/lifecycle_template.c \
               ngx_lifecycle_module/lifecycle_catalog.c \
               ngx_lifecycle_module/lifecycle_identity.c
AGENT_DEPS   = $(AGENT_SRCS) agent/lc_agent.h \
               $(wildcard ngx_lifecycle_module/lifecycle_*.h)
AGENT_CFLAGS ?= -O2 -g
AGENT_LIBS   = -lhiredis -lcurl -ljansson -lcrypto

BENCH      ?= ../shared/bench
BENCH_ARGS ?= -r 3

.PHONY: all module agent asan test test-asan demo demo-stop bench deps \
        clean js js-check

all: module agent

module: build/$(MODULE)

agent: $(AGENT)

# one compiler run: the agent is small. Replaced by rename, as the module.
$(AGENT): $(AGENT_DEPS)
	@mkdir -p build
	$(CC) -std=gnu11 $(AGENT_CFLAGS) -Wall -Wextra -Werror \
	    -Ingx_lifecycle_module -o $@.tmp $(AGENT_SRCS) $(AGENT_LIBS)
	mv $@.tmp $@

asan: build-asan/$(MODULE)

# configure runs again only when config (the addon file) changes; nginx's
# own Makefile then recompiles only the sources that changed. The module is
# replaced by rename: a running nginx that has it mapped keeps the old one.
build/nginx/objs/Makefile: config
	@test -f $(NGX_SRC)/conf_flags || \
	    { echo "missing $(NGX_SRC): apt-get install nginx-dev"; exit 1; }
	rm -rf build/nginx && mkdir -p build && cp -r $(NGX_SRC) build/nginx
	cd build/nginx && . ./conf_flags && \
	    ./configure "$${NGX_CONF_FLAGS[@]}" \
	        --with-cc-opt="-g -O2 -Wall -Werror" \
	        --add-dynamic-module=$(CURDIR) > configure.log

build/$(MODULE): build/nginx/objs/Makefile $(SOURCES)
	$(MAKE) -C build/nginx -f objs/Makefile modules
	cp build/nginx/objs/$(MODULE) $@.tmp && mv $@.tmp $@

build-asan/nginx/objs/Makefile: config
	@test -f $(NGX_SRC)/conf_flags || \
	    { echo "missing $(NGX_SRC): apt-get install nginx-dev"; exit 1; }
	rm -rf build-asan/nginx && mkdir -p build-asan && \
	    cp -r $(NGX_SRC) build-asan/nginx
	cd build-asan/nginx && . ./conf_flags && \
	    ./configure "$${NGX_CONF_FLAGS[@]}" \
	        --with-cc-opt="$(ASAN_CC_OPT) -Wall -Werror" \
	        --with-ld-opt="$(ASAN_LD_OPT)" \
	        --add-dynamic-module=$(CURDIR) > configure.log

build-asan/$(MODULE): build-asan/nginx/objs/Makefile $(SOURCES)
	$(MAKE) -C build-asan/nginx -f objs/Makefile modules
	cp build-asan/nginx/objs/$(MODULE) $@.tmp && mv $@.tmp $@

deps:
	@./scripts/deps.sh test

# lifecycle.js: the module embeds js/dist/lifecycle.min.js, which is
# committed, so building the module never needs node. "make js" rebuilds
# it from js/src/ with the esbuild of js/package-lock.json; "make test"
# fails when the committed file is not what the source builds to, or when
# it is over its size budget (js/build.mjs). npm ci runs again only when
# the lock file changes; it also brings playwright-core for t/31-browser.t.
JS_STAMP = js/node_modules/.lifecycle-npm-ci

$(JS_STAMP): js/package.json js/package-lock.json
	cd js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

js: $(JS_STAMP)
	cd js && node build.mjs

js-check: $(JS_STAMP)
	@cd js && node build.mjs --check

test: deps module agent js-check
	LIFECYCLE_MODULE=$(CURDIR)/build/$(MODULE) \
	LIFECYCLE_AGENT=$(CURDIR)/$(AGENT) $(PROVE) $(PROVE_ARGS)

test-asan: deps asan agent js-check
	LIFECYCLE_MODULE=$(CURDIR)/build-asan/$(MODULE) \
	LIFECYCLE_AGENT=$(CURDIR)/$(AGENT) \
	LIFECYCLE_ASAN=1 $(PROVE) $(PROVE_ARGS)

# packages first: on a fresh machine the build needs nginx-dev
demo:
	@./scripts/deps.sh demo
	@$(MAKE) --no-print-directory module agent
	./scripts/demo.sh start

demo-stop:
	./scripts/demo.sh stop

# configuration D of the harness is conf/bench/nginx.conf.in
bench:
	@./scripts/deps.sh bench
	@$(MAKE) --no-print-directory module
	$(BENCH)/run.sh --project $(CURDIR) \
	    --module $(CURDIR)/build/$(MODULE) $(BENCH_ARGS)

clean:
	rm -rf build build-asan
