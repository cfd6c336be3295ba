#!/usr/bin/env bash
# tools/device/train_draft.sh: trains a draft model for picochat (issue 20,
# docs/speculative.md) with the picochat trainer on one GPU, in one device
# call under BUDGET seconds (default 540): the same data and recipe as
# picochat, half its depth and half its width (3 layers, n_embd 128, one
# 128-wide head: 1.6 M parameters, 3.2 MB in bf16), with picochat's own
# tokenizer, so `--draft-model` accepts it.
#
# Needs the prepared data in .train/ beside the repository's files, made on
# a machine with the Debian packages (the GPU machines fetch nothing), with
# picochat's tokenizer rather than a newly trained one:
#     apt-get install bible-kjv wordnet-base fortunes-min
#     python3 tools/training_data/prepare.py --out .train \
#         --tokenizer models/picochat/tokenizer.pkl --tests-dir .train
# and .train carried to the device. Writes model_<step>.pt, meta_<step>.json,
# tokenizer.pkl, loss.json (and loss.png with matplotlib) and train.log to
# $OUT (default /tmp/nc-device-out), flat: put them in models/picochat-draft/
# and measure the acceptance on the CPU with
#     python3 tools/spec_bench.py --draft models/picochat-draft --scenarios chat,quote
#     build/tests/test_spec_picochat  (with the draft added to its configurations)
#   usage: [BUDGET=540] [DEPTH=3] [N_EMBD=128] bash tools/device/train_draft.sh  (carry .train)
set -u
cd "$(dirname "$0")/../.." || exit 2
OUT=${OUT:-/tmp/nc-device-out}
BUDGET=${BUDGET:-540}
mkdir -p "$OUT"
[ -f .train/data.npz ] || { echo "no .train/data.npz: prepare it first (see the top of this script)" >&2; exit 2; }
python3 - <<'EOF' || exit 2
import pickle, sys
a, b = (pickle.load(open(p, "rb")) for p in (".train/tokenizer.pkl", "models/picochat/tokenizer.pkl"))
if (a._mergeable_ranks, a._special_tokens, a._pat_str) != (b._mergeable_ranks, b._special_tokens, b._pat_str):
    sys.exit(".train/tokenizer.pkl is not picochat's: prepare with --tokenizer models/picochat/tokenizer.pkl")
EOF
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
# picochat's own schedule (models/picochat/README.md): 900 steps of text, 3,300 of conversations
python3 tools/train_picochat.py --data .train --out "$OUT/draft" --depth "${DEPTH:-3}" --n-embd "${N_EMBD:-128}" \
    --n-head 1 --batch 128 --pretrain-steps 900 --sft-steps 3300 --compile \
    --time-limit $((BUDGET - 60)) 2>&1 | tee "$OUT/train.log"
mv "$OUT"/draft/* "$OUT"/ && rmdir "$OUT/draft"
ls -l "$OUT"
