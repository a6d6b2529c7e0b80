#!/bin/sh
# make test-fuzz: build tests/fuzz/fuzz_gwcore.c with libFuzzer, AddressSanitizer
# and UndefinedBehaviorSanitizer, then fuzz gw_scan for FUZZ_SECONDS over the
# seed corpus in tests/fuzz/corpus/ (docs/native.md, "Fuzzing").
#
# Needs clang and libFuzzer's runtime: installed from Debian when run as root,
# otherwise a missing toolchain is a failure (never a skip).
set -eu
cd "$(dirname "$0")/../.."

# Fuzzing time in seconds (libFuzzer's -max_total_time); docs/native.md.
FUZZ_SECONDS=${FUZZ_SECONDS:-120}
# Longest input tried: a few lines of the default scale, one up to ~68 KiB.
FUZZ_MAX_LEN=${FUZZ_MAX_LEN:-70000}
# Seconds one input may take before it counts as a hang (an input takes
# milliseconds; the margin is for a shared, loaded 2-CPU machine).
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-20}
BUILD=${FUZZ_BUILD:-build/fuzz}
CC=${FUZZ_CC:-clang}
NATIVE=${FUZZ_NATIVE:-gateway/native}
B3=$NATIVE/blake3

fail() {
  echo "test-fuzz: $*" >&2
  exit 1
}

# Does $CC link a libFuzzer target with ASan and UBSan?
can_link() {
  command -v "$CC" >/dev/null 2>&1 || return 1
  probe_dir=$(mktemp -d)
  printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return 0; }\n' \
    >"$probe_dir/probe.c"
  if "$CC" -fsanitize=fuzzer,address,undefined "$probe_dir/probe.c" -o "$probe_dir/probe" \
    >"$probe_dir/log" 2>&1; then
    rm -rf "$probe_dir"
    return 0
  fi
  rm -rf "$probe_dir"
  return 1
}

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! can_link; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test-fuzz: installing clang and libFuzzer's runtime from Debian"
    apt-get update -qq
    command -v clang >/dev/null 2>&1 || apt_install clang
    # libFuzzer and the sanitizers' runtimes: libclang-rt-N-dev for clang N
    # (Debian 12: 14), a recommendation of clang that --no-install-recommends skips.
    major=$(clang -dumpversion | cut -d. -f1)
    can_link || apt_install "libclang-rt-$major-dev"
    can_link || fail "clang still cannot link -fsanitize=fuzzer,address,undefined (libclang-rt-$major-dev installed)"
  else
    fail "$CC cannot link -fsanitize=fuzzer,address,undefined; as root: apt-get install -y --no-install-recommends clang libclang-rt-14-dev (the runtime package matching clang's version)"
  fi
fi

[ -f "$NATIVE/gwcore.c" ] || fail "$NATIVE/gwcore.c is missing"

mkdir -p "$BUILD/obj" "$BUILD/new-corpus" "$BUILD/artifacts"
FLAGS="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -g -O1"
FLAGS="$FLAGS -fno-omit-frame-pointer -I$NATIVE -I$B3"
# BLAKE3 as setup.py builds it for the module: the portable code only.
B3FLAGS="-DBLAKE3_NO_SSE2 -DBLAKE3_NO_SSE41 -DBLAKE3_NO_AVX2 -DBLAKE3_NO_AVX512 -DBLAKE3_USE_NEON=0"
# shellcheck disable=SC2086
{
  $CC $FLAGS $B3FLAGS -c "$B3/blake3.c" -o "$BUILD/obj/blake3.o"
  $CC $FLAGS $B3FLAGS -c "$B3/blake3_dispatch.c" -o "$BUILD/obj/blake3_dispatch.o"
  $CC $FLAGS $B3FLAGS -c "$B3/blake3_portable.c" -o "$BUILD/obj/blake3_portable.o"
  # its allocations go through the harness, which makes one fail on request
  $CC $FLAGS -Drealloc=gwfuzz_realloc -c "$NATIVE/gwcore.c" -o "$BUILD/obj/gwcore.o"
  $CC $FLAGS -c tests/fuzz/fuzz_gwcore.c -o "$BUILD/obj/fuzz_gwcore.o"
  $CC $FLAGS "$BUILD"/obj/*.o -o "$BUILD/fuzz_gwcore"
}

echo "test-fuzz: fuzzing gw_scan for ${FUZZ_SECONDS}s (new inputs: $BUILD/new-corpus, crashes: $BUILD/artifacts)"
# New corpus entries go to the first directory ($BUILD/new-corpus), never into
# the repository; docs/native.md tells how to merge the useful ones (-merge=1).
status=0
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
  "$BUILD/fuzz_gwcore" \
  -max_total_time="$FUZZ_SECONDS" -max_len="$FUZZ_MAX_LEN" -timeout="$FUZZ_TIMEOUT" \
  -dict=tests/fuzz/json.dict -artifact_prefix="$BUILD/artifacts/" -print_final_stats=1 \
  "$BUILD/new-corpus" tests/fuzz/corpus >"$BUILD/fuzz.log" 2>&1 || status=$?
if [ "$status" != 0 ]; then
  # the sanitizer's or the trap's report, with the input that caused it
  grep -v '# Uses: ' "$BUILD/fuzz.log" | tail -n 60 >&2
  echo "test-fuzz: FAILED (exit $status); full log: $BUILD/fuzz.log" >&2
  for f in "$BUILD"/artifacts/*; do
    [ -e "$f" ] || continue
    echo "test-fuzz: reproducer: $f (run: $BUILD/fuzz_gwcore $f)" >&2
  done
  exit 1
fi
grep -E '^(#[0-9]+[[:space:]]+DONE|Done |stat::)' "$BUILD/fuzz.log" || true
echo "test-fuzz: no crash, leak, hang or invariant violation in ${FUZZ_SECONDS}s"
