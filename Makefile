# EROFS page cache sharing harness. The whole set-up is `make run` or `make test`:
# every target installs what it needs (host packages with apt, a virtualenv with the
# pinned Python dependencies) and then does its job.
#
# Variables: KERNEL=<kernel spec>  ACCEL=auto|kvm|tcg  TCG_THREADS=single|multi  PYTEST_ARGS=...  CMD=... (exec)

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
KERNEL ?=
ACCEL ?= auto
TCG_THREADS ?=
PYTEST_ARGS ?=
CMD ?=
ARTIFACTS ?= artifacts

# Host packages: QEMU, what the guest image is assembled from (vmimages/guest.yaml), what
# builds the Python environment, and what builds erofs-utils >= 1.9 from Debian's source
# (harness/erofs/tools.py: Debian 12's erofs-utils 1.5 has no fingerprints) and composefs's
# tools from Debian's source for make savings (harness/savings/composefs.py).
# gcc and libc6-dev also compile C reproducers statically (harness/repro/cprog.py).
HOST_PACKAGES := qemu-system-x86 qemu-utils busybox-static dash dropbear-bin python3-minimal \
	util-linux kmod attr e2fsprogs apt dpkg python3-venv ca-certificates \
	autoconf automake libtool pkg-config liblz4-dev uuid-dev zlib1g-dev libzstd-dev \
	liblzma-dev libssl-dev dpkg-dev make gcc libc6-dev \
	flex bison bc libelf-dev dwarves ccache git xz-utils zstd cpio patch \
	meson ninja-build

VM_OPTS := $(if $(KERNEL),--kernel=$(KERNEL)) --accel=$(ACCEL) $(if $(TCG_THREADS),--vm-tcg-threads=$(TCG_THREADS))
# pytest exits 5 when it collected nothing: that is an error here, never a silent pass.
PYTEST := scripts/pytest-nonempty $(PY) -m pytest

.PHONY: all deps venv test unit vmtest lint run shell exec bench kernel repro mutations bisect matrix ci-config compare clean help explore fuzz stress coverage savings check layouts races review

all: help

help:
	@echo "make run      run the page cache sharing suite on KERNEL (default: pinned Debian kernel)"
	@echo "make test     the harness's own tests: lint, types, unit tests, VM smoke, fast slice"
	@echo "make shell    interactive shell in a guest booted on KERNEL"
	@echo "make exec CMD='...'  boot, run CMD in the guest, exit with its status"
	@echo "make bench    boot and round-trip benchmarks"
	@echo "make kernel [KERNEL_TREE=<dir>] [PATCHES=..] [KCONFIG=f1,f2] [KCONFIG_DEBUG=1]  build a tree"
	@echo "make repro REPORT=reports/<name>.yaml  verdicts of a bug report on its kernels"
	@echo "make repro MBOX=<mail> [KERNEL=]      a report as posted (image attached, script or C)"
	@echo "make repro SYZBOT=<folder> [KERNEL_TREE=] [PATCHES=]  a syzbot report (repro.c, .config, commit)"
	@echo "make explore [SEED=] [STEPS=] [MINUTES=] [KNOWN=1] [GENERATED=n]  random sequences checked against the model"
	@echo "make fuzz [SEED=] [MINUTES=]  seeded random damage to images; finds become reports"
	@echo "make stress [MINUTES=] [READERS=]  parallel verified reads while mounts churn"
	@echo "make layouts [SEED=] [MINUTES=] [EXAMPLES=]  generated images of every layout, checked every way"
	@echo "make races [PAIRS=] [SECONDS=] [SEED=]  pairs of operations side by side, windows held open"
	@echo "make mutations  deliberate breaks of fs/erofs (reports/mutations/) must turn tests red"
	@echo "make bisect KERNEL_TREE=<git dir> GOOD=<rev> BAD=<rev> REPORT=<file>"
	@echo "make coverage [KERNEL=tree:...] [PYTEST_ARGS=...]  fs/erofs line and branch coverage (gcov)"
	@echo "make review MBOX=series.mbox [KERNEL_TREE=] [BASE=]  a patch series tested: the reply to send"
	@echo "make savings [PAIRS=..] [CONTAINERS=..]  memory saved on real image pairs, beside composefs"
	@echo "make check [KERNEL_TREE=<dir>] [PATCHES=..] [PYTEST_ARGS=..]  rebuild, boot, sharing tests: edit to verdict"
	@echo "make matrix [MATRIX=matrix/nightly.yaml] [JOBS=N]  run the nightly matrix locally"
	@echo "make compare A=<results> B=<results>  differences between two runs"
	@echo "make ci-config  regenerate .github/workflows/nightly.yml and .gitlab-ci.yml"
	@echo "variables: KERNEL=debian:7.3|debian:7.2|debian:6.12|path:<vmlinuz>[,modules=<dir>]|tree:<dir>[,...]"
	@echo "           ACCEL=auto|kvm|tcg  PYTEST_ARGS='...'"

