# umltools — build, test, install.
#
#   make                 build every binary into bin/ (static, CGO_ENABLED=0)
#   make test            gofmt, go vet, unit + interop tests, 10 s per fuzz target
#                        (60 s for the ext4 differential fuzzer FuzzWriteOps)
#   make fuzz            every fuzz target for FUZZTIME (default 2m)
#   make run             boot the default guest image (built on first use) on this terminal
#   make bench           speed ratios against the C originals, from one run
#   make install         DESTDIR, PREFIX (/usr/local), BINDIR, SBINDIR, LIBDIR, MANDIR,
#                        COMPDIR, UNITDIR, SYSCONFDIR; PREFIX=/usr is Debian's layout
#   make deb             build/umltools_<version>_<arch>.deb (dpkg-deb, no network), which
#                        replaces Debian's uml-utilities; scripts/check-deb.sh tests it
#   make clean

# The binaries; those whose directory is not there yet are left out.
# jail_uml goes to SBINDIR and port-helper to LIBDIR/uml, where Debian's
# uml-utilities puts them; the rest go to BINDIR.
OPT_BINS := $(patsubst %/main.go,%,$(wildcard port-helper/main.go uml_watchdog/main.go jail_uml/main.go))
BINS     := linux uml_mconsole uml_moo uml_mkcow uml_switch uml_net tunctl rootstrap $(OPT_BINS)
SBINS    := $(filter jail_uml,$(BINS))
HELPERS  := $(filter port-helper,$(BINS))
UBINS    := $(filter-out $(SBINS) $(HELPERS),$(BINS))
MODULE   := github.com/umltools/umltools
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

PREFIX   ?= /usr/local
BINDIR   ?= $(PREFIX)/bin
SBINDIR  ?= $(PREFIX)/sbin
LIBDIR   ?= $(PREFIX)/lib
MANDIR   ?= $(PREFIX)/share/man
COMPDIR  ?= $(PREFIX)/share/bash-completion/completions
UNITDIR  ?= $(PREFIX)/lib/systemd/system
DOCDIR   ?= $(PREFIX)/share/doc/umltools
# /etc for PREFIX=/usr (and /), else PREFIX/etc.
SYSCONFDIR ?= $(if $(filter /usr /,$(PREFIX)),/etc,$(PREFIX)/etc)
DESTDIR  ?=

GO       ?= go
GOFLAGS_BUILD := -trimpath -ldflags "-s -w -X $(MODULE)/internal/version.Version=$(VERSION)"
FUZZTIME ?= 2m

export CGO_ENABLED = 0

.PHONY: all build test fuzz bench run install deb clean $(BINS)

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

# Installs binaries, man pages, bash completions, the switch's systemd
# unit (as uml-utilities.service, alias uml_switch.service) and, in
# SYSCONFDIR, Debian's uml-utilities compatibility files: the settings
# file default/uml-utilities (never overwritten), the init script and the
# ifupdown hooks. It never sets the setuid bit on uml_net: packagers do
# that (see README, "Packaging").
SUBST = sed -e 's\#/usr/local/bin/\#$(BINDIR)/\#g' -e 's\#@BINDIR@\#$(BINDIR)\#g' \
	-e 's\#/etc/default/\#$(SYSCONFDIR)/default/\#g' -e 's\#@SYSCONFDIR@\#$(SYSCONFDIR)\#g'
install: build
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 $(addprefix bin/,$(UBINS)) $(DESTDIR)$(BINDIR)/
	$(if $(SBINS),install -d $(DESTDIR)$(SBINDIR))
	$(if $(SBINS),install -m 0755 $(addprefix bin/,$(SBINS)) $(DESTDIR)$(SBINDIR)/)
	$(if $(HELPERS),install -d $(DESTDIR)$(LIBDIR)/uml)
	$(if $(HELPERS),install -m 0755 $(addprefix bin/,$(HELPERS)) $(DESTDIR)$(LIBDIR)/uml/)
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
	$(SUBST) docs/uml_switch.service > $(DESTDIR)$(UNITDIR)/uml-utilities.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/uml-utilities.service
	install -d $(DESTDIR)$(SYSCONFDIR)/default $(DESTDIR)$(SYSCONFDIR)/init.d \
		$(DESTDIR)$(SYSCONFDIR)/network/if-pre-up.d $(DESTDIR)$(SYSCONFDIR)/network/if-up.d
	@d=$(DESTDIR)$(SYSCONFDIR)/default/uml-utilities; \
	if [ -e $$d ]; then echo "keep $$d (exists)"; \
	else install -m 0644 packaging/etc/default/uml-utilities $$d && echo "install $$d"; fi
	@for f in init.d/uml-utilities network/if-pre-up.d/uml-utilities network/if-up.d/uml-utilities; do \
		$(SUBST) packaging/etc/$$f > $(DESTDIR)$(SYSCONFDIR)/$$f && \
		chmod 0755 $(DESTDIR)$(SYSCONFDIR)/$$f && echo "install $(DESTDIR)$(SYSCONFDIR)/$$f"; \
	done

