# sharpzo_ext: set-up, build, tests. On a fresh machine: `make demo` or `make test`.
# Both create .venv, install the pinned stack (requirements.txt) and build the extension when
# needed. Build switches (SHARPZO_EXT_CUDA, CUDA_HOME, TORCH_CUDA_ARCH_LIST): see setup.py.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEPS := $(VENV)/.requirements-installed
EXT := sharpzo_ext/_C.abi3.so
SOURCES := $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' -o -name '*.h') \
	csrc/compile_flags.txt scripts/cuda_home.py setup.py pyproject.toml
TORCH_PREFIX = $$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)

.PHONY: demo test test-quick build ctest ctest-aarch64 check-kernel-code pytest test-cpu-only-library bench bench-avx2 clean

demo: $(EXT)
	$(VENV)/bin/sharpzo-ext train

test: ctest ctest-aarch64 check-kernel-code pytest test-cpu-only-library

# The quick loop while editing: every Python test but those marked slow (under 3 minutes on 2
# cores). `make test` runs everything.
test-quick: $(EXT)
	$(PY) -m pytest -q -m "not slow"

build: $(EXT)

$(DEPS): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(EXT): $(DEPS) $(SOURCES)
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

# C++ tests of the header-only stream code: no Python, no libtorch.
ctest:
	cmake -S . -B build/ctest -DSHARPZO_BUILD_TESTS=ON > /dev/null
	cmake --build build/ctest -j 2 > /dev/null
	ctest --test-dir build/ctest --output-on-failure

# The same C++ tests cross-compiled for ARM (aarch64) and run under qemu-user: test_stream_bits
# shows that ARM computes the x86 bits. Skipped, saying so, where the tools are missing.
ctest-aarch64:
	@if command -v aarch64-linux-gnu-g++ > /dev/null && command -v qemu-aarch64 > /dev/null; then \
		cmake -S . -B build/ctest-aarch64 -DSHARPZO_BUILD_TESTS=ON \
			-DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake > /dev/null && \
		cmake --build build/ctest-aarch64 -j 2 > /dev/null && \
		ctest --test-dir build/ctest-aarch64 --output-on-failure; \
	else \
		echo "ctest-aarch64: SKIPPED, no aarch64 cross-compiler or qemu-aarch64" \
			"(apt-get install g++-aarch64-linux-gnu qemu-user)"; \
	fi

# The built kernels' machine code: no perturbation tile clone uses the slow 64-bit multiply.
check-kernel-code: $(EXT)
	$(PY) scripts/check_kernel_code.py $(EXT)

pytest: $(EXT)
	$(PY) -m pytest -q --durations=20

# $(call cpu_only_library,DIR,CMAKE_ARGS): the op library built by CMake against libtorch with
# CUDA off, in DIR (log: DIR.log).
define cpu_only_library
	mkdir -p build
	cmake -S . -B $(1) -DSHARPZO_BUILD_TESTS=OFF -DSHARPZO_BUILD_EXTENSION=ON \
		-DSHARPZO_EXT_CUDA=0 $(2) -DCMAKE_PREFIX_PATH="$(TORCH_PREFIX)" \
		-DPython3_EXECUTABLE="$(abspath $(PY))" > $(1).log 2>&1 || (cat $(1).log; exit 1)
	cmake --build $(1) -j 2 >> $(1).log 2>&1 || (cat $(1).log; exit 1)
endef

# The CPU-only build, run through the op tests (the package loads it in place of _C when
# SHARPZO_EXT_LIBRARY is set).
test-cpu-only-library: $(DEPS)
	$(call cpu_only_library,build/cpu-only,)
	SHARPZO_EXT_LIBRARY=build/cpu-only/libsharpzo_ops.so $(PY) -m pytest -q -m ops

bench: $(EXT)
	$(PY) -m sharpzo_ext bench

# The kernel suites on the AVX2 code, as an AVX2-only machine runs it: the op library built
# without AVX-512 clones (SHARPZO_CPU_NO_AVX512) and loaded in place of _C.
bench-avx2: $(DEPS)
	$(call cpu_only_library,build/avx2-only,-DSHARPZO_CPU_NO_AVX512=ON)
	SHARPZO_EXT_LIBRARY=build/avx2-only/libsharpzo_ops.so $(PY) -m sharpzo_ext bench \
		--suite perturb --suite sparse_zscore --suite cmaes $(BENCH_ARGS)

clean:
	rm -rf build sharpzo_ext/*.so *.egg-info
