#!/usr/bin/env bash
# The system packages the local server and the tests need, installed when missing (as root, with apt-get):
# - libpython3.X: the Python backend stub of the pip-shipped tritonserver embeds it;
# - cmake, g++, RapidJSON and googletest: `python -m emotion_triton.serving.native_backends` builds
#   Triton's PyTorch backend with them.
# - chromium and chromium-driver: tests/integration/test_locust_web.py drives the load test's web page in
#   headless Chromium (the test is skipped, with this reason, where they are missing).
# Elsewhere it names what is missing and changes nothing: the backend builds then say the same in
# one line, and the Python-backend classifiers keep working.
set -euo pipefail
python=${1:-python3}
py=$("$python" -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')

missing=()
ldconfig -p | grep -q "libpython${py}.so.1.0" || missing+=("libpython${py}")
command -v cmake >/dev/null || missing+=(cmake)
command -v g++ >/dev/null || command -v c++ >/dev/null || missing+=(g++)
[ -f /usr/include/rapidjson/document.h ] || missing+=(rapidjson-dev)
[ -f /usr/src/googletest/CMakeLists.txt ] || missing+=(googletest)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing system packages: ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "warning: missing system packages: ${missing[*]} (Debian: sudo apt-get install ${missing[*]})" >&2
fi
