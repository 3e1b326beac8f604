# umltools — build, test, install.
#
#   make                 build every binary into bin/ (static, CGO_ENABLED=0)
#   make test            gofmt, go vet, unit + interop tests, 10 s per fuzz target
#   make fuzz            every fuzz target for FUZZTIME (default 2m)
#   make run             boot the default guest image (built on first use) on this terminal
#   make bench           speed ratios against the C originals, from one run
#   make install         DESTDIR, PREFIX (/usr/local), BINDIR, MANDIR, COMPDIR, UNITDIR
#   make clean

BINS     := linux uml_mconsole uml_moo uml_mkcow uml_switch uml_net tunctl rootstrap
MODULE   := github.com/umltools/umltools
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

PREFIX   ?= /usr/local
BINDIR   ?= $(PREFIX)/bin
MANDIR   ?= $(PREFIX)/share/man
COMPDIR  ?= $(PREFIX)/share/bash-completion/completions
UNITDIR  ?= $(PREFIX)/lib/systemd/system
DOCDIR   ?= $(PREFIX)/share/doc/umltools
DESTDIR  ?=

GO       ?= go
GOFLAGS_BUILD := -trimpath -ldflags "-s -w -X $(MODULE)/internal/version.Version=$(VERSION)"
FUZZTIME ?= 2m

export CGO_ENABLED = 0

.PHONY: all build test fuzz bench run install clean $(BINS)

all: build

build: $(BINS)

$(BINS):
	$(GO) build $(GOFLAGS_BUILD) -o bin/$@ ./$@

test: build
	./scripts/test.sh

fuzz:
	FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

bench: build
	./scripts/bench.sh

# The main job: the default image (rootstrap's busybox profile, no root
# needed) booted by our engine with its console on this terminal. Log in
# is not needed; `poweroff` ends it. RUN_ARGS adds kernel options.
IMAGE    ?= default.img
RUN_ARGS ?=
run: linux rootstrap
	@[ -f $(IMAGE) ] || bin/rootstrap --profile busybox $(IMAGE)
	bin/linux ubd0=$(IMAGE) con0=fd:0,fd:1 con=null $(RUN_ARGS)

# Installs binaries, man pages and bash completions. It never sets the
# setuid bit on uml_net: packagers do that (see README, "Packaging").
install: build
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 $(addprefix bin/,$(BINS)) $(DESTDIR)$(BINDIR)/
	@for page in docs/man/*.[0-9]; do \
		sec=$${page##*.}; \
		install -d $(DESTDIR)$(MANDIR)/man$$sec; \
		install -m 0644 $$page $(DESTDIR)$(MANDIR)/man$$sec/; \
		echo "install $$page -> $(DESTDIR)$(MANDIR)/man$$sec/"; \
	done
	install -d $(DESTDIR)$(COMPDIR)
	@for c in docs/completion/*; do \
		[ -f "$$c" ] || continue; \
		install -m 0644 $$c $(DESTDIR)$(COMPDIR)/; \
		echo "install $$c -> $(DESTDIR)$(COMPDIR)/"; \
	done
	install -d $(DESTDIR)$(UNITDIR)
	sed 's#/usr/local/bin/#$(BINDIR)/#g' docs/uml_switch.service > $(DESTDIR)$(UNITDIR)/uml_switch.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/uml_switch.service

clean:
	rm -rf bin
