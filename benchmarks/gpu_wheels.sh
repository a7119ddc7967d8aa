#!/usr/bin/env sh
# Wheels that gpu_check.py needs on a GPU machine that cannot download (Python 3.12, x86-64), at the versions
# of requirements.lock, into .whl/ (about 56 MB). The machine's image already has torch (CUDA), accelerate,
# safetensors, tokenizers, huggingface_hub, pandas, pyarrow and pyyaml; these are the packages it lacks or holds
# at other versions. See benchmarks/README.md, "GPU check".
set -eu
cd "$(dirname "$0")/.."
pin() { grep -i "^$1==" requirements.lock; }
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${PYVER:-3.12}" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  "$(pin bitsandbytes)" "$(pin transformers)" "$(pin peft)" "$(pin datasets)" "$(pin dill)" "$(pin multiprocess)"
du -sh .whl
