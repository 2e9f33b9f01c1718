"""The training objectives, apart from the networks. Each returns a scalar to minimize (mean per row).

The family files call these (`GenerativeModel.training_loss` and the GAN's losses); this module uses the models
only through their methods, so it imports no family at run time and either side may be imported first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from training.models.bijective import BijectiveModel
    from training.models.diffusion import DiffusionModel
    from training.models.gan import GANModel
    from training.models.vae import VAEModel

__all__ = [
    "flow_matching_loss",
    "flow_nll",
    "gan_critic_loss",
    "gan_generator_loss",
    "moment_distance",
    "vae_negative_elbo",
]


def flow_nll(model: BijectiveModel, rows: Tensor, label: Tensor, dequant: bool = True) -> Tensor:
    """Negative log-likelihood per row of the dequantized rows, in original units (nats): the objective of the
    exact-density families (the coupling flow and the masked autoregressive flow)."""
    z, log_det, _ = model.model_space(rows, dequant)
    return -(model.model_log_prob(z, label) + log_det).mean()


def flow_matching_loss(model: DiffusionModel, rows: Tensor, label: Tensor, label_dropout: float) -> Tensor:
    """Conditional flow matching on the straight path x_t = (1 - t) x_0 + t x_1: mean squared error per model-space
    coordinate between v(x_t, t, c) and x_1 - x_0, t ~ U[0, 1), x_0 ~ N(0, I); labels dropped to the null class
    with probability `label_dropout` (classifier-free guidance)."""
    x1 = model.to_model_space(rows)  # [B, W]
    x0 = torch.randn_like(x1)
    t = torch.rand(x1.shape[0], 1, device=x1.device)  # [B, 1]
    xt = (1.0 - t) * x0 + t * x1
    condition = model.condition(label, label_dropout)
    velocity = model.velocity(xt, model.velocity.time_embedding(t), model.velocity.class_embedding(condition))
    return ((velocity - (x1 - x0)) ** 2).mean()


def vae_negative_elbo(model: VAEModel, rows: Tensor, label: Tensor, beta: float, dequant: bool = True) -> Tensor:
    """-(E_q log p(x|z,c) - beta KL(q || N(0, I))) per row, in original units."""
    scalar, log_det, onehot = model.model_space(rows, dequant)
    cond = model.class_condition(label)
    mean, log_std = model.posterior_params(scalar, onehot, cond)
    z = mean + torch.exp(log_std) * torch.randn_like(mean)
    log_lik = model.reconstruction_log_prob(scalar, onehot, z, cond)
    kl = 0.5 * (mean**2 + torch.exp(2 * log_std) - 1.0 - 2 * log_std).sum(1)
    return -(log_lik - beta * kl + log_det).mean()


def _real_model_space(model: GANModel, rows: Tensor) -> Tensor:
    scalar, _, onehot = model.model_space(rows, dequant=True)
    return torch.cat([scalar, onehot], dim=1)


def gan_critic_loss(model: GANModel, rows: Tensor, label: Tensor, gradient_penalty: float) -> Tensor:
    """WGAN-GP critic: E[D(fake)] - E[D(real)] + lambda E[(|grad D(interp)| - 1)^2]."""
    cond = model.class_condition(label)
    real = _real_model_space(model, rows)
    with torch.no_grad():
        fake = model.relaxed_fake(torch.randn(rows.shape[0], model.latent, device=rows.device), cond)
    alpha = torch.rand(rows.shape[0], 1, device=rows.device)
    interp = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(model.critic(interp, cond).sum(), interp, create_graph=True)
    penalty = ((grad.norm(dim=1) - 1.0) ** 2).mean()
    return model.critic(fake, cond).mean() - model.critic(real, cond).mean() + gradient_penalty * penalty


def gan_generator_loss(model: GANModel, label: Tensor) -> Tensor:
    """-E[D(fake)]: the generator's side of the Wasserstein game."""
    cond = model.class_condition(label)
    fake = model.relaxed_fake(torch.randn(label.shape[0], model.latent, device=label.device), cond)
    return -model.critic(fake, cond).mean()


def moment_distance(model: GANModel, rows: Tensor, label: Tensor) -> Tensor:
    """The GAN's validation loss: |mean difference|^2 + |covariance difference|_F between validation rows and
    generated rows of the same classes, in model space with the class one-hot appended.

    The critic's own Wasserstein estimate is useless for early stopping (it is ~0 while the critic is
    untrained); first and second moments of (row, class) measure what the generator gets right.
    """
    cond = model.class_condition(label)
    fake = model.relaxed_fake(torch.randn(rows.shape[0], model.latent, device=rows.device), cond)
    real = torch.cat([_real_model_space(model, rows), cond], dim=1)
    fake = torch.cat([fake, cond], dim=1)
    mean_gap = ((real.mean(0) - fake.mean(0)) ** 2).sum()
    cov_gap = torch.linalg.matrix_norm(torch.cov(real.T) - torch.cov(fake.T))
    return mean_gap + cov_gap
