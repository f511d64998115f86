"""CPU time of cnntool's batched attributions against captum's and pytorch-grad-cam's, batch 8.

For each model (resnet18 with torchvision's random init under seed 0; efficientnet_lite0 with
its real weights) and each method, ours and the anchor run on the same batch of 8
imagenet-samples photos (resized to --size), the same class target, interleaved round by
round in this one process (which goes first alternates), each timed with time.process_time
(CPU time of this process, all threads). The table gives each side's median and the ratio
ours / anchor (below 1: ours takes less CPU), and the largest |Δ| between the two maps
relative to the anchor map's largest magnitude, so that both compute the same thing.

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python benchmarks/attribution_bench.py [--rounds 5]

Pairs (ours | anchor), all at batch 8:
- saliency: project_batch(..., "saliency") | captum Saliency (abs=True)
- guided: project_batch(..., "guided") | captum GuidedBackprop. On lite0 (ReLU6) captum hooks no
  activation and returns the plain gradient, so its map differs there: Δ is not a check.
  A second row on a model with ReLU6 (lite0) gives captum the same work: its GuidedBackprop on
  a copy whose ReLU6 modules are `HookableReLU6` (an nn.ReLU subclass computing relu6, so
  captum hooks it and its rule relu(true input gradient) is guided backprop on ReLU6); Δ = 0.
- smoothgrad: SmoothGrad(S, per-sample |·|) of saliency | NoiseTunnel(Saliency) smoothgrad,
  nt_samples_batch_size=1 (one sample of the batch per forward, as ours). The noise differs
  (each draws its own), so Δ compares ours with captum's Saliency averaged over OUR noisy
  batches. A second row runs all S×8 copies in one forward on both sides (ours
  SmoothGrad(batch=S), captum's default nt_samples_batch_size); its Δ is not checked.
- ig: integrated gradients, S Gauss-Legendre steps from a zero input, 8 points per forward per
  image, with the completeness | captum IntegratedGradients, internal_batch_size 8×8 (the same
  batches), return_convergence_delta=True (the same extra forward for F(baseline) and F(x)).
- occlusion: occlusion_maps of each image (class probability, window = stride = W, fill 0, 16
  windows per forward) | captum Occlusion of the softmax probability, perturbations_per_eval=16;
  with window = stride, captum's map is p(clean) − p(occluded), compared window by window.
- gradcam, gradcam++: cam_maps + upsampled display maps | pytorch-grad-cam's GradCAM /
  GradCAMPlusPlus with ClassifierOutputTarget (its maps come back upsampled and scaled).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from captum.attr import GuidedBackprop, NoiseTunnel, Occlusion, Saliency  # noqa: E402
from captum.attr import IntegratedGradients as CaptumIG
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from cnntool.core.data import BatchStream, open_data  # noqa: E402
from cnntool.core.loading.models import load_model  # noqa: E402
from cnntool.tasks.cam import cam_maps, default_layer  # noqa: E402
from cnntool.tasks.integrated_gradients import IntegratedGradients  # noqa: E402
from cnntool.tasks.occlusion import occlusion_maps  # noqa: E402
from cnntool.tasks.projection import SmoothGrad, Target, project_batch  # noqa: E402

warnings.filterwarnings("ignore")
CLASS = 7


def photos(loaded, size, n=8):
    dataset = open_data("imagenet-samples").head(n)
    x = next(iter(BatchStream(dataset, loaded.preprocessing, batch_size=n))).inputs
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True).contiguous()


class HookableReLU6(torch.nn.ReLU):
    """ReLU6 as a type captum's GuidedBackprop hooks (it hooks nn.ReLU modules only)."""

    def forward(self, x):
        return F.relu6(x)


def hookable_copy(model):
    """A deep copy of `model` with every nn.ReLU6 module replaced by HookableReLU6 (None: the
    model has no ReLU6 module, captum already does guided backprop on it)."""
    import copy

    if not any(isinstance(m, torch.nn.ReLU6) for m in model.modules()):
        return None
    twin = copy.deepcopy(model)
    for parent in list(twin.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.ReLU6):
                setattr(parent, name, HookableReLU6())
    return twin


def rel(ours, theirs):
    ours, theirs = (
        torch.as_tensor(np.asarray(ours)).double(),
        torch.as_tensor(np.asarray(theirs)).double(),
    )
    return float((ours - theirs).abs().max() / theirs.abs().max().clamp(min=1e-30))


