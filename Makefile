# DwarfStar build. `make` builds every program at the repository root,
# `make test` runs the whole suite, `make test SANITIZE=1` the same under
# ASan/UBSan (objects go to build-san/ so the two builds never mix).
#
# Library code lives in src/<module>/*.c and is linked into every program;
# each tools/<prog>.c holds one main(); each tests/test_*.c is one test program.

CC      ?= cc
OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=c11 -Wall -Wextra -D_GNU_SOURCE -Isrc -pthread -MMD -MP
LDLIBS  += -lm -lpthread -lpcre2-8 -ljansson -ledit -luring -lmicrohttpd

ifeq ($(SANITIZE),1)
BUILD   := build-san
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
BINDIR  := build-san/bin
else
BUILD   := build
BINDIR  := .
endif

LIB_SRC := $(wildcard src/*/*.c)
LIB_OBJ := $(patsubst src/%.c,$(BUILD)/src/%.o,$(LIB_SRC))
PROGS   := $(patsubst tools/%.c,%,$(wildcard tools/*.c))
PROG_BIN := $(addprefix $(BINDIR)/,$(PROGS))
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

.PHONY: all test clean programs tests
all: $(PROG_BIN) $(TEST_BIN) $(BENCH_BIN)
programs: $(PROG_BIN)
tests: $(TEST_BIN)

$(BUILD)/libds4.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BINDIR)/%: $(BUILD)/tools/%.o $(BUILD)/libds4.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/libds4.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(BUILD)/libds4.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

test: all
	DS4_BIN=$(BINDIR) DS4_BUILD=$(BUILD) bash tests/run.sh $(TEST_BIN)

clean:
	rm -rf build build-san $(PROGS)

-include $(shell find build build-san -name '*.d' 2>/dev/null)
