"""Chapter 7's self-checks: Grad-CAM, occlusion and guided backpropagation, on train-mode models with in-place ReLUs."""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

import torch
from torch import nn

from .. import interpret, reference
from .grading import UNTOUCHED, Mistake, ModelCase, check_with_model, conv_net, images, shared_relu_net

__all__ = ["grad_cam", "occlusion", "guided_backprop"]

RELUS_RESTORED = "the ReLUs behave normally afterwards"

def grad_cam(fn: Callable) -> bool:
    """Check grad_cam(model, x, layer, target=None) -> (N, H, W) against a plain re-implementation of the recipe.

    The layers sit after a stride-2 convolution (followed by an in-place ReLU) and after a max-pool, so
    the maps are upsampled from 8x8 / 4x4 (and 8x6 / 4x3 for non-square images); the model is in train
    mode with BatchNorm and Dropout, and must be left as it was.
    """
    x, y = images(3)
    wide, _ = images(2, seed=2, size=(16, 12))
    build = lambda: conv_net(inplace=True)
    cases = [ModelCase(build, (x, "conv2", y), label="after a stride-2 conv, given targets"),
             ModelCase(build, (x, "pool", None), label="after max-pooling, predicted class"),
             ModelCase(build, (wide, "conv2", 3), label="16x12 images, target 3")]
    variants = [(partial(reference.grad_cam, upsample="nearest"),
                 "the map looks blocky: upsample it with bilinear interpolation, not by repeating pixels"),
                (partial(reference.grad_cam, align_corners=True),
                 "bilinear upsampling here aligns pixel centres, not corners (align_corners=False)"),
                (partial(reference.grad_cam, relu=False),
                 "keep only the evidence *for* the class: the weighted sum goes through a ReLU before normalising"),
                (partial(reference.grad_cam, renormalise=False),
                 "upsampling moves the extremes: normalise the map to [0, 1] again after upsampling"),
                (partial(reference.grad_cam, score="probability"),
                 "differentiate the raw class score (the logit), not the softmax probability"),
                (partial(reference.grad_cam, copy=False),
                 "the layer's output is overwritten by the in-place ReLU that follows it: keep the activations "
                 "in a copy the rest of the network cannot change")]
    return check_with_model(fn, "grad_cam", cases, reference.grad_cam,
                            "channel weights = spatial mean of the gradients of the raw class logit; ReLU of the "
                            "weighted sum of the activation maps; min-max normalise, upsample bilinearly to the "
                            "input size, min-max again", UNTOUCHED, atol=1e-5, diagnose=variants,
                            shape_hint="one map per image, at the input's height and width: (N, H, W)",
                            nan_hint="a map with no positive evidence is all zeros: guard the division when "
                                     "normalising a constant map")


def occlusion(fn: Callable) -> bool:
    """Check occlusion(model, x, target, patch, stride, fill=0.0) -> (N, H, W) against helpers.interpret.occlusion.

    The semantics to implement (exactly those of helpers.interpret.occlusion):
    - The model runs in eval mode (its modes restored afterwards), without gradients.
    - target: an int (the same class for every image), one class per image (a list or tensor), or None
      (the class the model predicts on the clean image).
    - A patch x patch square of value `fill` covers the image at top-left corners (top, left), with
      top in 0, stride, 2*stride, ... <= H - patch, plus a last top = H - patch when the stride does
      not land on it, so that the bottom border is covered too; the same for left and W.
    - For each position: drop = (softmax probability of the target class on the clean image) minus
      (that probability on the occluded image); positive where hiding the patch hurt the class.
    - Each pixel's value is the mean of the drops of all the patches that covered it.
    """
    x, y = images(2, seed=3, size=(12, 12))
    odd, _ = images(2, seed=4, size=(13, 11))
    one, _ = images(1, seed=5, size=(10, 10))
    cases = [ModelCase(conv_net, (x, y, 4, 4), {"fill": 0.0}, "patch 4 = stride 4 on 12x12, given targets"),
             ModelCase(conv_net, (odd, None, 5, 3), {"fill": 0.5}, "overlapping patches on 13x11, predicted class"),
             ModelCase(conv_net, (one, 3, 3, 2), {"fill": 0.0}, "one image, target 3")]
    variants = [(partial(reference.occlusion, quantity="probability"),
                 "record the *drop* of the target's probability (clean minus occluded), not the occluded "
                 "probability itself"),
                (partial(reference.occlusion, quantity="rise"),
                 "the sign is flipped: the drop is the clean probability minus the occluded one, so that "
                 "important regions are positive"),
                (partial(reference.occlusion, score="logit"),
                 "measure the class's softmax probability, not its raw logit"),
                (partial(reference.occlusion, average=False),
                 "where patches overlap, a pixel gets the *mean* of the drops of the patches covering it"),
                (partial(reference.occlusion, border=False),
                 "the last rows or columns are never covered: when the stride does not land on H - patch "
                 "(or W - patch), add a last patch touching the border")]
    return check_with_model(fn, "occlusion", cases, interpret.occlusion,
                            "slide the patch; at each position record how much the target class's probability "
                            "drops; each pixel gets the mean drop of the patches covering it (see the docstring "
                            "of helpers.check.occlusion)", UNTOUCHED, atol=1e-5, diagnose=variants,
                            shape_hint="one heatmap per image, at the input's height and width: (N, H, W)",
                            nan_hint="some pixels got no value: every pixel must be covered by at least one patch "
                                     "(a last patch touching the bottom and right borders)")


