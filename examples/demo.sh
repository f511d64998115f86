#!/usr/bin/env bash
# The main job on the built-in model, as `make demo` runs it: layers, profile and predictions of
# EfficientNet-Lite0 (trained on ImageNet; weights shipped in a pip package) on sample photos.
# Every command here is also a line a user can type. Usage: examples/demo.sh [OUT_DIR]
set -euo pipefail
out="${1:-demo-out}"
mkdir -p "$out"
model=efficientnet_lite0

echo "== layers of $model -> $out/layers.jsonl" >&2
cnntool layers "$model" --format jsonl > "$out/layers.jsonl"

echo "== profile of $model (params, MACs/FLOPs, receptive fields) -> $out/profile.jsonl" >&2
cnntool profile "$model" --format jsonl > "$out/profile.jsonl"
cnntool profile "$model" --format table --summary >&2

echo "== predictions on foolbox's 20 labelled ImageNet photos -> $out/predictions.jsonl" >&2
cnntool predict "$model" imagenet-samples --top 5 > "$out/predictions.jsonl"

echo "== predictions on the photos that scikit-image, scikit-learn and matplotlib ship" >&2
cnntool predict "$model" photos --top 3 > "$out/photos.jsonl"

echo "== LeNet-5 on 5,000 MNIST digits (clean and adversarially trained)" >&2
cnntool predict lenet5-mnist mnist-5k --batch-size 500 -q > "$out/mnist_clean.jsonl"
cnntool predict lenet5-mnist-adv mnist-5k --batch-size 500 -q > "$out/mnist_adv.jsonl"
for f in "$out/mnist_clean.jsonl" "$out/mnist_adv.jsonl"; do
  python3 - "$f" <<'PY' >&2
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"{sys.argv[1]}: top-1 accuracy {sum(r['correct'] for r in rows)}/{len(rows)}")
PY
done
echo "== FGSM on the ImageNet samples with $model (ε = 2/255): triptychs -> $out/attack/" >&2
cnntool attack fgsm "$model" imagenet-samples --eps 2/255 -o "$out/attack" --triptychs 4 > "$out/attack.jsonl"
echo "== FGSM ε-sweep, clean vs adversarially trained LeNet-5 -> $out/mnist_sweep.png" >&2
# five ε, each an attack on all 5,000 digits (0.25 left out: past the knee at 0.15); the clean
# point ε = 0 is every record's clean_accuracy, so it costs no attack of its own
for m in lenet5-mnist lenet5-mnist-adv; do
  cnntool attack fgsm "$m" mnist-5k --eps 0.05,0.1,0.15,0.2,0.3 --batch-size 500 -q > "$out/sweep_$m.jsonl"
done
python3 - "$out" <<'PY'
import json, sys
from cnntool.io.figures import save_accuracy_plot
out, curves = sys.argv[1], {}
for name in ("lenet5-mnist", "lenet5-mnist-adv"):
    rows = [json.loads(line) for line in open(f"{out}/sweep_{name}.jsonl")]
    eps = [0.0] + [r["eps"] for r in rows]
    curves[name] = (eps, [rows[0]["clean_accuracy"]] + [r["adv_accuracy"] for r in rows])
save_accuracy_plot(f"{out}/mnist_sweep.png", curves, title="FGSM on 5,000 MNIST digits")
PY

echo "== gradcheck: LeNet-5's gradients against finite differences (on a float64 copy)" >&2
cnntool gradcheck lenet5-mnist > "$out/gradcheck_lenet5.jsonl"
echo "== gradcheck: a hand-written Swish with a planted backward bug (examples/buggy_layer.py)" >&2
if cnntool gradcheck examples/buggy_layer.py:buggy_net --trust-code --per-layer \
    > "$out/gradcheck_buggy.jsonl"; then
  echo "unexpected: gradcheck did not find the planted bug" >&2
  exit 1
else
  echo "(exit code $?, as CI would see it: the wrong gradients are named above)" >&2
fi

echo "== conv1 filters of $model, BatchNorm folded in -> $out/filters_stem.png" >&2
cnntool visualize filters "$model" --fold-bn -o "$out/filters_stem.png" --format jsonl -q > "$out/filters_stem.jsonl"
echo "== feature maps of _blocks.4 for one ImageNet photo -> $out/activations.png" >&2
cnntool visualize activations "$model" imagenet-samples --index 3 --layer _blocks.4 --top 16 -o "$out/activations.png" -q
echo "== top patches of 8 units of _blocks.3 over the sample photos -> $out/top_patches/" >&2
cnntool visualize top-patches "$model" photos --layer _blocks.3 --units 0-7 --top 6 -o "$out/top_patches" -q > "$out/top_patches.jsonl"
echo "== top patches of LeNet-5's conv2 over the 5,000 MNIST digits -> $out/top_patches_mnist/" >&2
cnntool visualize filters lenet5-mnist -o "$out/filters_lenet5.png" -q
cnntool visualize top-patches lenet5-mnist mnist-5k --layer conv2 --units 0-15 --top 8 --batch-size 500 -o "$out/top_patches_mnist" -q > "$out/top_patches_mnist.jsonl"

