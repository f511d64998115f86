#!/usr/bin/env bash
# Your own model through every cnntool command: train the example's CIFAR-style SmallNet for a
# few seconds (examples/own_model/train.py), then run each command on its checkpoint and its own
# 32-px test images. Usage: examples/own_model/run_all.sh [OUT_DIR]   (make demo runs it)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-own-model-out}"
mkdir -p "$out"

echo "== train SmallNet on 32-px patches of the sample photos, save it four ways -> $out/" >&2
python3 "$here/train.py" "$out"
data="$out/data/test"
# The checkpoint written by cnntool.save_checkpoint carries its preprocessing and class names:
# the architecture is all cnntool needs. (--trust-code: model.py is code from a file.)
model=("$out/small_net_cnntool.pt" --arch "$here/model.py:small_net" --trust-code)

echo "== predict: accuracy on its own test folder (labels from the class folders)" >&2
cnntool predict "${model[@]}" "$data" -q > "$out/predictions.jsonl"
echo "== the same weights as a bare state dict: preprocessing and names from files" >&2
cnntool predict "$out/small_net.pth" --arch "$here/model.py:small_net" --trust-code \
  --preprocessing "$out/preprocessing.json" --classes "$out/classes.txt" "$data" -q > /dev/null
echo "== ... and from a PyTorch Lightning checkpoint (model. prefix, names in hyper_parameters)" >&2
cnntool predict "$out/small_net_lightning.ckpt" --arch "$here/model.py:small_net" --trust-code \
  --preprocessing "$out/preprocessing.json" "$data" -q > /dev/null
echo "== without its preprocessing: cnntool guesses, and says so (a warning, not a silent 224 px)" >&2
cnntool predict "$out/small_net.pth" --arch "$here/model.py:small_net" --trust-code "$data" -q > /dev/null

echo "== layers and profile at its own 3×32×32 input" >&2
cnntool layers "${model[@]}" --format jsonl > "$out/layers.jsonl"
cnntool profile "${model[@]}" --format table --summary >&2
echo "== FGSM at ε = 2/255 -> $out/attack/" >&2
cnntool attack fgsm "${model[@]}" "$data" --eps 2/255 -o "$out/attack" --triptychs 4 -q > "$out/attack.jsonl"
echo "== filters, top patches (7-px receptive fields of features.1), deconv -> $out/visualize/" >&2
cnntool visualize filters "${model[@]}" -o "$out/visualize/filters.png" -q
cnntool visualize top-patches "${model[@]}" "$data" --layer features.1 --units 0-7 --top 6 \
  -o "$out/visualize/top_patches" -q > "$out/visualize/top_patches.jsonl"
image=$(find "$data" -name '*.png' | sort | head -1)
cnntool visualize deconv "${model[@]}" "$image" --layer features.2 -o "$out/visualize/deconv.png" -q > /dev/null
echo "== features, t-SNE map, diagnose, gradcheck" >&2
cnntool features "${model[@]}" "$data" -o "$out/features.npz" -q
cnntool embed --features "$out/features.npz" --perplexity 20 --plot "$out/embed.png" \
  --image-grid "$out/embed_grid.png" -q > "$out/embed.jsonl"
cnntool diagnose "${model[@]}" "$data" -o "$out/diagnose" -q > "$out/diagnose.jsonl"
cnntool gradcheck "${model[@]}" -q > "$out/gradcheck.jsonl"
echo "== done: $out/" >&2
