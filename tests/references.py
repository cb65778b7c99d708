"""Independent reference implementations shared by several test modules."""
import torch


class GuidedReLUFunction(torch.autograd.Function):
    """Guided-backprop ReLU by definition: pass gradient only where the input and the gradient are positive."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return grad * (x > 0) * (grad > 0)