def _guided_crash_hint(error: Exception) -> str:
    text = str(error).lower()
    if "inplace" in text or "in-place" in text or "view" in text:
        return ("this check's models use ReLU(inplace=True), and one model calls a single ReLU module twice; a "
                "module backward hook fails on an in-place ReLU - guide the gradient of each ReLU call's output "
                "tensor instead")
    return "run the function on a small example by hand and print intermediate values"


def guided_backprop(fn: Callable) -> bool:
    """Check guided_backprop(model, x, target) -> (N, C, H, W) against helpers.interpret.guided_backprop.

    The result is the gradient of the target's raw logit (target: an int, one class per image, or None
    for the predicted class) with respect to x, with every ReLU guided on the way back: gradient passes
    only where the ReLU's input and the incoming gradient are both positive. The models use in-place
    ReLUs, one calls a single ReLU instance twice; afterwards the model's ReLUs must behave normally
    again (an ordinary backward after the call equals one before), no hook may be left behind.
    """
    x, y = images(3, seed=6)

    def unchanged_relus(model: nn.Module, before: torch.Tensor | None) -> Any:
        now = reference.input_gradient(model, x, y)
        if before is None:
            return now
        if not torch.allclose(now, before, rtol=1e-9, atol=1e-12):
            return [("after the call an ordinary gradient through the model differs from the one before: the "
                     "ReLUs still behave as guided ones", "undo every change once the gradient is computed (remove "
                                                           "the hooks, also when an error occurs)")]
        return []

    cases = [ModelCase(lambda: conv_net(inplace=True), (x, y), label="in-place ReLUs, given targets"),
             ModelCase(shared_relu_net, (x, None), label="one ReLU instance used twice, predicted class"),
             ModelCase(conv_net, (x, 7), label="plain ReLUs, target 7")]
    variants = [(partial(reference.guided_backprop, rule="plain"),
                 "this is the ordinary gradient: in the backward pass, every ReLU must let gradient through only "
                 "where its input was positive *and* the gradient arriving from above is positive"),
                (partial(reference.guided_backprop, rule="clamp-input"),
                 "the guiding happens at every ReLU on the way back, not once on the final gradient"),
                (partial(reference.guided_backprop, score="probability"),
                 "differentiate the raw class score (the logit), not the softmax probability")]
    return check_with_model(fn, "guided_backprop", cases, interpret.guided_backprop,
                            "the gradient of the target's logit with respect to the input, where each ReLU passes "
                            "gradient back only where its input and the incoming gradient are both positive",
                            f"{UNTOUCHED}; {RELUS_RESTORED}", atol=1e-9, rtol=1e-6,
                            diagnose=variants, shape_hint="the gradient has the input's shape (N, C, H, W)",
                            crash_hint=_guided_crash_hint, after=unchanged_relus)