deps:
	@missing=$$(for p in $(HOST_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "make: installing host packages:" $$missing; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml | deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

lint: venv
	$(PY) -m ruff check harness tests testcases
	$(PY) -m mypy

unit: venv
	$(PYTEST) tests/unit -q $(PYTEST_ARGS)

# All of tests/vm, then the fast slice of the suite (two runs: -m fast selects in both).
vmtest: venv
	$(PYTEST) tests/vm -q $(VM_OPTS) --artifacts=$(ARTIFACTS) $(PYTEST_ARGS)
	$(PYTEST) testcases -m fast -q $(VM_OPTS) --artifacts=$(ARTIFACTS) $(PYTEST_ARGS)

test: deps venv
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory vmtest

# Two workers, one VM each (a TCG guest with thread=single keeps one host core busy).
RUN_JOBS ?= 2
run: deps venv
	$(PYTEST) testcases -n $(RUN_JOBS) $(VM_OPTS) --artifacts=$(ARTIFACTS) $(PYTEST_ARGS)

# make explore [KERNEL=] [SEED=] [STEPS=] [MINUTES=] [KNOWN=1] [GENERATED=<n>]: stateful
# exploration (GENERATED: also the images of n generated layouts examples); a divergence is
# shrunk and written to reports/found/<id>.yaml (exit 1).
SEED ?=
STEPS ?= 100000
MINUTES ?= 10
KNOWN ?=
GENERATED ?=
explore: deps venv
	$(PY) -m harness explore $(VM_OPTS) $(if $(SEED),--seed=$(SEED)) --steps=$(STEPS) \
		--minutes=$(MINUTES) $(if $(KNOWN),--known-bugs) $(if $(GENERATED),--generated=$(GENERATED)) \
		--out=$(ARTIFACTS)/explore

# make fuzz [KERNEL=] [SEED=] [MINUTES=]: seeded random damage to the hostile images; a find
# (splat, dead guest, a broken rule) is written to reports/found/fuzz-<id>.yaml (exit 1).
fuzz: deps venv
	$(PY) -m harness fuzz $(VM_OPTS) $(if $(SEED),--seed=$(SEED)) --minutes=$(MINUTES) \
		--out=$(ARTIFACTS)/fuzz

# make layouts [KERNEL=] [SEED=] [MINUTES=] [EXAMPLES=]: generated trees built with generated
# mkfs.erofs layouts, mounted on every source, plain and sharing, checked against the tree and
# the sharing model; a finding is shrunk and written to reports/found/layout-<id>.yaml (exit 1).
EXAMPLES ?=
layouts: deps venv
	$(PY) -m harness layouts $(VM_OPTS) $(if $(SEED),--seed=$(SEED)) --minutes=$(MINUTES) \
		$(if $(EXAMPLES),--examples=$(EXAMPLES)) --out=$(ARTIFACTS)/layouts

# make stress [KERNEL=] [SEED=] [MINUTES=] [READERS=]: parallel readers verify every byte
# while mounts churn (exit 1 on a wrong byte, an unexpected error or a kernel report).
READERS ?= 4
stress: deps venv
	$(PY) -m harness stress $(VM_OPTS) $(if $(SEED),--seed=$(SEED)) --minutes=$(MINUTES) \
		--readers=$(READERS) --out=$(ARTIFACTS)/stress

# make races [KERNEL=] [PAIRS=] [SECONDS=] [SEED=] [TARGETS=] [WIDENERS=]: every pair of
# operations (or PAIRS=read+umount,remount) side by side on mounts of one domain, each on
# every target for SECONDS, the windows held open; a finding is written to
# reports/found/race-<id>.yaml (exit 1). The pair table is in artifacts/races/races.md.
PAIRS ?=
SECONDS ?= 2
TARGETS ?=
WIDENERS ?=
races: deps venv
	$(PY) -m harness races $(VM_OPTS) $(if $(SEED),--seed=$(SEED)) --pairs='$(PAIRS)' \
		--seconds=$(SECONDS) --targets='$(TARGETS)' --wideners='$(WIDENERS)' \
		--out=$(ARTIFACTS)/races

shell: deps venv
	$(PY) -m harness shell $(VM_OPTS)

# CMD goes to the guest as one word, exactly as typed: $(value) keeps make from expanding
# $(...) in it, and the single quotes keep the host shell from parsing it (unquoted,
# `CMD='a; b'` would run b on the host).
CMD_QUOTED = '$(subst ','\'',$(value CMD))'
exec: deps venv
	@test -n $(CMD_QUOTED) || { echo "make exec needs CMD='...'"; exit 2; }
	@$(PY) -m harness exec $(VM_OPTS) -- $(CMD_QUOTED)

bench: deps venv
	$(PY) -m harness bench $(VM_OPTS) --out=$(ARTIFACTS)/bench

# make kernel [KERNEL_TREE=<dir>] [PATCHES=<mbox|dir|series>] [KCONFIG=f1,f2] [KCONFIG_DEBUG=1]
# builds a tree (default: Debian's linux-source of the default kernel) with kconfigs/;
# KERNEL=<spec> instead fetches or locates any kernel and describes it.
TREE_SPEC = tree:$(KERNEL_TREE)$(if $(REF),$(comma)ref=$(REF))$(if $(PATCHES),$(comma)patches=$(PATCHES))$(if $(KCONFIG),$(comma)kconfig=$(subst $(comma),+,$(KCONFIG)))$(if $(KCONFIG_DEBUG),$(comma)debug)
comma := ,
kernel: deps venv
	$(PY) -m harness kernel --kernel='$(if $(KERNEL),$(KERNEL),$(TREE_SPEC))'

# make check [KERNEL_TREE=<dir>] [PATCHES=..] [PYTEST_ARGS=...]: a kernel developer's loop
# after an edit: rebuild what changed in the tree (the same spec as make kernel), boot it
# with the cached guest image and run the sharing-semantics tests, or the PYTEST_ARGS
# selection of testcases/, to a verdict.
CHECK_SELECTION ?= testcases/test_sharing_semantics.py
check: deps venv
	$(PYTEST) $(if $(PYTEST_ARGS),testcases $(PYTEST_ARGS),$(CHECK_SELECTION)) -n $(RUN_JOBS) \
		--kernel='$(TREE_SPEC)' --accel=$(ACCEL) --artifacts=$(ARTIFACTS)/check

# make coverage [KERNEL=tree:...] [PYTEST_ARGS=...]: the suite (or a selection) on the tree
# built with gcov counters for fs/erofs; the report in $(ARTIFACTS)/coverage/report/.
coverage: deps venv
	$(PY) -m harness coverage $(VM_OPTS) --jobs=$(RUN_JOBS) --out=$(ARTIFACTS)/coverage \
		-- $(PYTEST_ARGS)

# make review MBOX=series.mbox | MSGID=<message-id> [KERNEL_TREE=] [BASE=] [PYTEST_ARGS=]:
# a patch series from the list judged for page cache sharing (harness/review/run.py); the
# reply, JSON, HTML and KCIDB JSON in $(ARTIFACTS)/review/. Exit 0 no regressions, 1
# regressions, 2 no verdict.
review: deps venv
	$(PY) -m harness review $(if $(MBOX),--mbox=$(MBOX)) $(if $(MSGID),--msgid=$(MSGID)) \
		$(if $(KERNEL_TREE),--tree=$(KERNEL_TREE)) $(if $(BASE),--base=$(BASE)) \
		--accel=$(ACCEL) --jobs=$(RUN_JOBS) --out=$(ARTIFACTS)/review -- $(PYTEST_ARGS)

# make savings [KERNEL=] [PAIRS=small,medium] [CONTAINERS=1,2,4,8,16]: memory saved on
# real container-image pairs (savings/pairs.yaml); table, plots and HTML in
# $(ARTIFACTS)/savings/.
savings: deps venv
	$(PY) -m harness savings $(VM_OPTS) $(if $(PAIRS),--pairs=$(PAIRS)) \
		$(if $(CONTAINERS),--containers=$(CONTAINERS)) --out=$(ARTIFACTS)/savings

# make matrix [MATRIX=matrix/nightly.yaml] [JOBS=N]: every cell, N at a time, into results/.
MATRIX ?= matrix/nightly.yaml
JOBS ?= 1
matrix: deps venv
	$(PY) -m harness matrix $(MATRIX) --jobs=$(JOBS)

# Regenerate the CI files from the matrix (a test fails when they are out of date).
ci-config: venv
	$(PY) -m harness ci-config $(MATRIX)

# make compare A=<results> B=<results>: outcome changes, new splats, moved measurements.
compare: venv
	@test -n "$(A)" -a -n "$(B)" || { echo "make compare needs A=<results dir> B=<results dir>"; exit 2; }
	$(PY) -m harness compare $(A) $(B) $(if $(TOL),--tolerance=$(TOL))

# make repro REPORT=reports/<name>.yaml [KERNEL=<spec>]: verdicts on the report's kernels.
# make repro MBOX=<mail> [KERNEL=<spec>]: a report as posted to the list (the reporter's image
# attached, a shell script or C program); the report derived from it is written beside the
# verdicts (artifacts/repro-<mail>/), to be edited and run again with REPORT=.
# make repro SYZBOT=<folder> [KERNEL_TREE=<git tree>] [PATCHES=<fix>]: a syzbot report as it
# comes (repro.c, .config, the text with its HEAD commit), built from its config at its
# commit where the tree has it; what cannot be honoured is listed.
# make can only exit 0 or 2: it succeeds when every kernel got a verdict (reproduced or not,
# printed with its evidence) and fails on an error. scripts/repro gives the verdict itself
# as the exit status (0 not reproduced, 1 reproduced, 2 error) for scripts and CI.
repro: deps venv
	@test -n "$(REPORT)$(MBOX)$(SYZBOT)" || { echo "make repro needs REPORT=reports/<name>.yaml, MBOX=<mail> or SYZBOT=<folder>"; exit 2; }
	@$(PY) -m harness repro $(REPORT) $(if $(MBOX),--mbox=$(MBOX)) $(if $(SYZBOT),--syzbot=$(SYZBOT) $(if $(KERNEL_TREE),--tree=$(KERNEL_TREE)) $(if $(PATCHES),--patches=$(PATCHES))) --accel=$(ACCEL) $(if $(KERNEL),--kernel=$(KERNEL)); rc=$$?; \
	case $$rc in \
	0) echo "make repro: NOT REPRODUCED on the last kernel (scripts/repro exits 0)";; \
	1) echo "make repro: REPRODUCED on the last kernel (scripts/repro exits 1)";; \
	*) echo "make repro: no verdict, error (exit status $$rc)"; exit $$rc;; \
	esac

