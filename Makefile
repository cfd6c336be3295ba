# nanochat-c: `make` builds build/nanochat; `make test` runs every test.
#
# Layout: src/<layer>/*.c form build/libnanochat.a and build/libnanochat.so
# (the same objects, position-independent; the shared library carries its
# dependencies, so Python's ctypes loads it alone); src/cli/*.c link it into
# build/nanochat; tests/c/test_*.c become build/tests/test_*; tests/fuzz/
# fuzz_*.c become libFuzzer targets (clang); examples/*.c (programs using
# only the public include/nanochat.h) become build/examples/*. CUDA sources
# (src/**/*.cu) are built when nvcc is found, for CUDA_ARCH (default: Ampere
# + Hopper); `make gpu-bundle` also builds dev/kernels/*.cu into build/dev/.

CC       ?= cc
BUILD    ?= build
OPT      ?= -O2
CFLAGS   ?= $(OPT) -g
CFLAGS   += -std=c11 -Wall -Wextra -Wno-unused-parameter -D_GNU_SOURCE -pthread -fPIC -Isrc -Iinclude
LDLIBS   += -lpcre2-8 -lcjson -lmicrohttpd -ledit -lcurl -lcrypto -lm -pthread

NVCC     ?= $(shell command -v nvcc 2>/dev/null)
CUDA_ARCH ?= -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90a,code=sm_90a
NVCCFLAGS ?= -O3 -std=c++17 -lineinfo $(CUDA_ARCH) -Isrc -Xcompiler -Wall,-fPIC

LIB_SRC  := $(shell find src -name '*.c' -not -path 'src/cli/*' | sort)
CLI_SRC  := $(shell find src/cli -name '*.c' | sort)
CU_SRC   := $(shell find src -name '*.cu' | sort)
TEST_SRC := $(shell find tests/c -name 'test_*.c' 2>/dev/null | sort)
FUZZ_SRC := $(shell find tests/fuzz -name 'fuzz_*.c' 2>/dev/null | sort)
EX_SRC   := $(shell find examples -name '*.c' 2>/dev/null | sort)

# Tensor parallel (src/backend/cuda/cuda_tp.cu) is built when NCCL's nccl.h
# is found beside the toolkit or in /usr/include; it loads libnccl.so.2 at
# run time (dlopen), so nothing links against NCCL.
TP_SRC   := src/backend/cuda/cuda_tp.cu
ifneq ($(NVCC),)
  CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(realpath $(NVCC)))
  NCCL_H    ?= $(firstword $(wildcard $(CUDA_HOME)/include/nccl.h /usr/include/nccl.h))
  CFLAGS    += -DNC_WITH_CUDA
  NVCCFLAGS += -DNC_WITH_CUDA
  LDLIBS    += -L$(CUDA_HOME)/lib64 -L$(CUDA_HOME)/lib64/stubs -Wl,-rpath,$(CUDA_HOME)/lib64 \
               -lcublasLt -lcudart -lstdc++
  ifneq ($(NCCL_H),)
    CFLAGS    += -DNC_WITH_NCCL
    NVCCFLAGS += -DNC_WITH_NCCL
  else
    CU_SRC    := $(filter-out $(TP_SRC),$(CU_SRC))
  endif
  CU_OBJ    := $(CU_SRC:%.cu=$(BUILD)/%.o)
endif

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(CU_OBJ)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TESTS    := $(TEST_SRC:tests/c/%.c=$(BUILD)/tests/%)
FUZZERS  := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)
EXAMPLES := $(EX_SRC:examples/%.c=$(BUILD)/examples/%)

.PHONY: all test tests examples fuzz asan clean gpu-bundle
all: $(BUILD)/nanochat $(BUILD)/libnanochat.so tests examples