def pairs(model, x, args, layer_name):
    """name -> (ours(), anchor(), delta(ours_result, anchor_result))."""
    n = len(x)
    target = Target.logit(CLASS)
    stack = lambda projections: torch.stack([p.map for p in projections])  # noqa: E731
    smooth = SmoothGrad(args.samples, 0.15, 0, "per-sample")
    smooth_all = SmoothGrad(args.samples, 0.15, 0, "per-sample", batch=args.samples)
    ig = IntegratedGradients(steps=args.steps, baseline="0", batch_size=8)
    layer = dict(model.named_modules())[layer_name]

    def smooth_reference(_theirs):
        # captum's Saliency over the very noisy batches ours draws, averaged
        drawn = []
        smooth(lambda noisy: drawn.append(noisy) or noisy, x)
        sal = Saliency(model)
        return sum(sal.attribute(d.clone(), target=CLASS, abs=True) for d in drawn) / len(drawn)

    def prob(batch):
        return torch.softmax(model(batch), 1)

    def ours_occlusion():
        return [
            occlusion_maps(
                model,
                image,
                size=args.window,
                stride=args.window,
                fill=0.0,
                target=target,
                batch_size=16,
            )
            for image in x
        ]

    def occlusion_delta(ours, theirs):
        w = args.window
        mine = torch.stack([(m.clean_probability - m.probability).float() for m in ours])
        sampled = theirs[:, 0, ::w, ::w][:, : mine.shape[1], : mine.shape[2]]
        return rel(mine, sampled)

    def ours_cam(method):
        maps = cam_maps(
            model,
            x,
            layer_name,
            method,
            target,
            plusplus_eps=1e-6 if method == "gradcam++" else 0.0,
        )
        return np.stack([m.upsampled(x.shape[2:]).numpy() for m in maps])

    def grad_cam(cls):
        with cls(model=model, target_layers=[layer]) as cam:
            return cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(CLASS)] * n)

    cases = {
        "saliency": (
            lambda: stack(project_batch(model, x, "saliency", target)),
            lambda: Saliency(model).attribute(x.clone(), target=CLASS, abs=True),
            rel,
        ),
        "guided": (
            lambda: stack(project_batch(model, x, "guided", target)),
            lambda: GuidedBackprop(model).attribute(x.clone(), target=CLASS),
            rel,
        ),
        "smoothgrad": (
            lambda: stack(project_batch(model, x, "saliency", target, smooth=smooth)),
            lambda: NoiseTunnel(Saliency(model)).attribute(
                x.clone(),
                nt_type="smoothgrad",
                nt_samples=args.samples,
                stdevs=0.5,
                target=CLASS,
                nt_samples_batch_size=1,
            ),
            lambda ours, theirs: rel(ours, smooth_reference(theirs)),
        ),
        "smoothgrad (all S×8 copies in one forward, both)": (
            lambda: stack(project_batch(model, x, "saliency", target, smooth=smooth_all)),
            lambda: NoiseTunnel(Saliency(model)).attribute(
                x.clone(), nt_type="smoothgrad", nt_samples=args.samples, stdevs=0.5, target=CLASS
            ),
            lambda ours, theirs: float("nan"),
        ),
        "ig": (
            lambda: stack(project_batch(model, x, "ig", target, ig=ig)),
            lambda: CaptumIG(model).attribute(
                x.clone(),
                target=CLASS,
                n_steps=args.steps,
                method="gausslegendre",
                internal_batch_size=8 * n,
                return_convergence_delta=True,
            )[0],
            rel,
        ),
        "occlusion": (
            ours_occlusion,
            lambda: Occlusion(prob).attribute(
                x.clone(),
                sliding_window_shapes=(3, args.window, args.window),
                strides=(3, args.window, args.window),
                baselines=0.0,
                target=CLASS,
                perturbations_per_eval=16,
            ),
            occlusion_delta,
        ),
        "gradcam": (lambda: ours_cam("gradcam"), lambda: grad_cam(GradCAM), rel),
        "gradcam++": (lambda: ours_cam("gradcam++"), lambda: grad_cam(GradCAMPlusPlus), rel),
    }
    twin = hookable_copy(model)
    if twin is not None:  # right after "guided", so --only guided runs both
        fair = (
            cases["guided"][0],
            lambda: GuidedBackprop(twin).attribute(x.clone(), target=CLASS),
            rel,
        )
        ordered = {}
        for key, value in cases.items():
            ordered[key] = value
            if key == "guided":
                ordered["guided (captum on ReLU6 made hookable: the same work)"] = fair
        cases = ordered
    return cases


def timed(fn):
    start = time.process_time()
    result = fn()
    return time.process_time() - start, result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--samples", type=int, default=4, help="SmoothGrad samples")
    parser.add_argument("--steps", type=int, default=8, help="IG steps")
    parser.add_argument("--window", type=int, default=28, help="occlusion window = stride")
    parser.add_argument("--only", nargs="*", help="methods to run (default: all)")
    parser.add_argument("--models", nargs="*", default=["resnet18", "efficientnet_lite0"])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load {os.getloadavg()}")
    lite0 = load_model("efficientnet_lite0")
    rows = []
    for name in args.models:
        if name == "resnet18":
            torch.manual_seed(0)
            import torchvision

            model = torchvision.models.resnet18().eval()
        else:
            model = lite0.module.eval()
        x = photos(lite0, args.size)
        layer = "layer4" if name == "resnet18" else default_layer(model, x.shape[1:])
        cases = pairs(model, x, args, layer)
        cases = {k: v for k, v in cases.items() if not args.only or k.split(" ")[0] in args.only}
        times = {k: ([], []) for k in cases}
        deltas = {}
        for k, (ours, anchor, delta) in cases.items():  # warm-up, and the agreement
            deltas[k] = delta(ours(), anchor())
        for r in range(args.rounds):
            for k, (ours, anchor, _) in cases.items():
                order = [(0, ours), (1, anchor)] if r % 2 == 0 else [(1, anchor), (0, ours)]
                for side, fn in order:
                    times[k][side].append(timed(fn)[0])
        for k in cases:
            a, b = statistics.median(times[k][0]), statistics.median(times[k][1])
            rows.append((name, k, a, b, a / b, deltas[k]))
            print(
                f"{name:18s} {k:46s} ours {a:7.3f} s  anchor {b:7.3f} s  ratio {a / b:5.2f}  "
                f"max|Δ|/max {deltas[k]:.1e}",
                flush=True,
            )
    print(f"load after: {os.getloadavg()}")
    print("\n| model | method | ours CPU s | anchor CPU s | ours / anchor | max abs Δ / max |")
    print("|---|---|---|---|---|---|")
    for name, k, a, b, ratio, d in rows:
        print(f"| {name} | {k} | {a:.3f} | {b:.3f} | **{ratio:.2f}** | {d:.1e} |")


if __name__ == "__main__":
    main()
