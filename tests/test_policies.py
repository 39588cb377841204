"""Flow and diffusion policies: shapes, validation, sampling, and the RFM regression target.

Oracles: the exact posterior mean on a grid (ExactGrid) and the Gaussian closed form of the quadratic toy.
"""

import math

import pytest
import torch

from rfm_teach.estimators import noise_expectation, posterior_mean
from rfm_teach.paths import LinearFlow, VPDiffusion
from rfm_teach.policies import DiffusionPolicy, FlowPolicy, sinusoidal_embedding
from rfm_teach.targets import AnisotropicQuadratic, Boltzmann, ExactGrid, make_toy

POLICIES = [FlowPolicy, DiffusionPolicy]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def quadratic_target(temperature: float = 1.0) -> Boltzmann:
    return Boltzmann(AnisotropicQuadratic(), temperature, squash=False)


@pytest.mark.parametrize("cls", POLICIES)
def test_forward_and_sample_shapes(cls):
    torch.manual_seed(0)
    pol = cls(3, 2, hidden=32, emb_dim=16)
    obs = torch.randn(5, 3)
    out = pol(obs, torch.randn(5, 2), torch.full((5,), 0.3), 0.5)
    assert out.shape == (5, 2)
    out_b = pol(obs, torch.randn(5, 2), torch.full((5,), 0.3), torch.full((5,), 0.5))
    assert out_b.shape == (5, 2)
    u = pol.sample(obs, 4, temperature=0.5, steps=3, generator=gen())
    assert u.shape == (5, 4, 2)
    a = pol.act(obs, 4, temperature=0.5, steps=3, generator=gen())
    torch.testing.assert_close(a, torch.tanh(u))  # squash=True by default: actions are tanh of latents
    assert bool((a.abs() <= 1).all())
    stateless = cls(0, 2, hidden=32, emb_dim=16, squash=False)
    assert stateless.sample(torch.zeros(1, 0), 7, temperature=1.0, steps=2).shape == (1, 7, 2)