$(BUILD)/libnanochat.a: $(LIB_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

# --no-undefined: every symbol resolves against the libraries named here.
$(BUILD)/libnanochat.so: $(LIB_OBJ)
	@mkdir -p $(@D)
	$(CC) -shared $(LDFLAGS) -Wl,--no-undefined -Wl,-soname,libnanochat.so -o $@ $^ $(LDLIBS)

$(BUILD)/nanochat: $(CLI_OBJ) $(BUILD)/libnanochat.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libnanochat.a $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/%.o: %.cu
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -c -o $@ $<

tests: $(TESTS)
$(BUILD)/tests/%: tests/c/%.c $(BUILD)/libnanochat.a $(wildcard tests/c/*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -Itests/c -o $@ $< $(BUILD)/libnanochat.a $(LDLIBS)

# Programs embedding the engine through the public header only (no -Isrc).
examples: $(EXAMPLES)
$(BUILD)/examples/%: examples/%.c include/nanochat.h $(BUILD)/libnanochat.a
	@mkdir -p $(@D)
	$(CC) $(OPT) -g -std=c11 -Wall -Wextra -pthread -Iinclude $(LDFLAGS) -o $@ $< $(BUILD)/libnanochat.a $(LDLIBS)

# The whole suite: C tests, Python comparisons against reference tools,
# CLI and server tests, bounded fuzzing. Ends with `tests: N passed, N failed`.
test: all
	@BUILD=$(BUILD) bash tests/run.sh

# libFuzzer targets under AddressSanitizer (clang).
FUZZ_CC ?= clang
FUZZ_LIB_SRC := $(filter-out src/backend/cuda/%,$(LIB_SRC))
fuzz: $(FUZZERS)
$(BUILD)/fuzz/%: tests/fuzz/%.c $(FUZZ_LIB_SRC)
	@mkdir -p $(@D)
	$(FUZZ_CC) -std=c11 -g -O1 -D_GNU_SOURCE -pthread -Isrc -fsanitize=fuzzer,address,undefined \
	    -fno-sanitize-recover=undefined -o $@ $< $(FUZZ_LIB_SRC) -lpcre2-8 -lcjson -lmicrohttpd -ledit -lcurl -lcrypto -lm

# Everything again under AddressSanitizer + UBSan, CPU only, in build-asan/.
asan:
	$(MAKE) BUILD=build-asan NVCC= OPT="-O1 -fsanitize=address,undefined -fno-omit-frame-pointer" \
	    LDFLAGS="-fsanitize=address,undefined"

clean:
	rm -rf $(BUILD) build-asan

# A folder that runs this build on a GPU machine without the development
# packages: nanochat, the tests (GPU_TESTS: all unless named), the dev/kernels
# harnesses and the shared libraries they load, plus a `run` script
# (tools/gpu_bundle.sh says what goes in; README: Running a build on a GPU
# machine). GPU_BASE=<commit> adds that commit's nanochat as nanochat_base.
# Objects are not rebuilt when CUDA_ARCH changes: give another CUDA_ARCH its
# own BUILD folder (e.g. build/sm90a).
GPU_BUNDLE ?= $(BUILD)/gpu-bundle
GPU_TESTS  ?= $(notdir $(TESTS))
DEV_CU     := $(wildcard dev/kernels/*.cu)
DEV_BIN    := $(DEV_CU:dev/kernels/%.cu=$(BUILD)/dev/%)
ifneq ($(NVCC),)
gpu-bundle: $(BUILD)/nanochat $(BUILD)/libnanochat.so $(GPU_TESTS:%=$(BUILD)/tests/%) $(DEV_BIN) $(if $(GPU_BASE),gpu-base)
	CUDA_ARCH='$(CUDA_ARCH)' GPU_BASE='$(GPU_BASE)' GPU_BASE_BIN='$(if $(GPU_BASE),$(BUILD)/gpu-base/build/nanochat)' \
	    bash tools/gpu_bundle.sh $(GPU_BUNDLE) $(filter-out gpu-base,$^)

# The old build, from a `git archive` of GPU_BASE (no checkout), made anew each time.
.PHONY: gpu-base
gpu-base:
	rm -rf $(BUILD)/gpu-base && mkdir -p $(BUILD)/gpu-base
	git archive --format=tar '$(GPU_BASE)' | tar -x -C $(BUILD)/gpu-base
	$(MAKE) -C $(BUILD)/gpu-base BUILD=build GPU_BASE= CUDA_ARCH='$(CUDA_ARCH)' build/nanochat
else
gpu-bundle:
	@echo "make gpu-bundle: needs nvcc (the CUDA toolkit); none found" >&2; exit 1
endif

# The harnesses include their kernels' sources and harness.cuh.
$(BUILD)/dev/%: dev/kernels/%.cu
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -o $@ $< -lcublasLt

# The chat page is embedded with .incbin (src/server/web_page.c).
$(BUILD)/src/server/web_page.o: src/server/web/index.html

# The bundled model's fallback location for programs linking the library
# from anywhere (engine/bundle.c: nc_default_model_path).
$(BUILD)/src/engine/bundle.o: CFLAGS += -DNC_SOURCE_MODELS_DIR='"$(CURDIR)/models"'

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(DEV_BIN:=.d)