# make deb: bin/umltools_<version>_<arch>.deb, built with dpkg-deb from `make install
# PREFIX=/usr` (units in /lib/systemd/system, as on bookworm), man pages
# and changelog gzip -9n. It Provides, Replaces and Conflicts with
# uml-utilities; its postinst creates the uml-net user and group and
# makes uml_net root:uml-net 4754 with dpkg-statoverride.
DEB_ARCH    ?= $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
DEB_COMMIT  := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
DEB_DATE    := $(shell git log -1 --format=%cd --date=format:%Y%m%d 2>/dev/null || date -u +%Y%m%d)
DEB_DIRTY   := $(shell git diff --quiet HEAD -- 2>/dev/null || echo +dirty)
DEB_VERSION ?= 0.0~git$(DEB_DATE).$(DEB_COMMIT)$(DEB_DIRTY)
# .invalid: a reserved domain (RFC 2606); set a real address to publish.
DEB_MAINTAINER ?= umltools developers <umltools@umltools.invalid>
DEB_FILE    := bin/umltools_$(DEB_VERSION)_$(DEB_ARCH).deb
DEB_ROOT    := bin/deb-root
deb: build
	rm -rf $(DEB_ROOT) bin/umltools_*.deb
	$(MAKE) -s install DESTDIR=$(CURDIR)/$(DEB_ROOT) PREFIX=/usr UNITDIR=/lib/systemd/system >/dev/null
	install -d $(DEB_ROOT)/usr/share/doc/umltools $(DEB_ROOT)/DEBIAN
	install -m 0644 packaging/debian/copyright $(DEB_ROOT)/usr/share/doc/umltools/
	install -m 0644 README.md $(DEB_ROOT)/usr/share/doc/umltools/
	install -d $(DEB_ROOT)/usr/share/lintian/overrides
	install -m 0644 packaging/debian/lintian-overrides $(DEB_ROOT)/usr/share/lintian/overrides/umltools
	sed -e 's/@VERSION@/$(DEB_VERSION)/' -e 's/@COMMIT@/$(DEB_COMMIT)/' -e 's/@MAINTAINER@/$(DEB_MAINTAINER)/' \
		-e "s/@DATE@/$$(date -R -u -d @$$(git log -1 --format=%ct 2>/dev/null || date +%s))/" \
		packaging/debian/changelog.in | gzip -9n > $(DEB_ROOT)/usr/share/doc/umltools/changelog.gz
	find $(DEB_ROOT)/usr/share/man -type f -exec gzip -9n {} +
	install -m 0644 packaging/debian/conffiles $(DEB_ROOT)/DEBIAN/
	install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm $(DEB_ROOT)/DEBIAN/
	cd $(DEB_ROOT) && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' | \
		LC_ALL=C sort -z | xargs -0 md5sum > DEBIAN/md5sums
	chmod 0644 $(DEB_ROOT)/DEBIAN/md5sums
	extra="$(strip $(filter uml_watchdog,$(BINS)) $(SBINS) $(HELPERS))"; \
	if [ -n "$$extra" ]; then extra=" Also: $$(echo $$extra | sed 's/ /, /g')."; fi; \
	sed -e 's/@VERSION@/$(DEB_VERSION)/' -e 's/@ARCH@/$(DEB_ARCH)/' -e 's/@MAINTAINER@/$(DEB_MAINTAINER)/' \
		-e "s/@SIZE@/$$(du -sk --exclude=DEBIAN $(DEB_ROOT) | cut -f1)/" \
		-e "s/^@EXTRA@$$/$$extra/" -e '/^$$/d' \
		packaging/debian/control.in > $(DEB_ROOT)/DEBIAN/control
	dpkg-deb --root-owner-group -Zxz --build $(DEB_ROOT) $(DEB_FILE)
	@echo "built $(DEB_FILE)"

clean:
	rm -rf bin