photo=$(python3 -c "from cnntool.core.samples import photos; print(photos()[1])")  # chelsea the cat
echo "== deconvnet and guided backprop for 3 units of lite0's _blocks.10 on a photo -> $out/visualize/" >&2
mkdir -p "$out/visualize"
for method in deconv guided; do
  cnntool visualize deconv efficientnet_lite0 "$photo" --layer _blocks.10 --unit 5 --unit 9 --unit 40 \
    --method "$method" -o "$out/visualize/lite0_$method.png" -q > "$out/visualize/lite0_$method.jsonl"
done
cnntool visualize deconv efficientnet_lite0 "$photo" --method saliency --smooth 8 \
  -o "$out/visualize/lite0_saliency.png" --raw "$out/visualize/lite0_saliency.npy" -q > /dev/null
python3 -c "
from PIL import Image; from cnntool.core.samples import mnist_5k
digits, _ = mnist_5k(); Image.fromarray(digits[0].squeeze().astype('uint8')).save('$out/visualize/digit.png')"
cnntool visualize deconv lenet5-mnist "$out/visualize/digit.png" --layer conv2 --unit 3 --unit 7 \
  --method guided -o "$out/visualize/lenet5_guided.png" -q > /dev/null
# lite0's class visualizations (224 px, 256 MACO steps: about 3 min on 2 cores) are in
# `make showcase`; the accentuation below runs the same optimizer for 128 steps from a photo.
echo "== feature accentuation of the cat photo toward 'tiger' -> $out/visualize/lite0_accentuation.png" >&2
cnntool visualize maximize efficientnet_lite0 --start "$photo" --accentuate --class tiger \
  -o "$out/visualize/lite0_accentuation.png" -q > "$out/visualize/lite0_accentuation.jsonl"
echo "== LeNet-5's ten digits with a PCA prior from mnist-5k, judged by lenet5-mnist-adv -> $out/visualize/" >&2
cnntool visualize maximize lenet5-mnist $(printf -- '--class %d ' 0 1 2 3 4 5 6 7 8 9) \
  --prior-data mnist-5k -o "$out/visualize/lenet5_classes.png" -q > "$out/visualize/lenet5_classes.jsonl"

echo "== t-SNE map of LeNet-5's penultimate features of the 5,000 MNIST digits -> $out/embed_mnist_*.png" >&2
cnntool features lenet5-mnist mnist-5k --layer relu3 --batch-size 500 -o "$out/features_mnist.npz" -q
cnntool embed --features "$out/features_mnist.npz" --plot "$out/embed_mnist_scatter.png" --image-grid "$out/embed_mnist_grid.png" --summary "$out/embed_mnist.json" -q > "$out/embed_mnist.jsonl"

echo "== diagnose: the built-in LeNet-5 and a deliberately broken copy (examples/broken_lenet.py), side by side -> $out/diagnose_*" >&2
cnntool diagnose lenet5-mnist mnist-5k --limit 1000 --batch-size 250 -o "$out/diagnose_lenet5" > "$out/diagnose_lenet5.jsonl"
cnntool diagnose examples/broken_lenet.py:broken_lenet5 --trust-code mnist-5k --limit 1000 --batch-size 250 -o "$out/diagnose_broken" > "$out/diagnose_broken.jsonl"

echo "== your own model: a CIFAR-style net trained here for seconds, through every command -> $out/own_model/" >&2
bash "$(dirname "$0")/own_model/run_all.sh" "$out/own_model"

echo "== the microscope: one offline website per model (lite0 without feature visualizations here: with them it takes about 5 min, make showcase)" >&2
# guided backprop of each unit's first hit only (one backward pass per unit; 3 by default)
cnntool microscope "$model" photos --no-maximize --projections 1 -o "$out/microscope_lite0" -q > "$out/microscope_lite0.json"
cnntool microscope lenet5-mnist mnist-5k --limit 1000 --batch-size 250 --attack 0.05,0.1,0.2,0.3 \
  -o "$out/microscope_lenet5" -q > "$out/microscope_lenet5.json"

echo "== done: outputs in $out/" >&2
ls -l "$out" >&2
echo "open the microscopes in a browser (no server needed):" >&2
for site in microscope_lite0 microscope_lenet5; do
  python3 -c 'import pathlib, sys; print(pathlib.Path(sys.argv[1]).resolve().as_uri())' "$out/$site/index.html"
done
