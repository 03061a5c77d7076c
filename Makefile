# DwarfStar build. `make` builds every program at the repository root,
# `make test` runs the whole suite, `make test SANITIZE=1` the same under
# ASan/UBSan (objects go to build-san/ so the two builds never mix).
#
# Library code lives in src/<module>/*.c and is linked into every program;
# each tools/<prog>.c holds one main(); each tests/test_*.c is one test program.

CC      ?= cc
OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
# override: kept even when CFLAGS is given on the command line.  The
# kernels' bit-identity to the scalar reference needs mul-then-add never
# fused into FMA (ISO C mode already implies it; say so explicitly).
override CFLAGS += -std=c11 -ffp-contract=off -Wall -Wextra -D_GNU_SOURCE -Isrc -pthread -MMD -MP
LDLIBS  += -lm -lpthread -lpcre2-8 -ljansson -ledit -luring -lmicrohttpd

ifeq ($(SANITIZE),1)
BUILD   := build-san
override CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
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

# ---------------------------------------------------------------------------
# CUDA backend (issue #7).  Nothing above depends on this section: `make`,
# `make test` and CI's CPU build never run nvcc.  `make cuda` builds every
# program with the CUDA backend linked in under build-cuda/ (objects with
# -DDS4_CUDA, programs in build-cuda/bin/); `make cuda-check` only compiles
# the CUDA sources and the C files that reference them (no GPU needed).
NVCC      ?= nvcc
CUDA_ARCH ?= 90
CUDA_HOME ?= $(patsubst %/bin/,%,$(dir $(shell command -v $(NVCC) 2>/dev/null)))
CUDA_BUILD := build-cuda
NVCCFLAGS ?= -O2 -std=c++17 -gencode=arch=compute_$(CUDA_ARCH),code=sm_$(CUDA_ARCH) \
             -Xcompiler -Wall,-Wextra -Isrc -DDS4_CUDA -MMD -MP
CUDA_LDLIBS := -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lstdc++

CUDA_SRC     := $(wildcard src/cuda/*.cu)
CUDA_OBJ     := $(patsubst src/%.cu,$(CUDA_BUILD)/src/%.o,$(CUDA_SRC))
CUDA_LIB_OBJ := $(patsubst src/%.c,$(CUDA_BUILD)/src/%.o,$(LIB_SRC)) $(CUDA_OBJ)
CUDA_TOOLS   := $(patsubst tools/cuda/%.cu,%,$(wildcard tools/cuda/*.cu))
CUDA_BIN     := $(addprefix $(CUDA_BUILD)/bin/,$(PROGS) $(CUDA_TOOLS))
CUDA_C_FLAGS := $(filter-out -fsanitize%,$(CFLAGS)) -DDS4_CUDA

.PHONY: cuda cuda-check clean-cuda
cuda: $(CUDA_BIN)
cuda-check: $(CUDA_OBJ) $(CUDA_BUILD)/src/engine/forward.o $(CUDA_BUILD)/src/engine/snapshot.o \
            $(CUDA_BUILD)/src/cli/args.o

$(CUDA_BUILD)/src/%.o: src/%.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c -o $@ $<

$(CUDA_BUILD)/src/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CUDA_C_FLAGS) -c -o $@ $<

$(CUDA_BUILD)/tools/%.o: tools/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CUDA_C_FLAGS) -c -o $@ $<

$(CUDA_BUILD)/tools/cuda/%.o: tools/cuda/%.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c -o $@ $<

$(CUDA_BUILD)/libds4.a: $(CUDA_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(addprefix $(CUDA_BUILD)/bin/,$(PROGS)): $(CUDA_BUILD)/bin/%: $(CUDA_BUILD)/tools/%.o $(CUDA_BUILD)/libds4.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(CUDA_LDLIBS)

$(addprefix $(CUDA_BUILD)/bin/,$(CUDA_TOOLS)): $(CUDA_BUILD)/bin/%: $(CUDA_BUILD)/tools/cuda/%.o $(CUDA_BUILD)/libds4.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(CUDA_LDLIBS)

clean-cuda:
	rm -rf $(CUDA_BUILD)

ifneq ($(filter cuda%,$(MAKECMDGOALS)),)
-include $(shell find $(CUDA_BUILD) -name '*.d' 2>/dev/null)
endif