# ---------------------------------------------------------------- typical mistakes that are about the mechanics

def _forgets_the_mode(model: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
    model.eval()  # right values, but the caller's train mode is gone
    return reference.occlusion(model, *args, **kwargs, train_mode=True)


def _module_backward_hooks(model: nn.Module, x: torch.Tensor, target: Any) -> torch.Tensor:
    """The classic recipe, a module backward hook per ReLU: it fails on in-place ReLUs."""
    handles = [m.register_full_backward_hook(lambda module, grad_in, grad_out: (grad_in[0].clamp(min=0),))
               for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        return reference.input_gradient(model, x, target)
    finally:
        for handle in handles:
            handle.remove()


def _clamp_output_gradient(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
    output.register_hook(lambda grad: grad.clamp(min=0))


def _hooks_left_behind(model: nn.Module, x: torch.Tensor, target: Any) -> torch.Tensor:
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.register_forward_hook(_clamp_output_gradient)
    return reference.input_gradient(model, x, target)


class _GuidedReLUModule(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reference.GuidedReLU.apply(x)


def _swapped_modules(model: nn.Module, x: torch.Tensor, target: Any) -> torch.Tensor:
    """Replaces every ReLU by a guided one and never puts them back."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, _GuidedReLUModule())
    return reference.input_gradient(model, x, target)


def _breaks_the_model(model: nn.Module, x: torch.Tensor, target: Any) -> torch.Tensor:
    grad = reference.guided_backprop(model, x, target)
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.register_forward_pre_hook(lambda module, inputs: 1 / 0)
    return grad


SOLUTIONS = {"grad_cam": [interpret.grad_cam, reference.grad_cam],
             "occlusion": [interpret.occlusion, reference.occlusion],
             "guided_backprop": [interpret.guided_backprop, reference.guided_backprop]}
MISTAKES = [Mistake("grad_cam", partial(reference.grad_cam, upsample="nearest"), "bilinear"),
            Mistake("grad_cam", partial(reference.grad_cam, train_mode=True), "train mode"),
            Mistake("grad_cam", partial(reference.grad_cam, copy=False), "in-place relu"),
            Mistake("grad_cam", lambda *a: reference.grad_cam(*a)[:, None], "(N, H, W)"),
            Mistake("grad_cam", lambda *a: reference.grad_cam(*a).numpy(), "torch.Tensor"),
            Mistake("occlusion", partial(reference.occlusion, quantity="probability"), "drop"),
            Mistake("occlusion", partial(reference.occlusion, quantity="rise"), "sign"),
            Mistake("occlusion", partial(reference.occlusion, score="logit"), "probability"),
            Mistake("occlusion", partial(reference.occlusion, average=False), "mean"),
            Mistake("occlusion", partial(reference.occlusion, border=False), "border"),
            Mistake("occlusion", partial(reference.occlusion, train_mode=True), "train mode"),
            Mistake("occlusion", _forgets_the_mode, "wrong mode"),
            Mistake("occlusion", lambda *a, **k: reference.occlusion(*a, **k)[:, None], "(N, H, W)"),
            Mistake("occlusion", lambda *a, **k: reference.occlusion(*a, **k).tolist(), "torch.Tensor"),
            Mistake("occlusion", lambda *a, **k: None, "None"),
            Mistake("guided_backprop", partial(reference.guided_backprop, rule="plain"), "ordinary gradient"),
            Mistake("guided_backprop", partial(reference.guided_backprop, rule="clamp-input"), "every relu"),
            Mistake("guided_backprop", partial(reference.guided_backprop, train_mode=True, backward=True),
                    ("train mode", ".grad")),  # backward() also filled the weights' gradients
            Mistake("guided_backprop", _module_backward_hooks, "inplace"),
            Mistake("guided_backprop", _hooks_left_behind, "hook"),
            Mistake("guided_backprop", _swapped_modules, "replaced"),
            Mistake("guided_backprop", _breaks_the_model, "the model itself fails"),
            Mistake("guided_backprop", lambda *a: reference.guided_backprop(*a)[:, 0], "(N, C, H, W)"),
            Mistake("guided_backprop", lambda *a: None, "None")]
