#!/usr/bin/env bash
# #24's demo, part of `make showcase`: LeNet-5 trained clean vs adversarially (both built in),
# side by side: how similar their layers' representations are (CKA), and how robust each is
# under an AutoAttack-style evaluation at L∞ ε = 0.3 (the MNIST standard).
# Usage: examples/robustness_demo.sh [OUT_DIR]
set -euo pipefail
out="${1:-showcase-out}/robustness"
mkdir -p "$out"

echo "== CKA between the layers of lenet5-mnist and lenet5-mnist-adv on 2,000 digits -> $out/cka.png" >&2
cnntool compare lenet5-mnist lenet5-mnist-adv mnist-5k --limit 2000 -o "$out/cka.png" -q \
  > "$out/cka.jsonl"

for m in lenet5-mnist lenet5-mnist-adv; do
  echo "== attack auto on $m, 200 digits, L∞ ε = 0.3 -> $out/$m/robustness.png" >&2
  cnntool attack auto "$m" mnist-5k --eps 0.3 --limit 200 --batch-size 200 -o "$out/$m" \
    > "$out/auto_$m.jsonl"
done
python3 - "$out" <<'PY' >&2
import json, sys
out = sys.argv[1]
for m in ("lenet5-mnist", "lenet5-mnist-adv"):
    s = json.load(open(f"{out}/{m}/robustness.json"))
    print(f"{m}: clean {s['clean_accuracy']:.1%}, robust {s['robust_accuracy']:.1%} at ε = 0.3")
PY