@pytest.mark.parametrize("cls", POLICIES)
def test_sampling_is_reproducible_with_a_generator(cls):
    torch.manual_seed(0)
    pol = cls(0, 2, hidden=32, emb_dim=16, squash=False)
    obs = torch.zeros(2, 0)
    a = pol.sample(obs, 16, temperature=1.0, steps=4, generator=gen(3))
    b = pol.sample(obs, 16, temperature=1.0, steps=4, generator=gen(3))
    c = pol.sample(obs, 16, temperature=1.0, steps=4, generator=gen(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("cls", POLICIES)
def test_input_validation(cls):
    pol = cls(2, 2, hidden=16, emb_dim=8, squash=False)
    obs, u, t = torch.zeros(4, 2), torch.zeros(4, 2), torch.full((4,), 0.5)
    target = quadratic_target()
    with pytest.raises(ValueError, match="obs must have shape"):
        pol(torch.zeros(4, 3), u, t, 1.0)
    with pytest.raises(ValueError, match="u_t must have shape"):
        pol(obs, torch.zeros(4, 3), t, 1.0)
    with pytest.raises(ValueError, match="t must"):
        pol(obs, u, torch.full((4,), 1.0), 1.0)
    with pytest.raises(ValueError, match="temperature"):
        pol(obs, u, t, 0.0)
    with pytest.raises(ValueError, match="temperature"):
        pol.sample(obs, 2, temperature=-1.0)
    with pytest.raises(TypeError, match="temperature"):
        pol(obs, u, t, "hot")
    with pytest.raises(ValueError, match="unknown solver"):
        pol.sample(obs, 2, temperature=1.0, solver="rk45")
    with pytest.raises(ValueError, match="steps"):
        pol.sample(obs, 2, temperature=1.0, steps=0)
    with pytest.raises(ValueError, match="K"):
        pol.loss(obs, u, target, temperature=1.0, K=0)
    with pytest.raises(ValueError, match="agree"):
        pol.loss(obs, u, target, temperature=2.0)
    with pytest.raises(ValueError, match="squash"):
        pol.loss(obs, u, Boltzmann(AnisotropicQuadratic(), 1.0, squash=True), temperature=1.0)
    with pytest.raises(TypeError, match="Boltzmann"):
        pol.loss(obs, u, lambda a: -a.pow(2).sum(-1), temperature=1.0)
    with pytest.raises(ValueError, match="one row per state"):
        pol.loss(obs, torch.zeros(3, 2), target, temperature=1.0)
    with pytest.raises(ValueError, match="unknown cv"):
        pol.loss(obs, u, target, temperature=1.0, cv="magic")
    with pytest.raises(ValueError, match="t_min"):
        cls(0, 2, t_min=0.5)
    with pytest.raises(ValueError, match="act_dim"):
        cls(0, 0)


def test_sinusoidal_embedding():
    x = torch.tensor([0.0, 0.5])
    e = sinusoidal_embedding(x, 8)
    assert e.shape == (2, 8)
    torch.testing.assert_close(e[0], torch.tensor([0.0] * 4 + [1.0] * 4))  # sin 0, cos 0
    torch.testing.assert_close(e.pow(2)[:, :4] + e.pow(2)[:, 4:], torch.ones(2, 4))


# ---- the regression target -------------------------------------------------------------------------


def test_flow_target_is_the_exact_identity_of_the_estimate():
    """y = (mu1_hat - u_t) / (1 - t) on the linear path, with mu1_hat from posterior_mean on the same draws."""
    pol = FlowPolicy(0, 2, hidden=16, emb_dim=8, squash=False).double()
    target = Boltzmann(make_toy("two_moons"), 1.0)
    u1 = torch.randn(6, 2, dtype=torch.float64, generator=gen(1))
    t, u_t, y, est = pol.regression_target(u1, target, K=32, cv="none", generator=gen(2))
    assert not y.requires_grad
    assert bool(((t >= pol.t_min) & (t <= 1 - pol.t_min)).all())
    torch.testing.assert_close(y, (est.mean - u_t) / (1 - t[:, None]))
    # c = 0 is plain SNIS over the draws: Σ_k w_k x1^k
    torch.testing.assert_close(est.mean, noise_expectation(est.draws))
    # and the same generator reproduces the same draws through posterior_mean directly
    g = gen(2)
    t2 = pol.t_min + (1 - 2 * pol.t_min) * torch.rand(6, dtype=torch.float64, generator=g)
    u0 = torch.randn(6, 2, dtype=torch.float64, generator=g)
    ut2 = t2[:, None] * u1 + (1 - t2[:, None]) * u0
    ref = posterior_mean(target, ut2, t2, path=LinearFlow(), K=32, cv="none", generator=g)
    torch.testing.assert_close(ref.mean, est.mean)


def test_diffusion_target_is_path_convert_of_the_flow_target():
    """The eps target of the diffusion policy is the VP path's conversion of the velocity target."""
    pol = DiffusionPolicy(0, 2, hidden=16, emb_dim=8, squash=False).double()
    target = Boltzmann(make_toy("ring"), 1.0)
    u1 = torch.randn(6, 2, dtype=torch.float64, generator=gen(1))
    t, u_t, y, est = pol.regression_target(u1, target, K=64, cv="auto", generator=gen(2))
    vp = pol.path
    assert isinstance(vp, VPDiffusion)
    velocity = est.to_target("velocity", vp)
    tt = t[:, None]
    torch.testing.assert_close(y, vp.convert(velocity, u_t, tt, src="velocity", dst="x0"))
    torch.testing.assert_close(y, (u_t - vp.alpha(tt) * est.mean) / vp.beta(tt))


@pytest.mark.parametrize("cls", POLICIES)
def test_cv_switches_the_target(cls):
    pol = cls(0, 2, hidden=16, emb_dim=8, squash=False).double()
    target = Boltzmann(make_toy("two_moons"), 1.0)
    u1 = torch.randn(8, 2, dtype=torch.float64, generator=gen(1))
    ys, cs = {}, {}
    for cv in ("none", "gradient", "plugin", "auto", 0.5):
        t, u_t, ys[cv], est = pol.regression_target(u1, target, K=32, cv=cv, generator=gen(5))
        cs[cv] = est.c
    assert torch.count_nonzero(cs["none"]) == 0
    torch.testing.assert_close(cs["gradient"], ((pol.path.beta(t) / pol.path.alpha(t)) ** 2)[:, None].expand(8, 2))
    torch.testing.assert_close(cs[0.5], torch.full((8, 2), 0.5, dtype=torch.float64))
    for a in ys:
        for b in ys:
            if a != b and not (a == "plugin" and b == "auto" or a == "auto" and b == "plugin"):
                assert not torch.allclose(ys[a], ys[b]), (a, b)


def test_no_gradient_reaches_the_critic():
    """The target is a constant: a critic with parameters inside Q gets no gradient from the actor loss."""
    critic = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    target = Boltzmann(lambda a: critic(a)[..., 0], 0.5, squash=True)
    pol = FlowPolicy(0, 2, hidden=16, emb_dim=8)
    loss, info = pol.loss(torch.zeros(4, 0), torch.randn(4, 2), target, temperature=0.5, K=16, generator=gen())
    loss.backward()
    assert all(p.grad is None for p in critic.parameters())
    assert all(p.grad is not None for p in pol.parameters())
    assert set(info) >= {"ess", "c"} and 1.0 <= info["ess"] <= 16.0


def test_loss_decreases_on_a_gaussian_target():
    """Training lowers the loss measured on one fixed batch (same t, u0 and importance draws before and after).

    The quadratic toy's posterior is Gaussian, where the plug-in control variate is exact (notes §9.5)
    once two draws carry weight, so the regression target is nearly noise-free and what remains of the
    loss is the network's error. At small t the weights collapse (ESS = 1) and the target is noise
    that no network can fit, so this test keeps t in [0.25, 0.75] (t_min = 0.25).
    """
    torch.manual_seed(0)
    target = quadratic_target()
    pol = FlowPolicy(0, 2, hidden=64, emb_dim=16, squash=False, t_min=0.25)
    grid = ExactGrid(target, extent=3.0, n=61)
    obs = torch.zeros(256, 0)
    u1_eval = grid.sample(256, gen(99)).float()

    def eval_loss() -> float:
        with torch.no_grad():
            return pol.loss(obs, u1_eval, target, temperature=1.0, K=16, cv="plugin", generator=gen(123))[0].item()

    before = eval_loss()
    opt = torch.optim.Adam(pol.parameters(), lr=3e-3)
    g = gen(0)
    for _ in range(150):
        loss, _ = pol.loss(obs[:128], grid.sample(128, g).float(), target, temperature=1.0, K=16, cv="plugin", generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert after < 0.5 * before, (before, after)


# ---- the samplers with the exact posterior mean (notes §9.7) ---------------------------------------


class ExactNet(torch.nn.Module):
    """Stands in for the network: outputs the exact velocity (flow) or eps (diffusion) from ``mu1(u, t)``."""

    def __init__(self, mu1, path, kind: str):
        super().__init__()
        self.mu1, self.path, self.kind = mu1, path, kind
        self.out = torch.nn.Linear(1, 1).double()  # gives the policy its dtype and device

    def forward(self, obs, u, t, temperature):
        return self.path.convert(self.mu1(u, t), u, t[:, None], src="x1", dst=self.kind)


@pytest.mark.parametrize(
    "cls, solver, steps",
    [(FlowPolicy, "euler", 40), (FlowPolicy, "heun", 20), (DiffusionPolicy, "euler", 40), (DiffusionPolicy, "heun", 20),
     (DiffusionPolicy, "ddim", 100)],
)
def test_exact_velocity_transports_noise_to_the_target(cls, solver, steps):
    """With the exact posterior mean in place of the network, the sampler must land on the target (notes §9.7).

    The quadratic toy's target is N(m, diag(s^2)) at temperature 1 and its posterior mean is in closed form.
    """
    toy = AnisotropicQuadratic()
    pol = cls(0, 2, squash=False)
    pol.net = ExactNet(lambda u, t: toy.posterior(u, t, pol.path, 1.0)[0], pol.path, pol.prediction)
    n = 2000
    u = pol.sample(torch.zeros(1, 0), n, temperature=1.0, steps=steps, solver=solver, generator=gen(7))[0]
    mean, std = torch.tensor(toy.mean, dtype=torch.float64), torch.tensor(toy.scales, dtype=torch.float64)
    z = (u.mean(0) - mean) / (std / math.sqrt(n))
    assert bool((z.abs() < 4).all()), z
    ratio = u.std(0) / std
    assert bool(((ratio > 0.93) & (ratio < 1.07)).all()), ratio


def test_exact_flow_transports_to_two_moons():
    """Multimodal check with grid quadrature (ExactGrid): the exact-velocity flow lands on the moons."""
    toy = make_toy("two_moons")
    grid = ExactGrid(Boltzmann(toy, 1.0), extent=toy.extent, n=81)
    pol = FlowPolicy(0, 2, squash=False)
    pol.net = ExactNet(lambda u, t: grid.posterior_mean(u, t, pol.path), pol.path, "velocity")
    u = pol.sample(torch.zeros(1, 0), 200, temperature=1.0, steps=16, solver="heun", generator=gen(1))[0]
    q_policy = toy(u).mean()
    q_exact = toy(grid.sample(2000, gen(2))).mean()
    q_noise = toy(torch.randn(2000, 2, dtype=torch.float64, generator=gen(3))).mean()
    assert abs(float(q_policy - q_exact)) < 0.25 * abs(float(q_noise - q_exact)), (q_policy, q_exact, q_noise)