# make mutations: every deliberate break of fs/erofs in reports/mutations/ must turn its
# tests red (patched: reproduced) while the unchanged tree passes them (base: not).
MUTATIONS ?= $(sort $(wildcard reports/mutations/*.yaml reports/mutations/explore/*.yaml reports/mutations/layouts/*.yaml reports/mutations/races/*.yaml))
mutations: deps venv
	@failed=; for r in $(MUTATIONS); do \
		scripts/repro $$r --accel=$(ACCEL) > $(ARTIFACTS)/mutation-$$(basename $$r .yaml).log 2>&1; rc=$$?; \
		tail -n 20 $(ARTIFACTS)/mutation-$$(basename $$r .yaml).log | grep -E '^ *(base|patched):'; \
		if [ $$rc -ne 1 ] || grep -q UNEXPECTED $(ARTIFACTS)/mutation-$$(basename $$r .yaml).log; then \
			failed="$$failed $$r"; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "make mutations: not as expected:$$failed"; exit 1; fi; \
	echo "make mutations: every mutation turned its tests red, the unchanged tree passed them"

# make bisect KERNEL_TREE=<git dir> GOOD=<rev> BAD=<rev> REPORT=<file>
bisect: deps venv
	@test -n "$(KERNEL_TREE)" -a -n "$(GOOD)" -a -n "$(BAD)" -a -n "$(REPORT)" || { \
		echo "make bisect needs KERNEL_TREE=<git dir> GOOD=<rev> BAD=<rev> REPORT=<file>"; exit 2; }
	$(PY) -m harness bisect --tree=$(KERNEL_TREE) --good=$(GOOD) --bad=$(BAD) \
		--report=$(REPORT) --accel=$(ACCEL)

clean:
	rm -rf $(VENV) $(ARTIFACTS) .mypy_cache .ruff_cache .pytest_cache
