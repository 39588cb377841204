"""Flow and diffusion policies: shapes, validation, sampling, and the RFM regression target.

Oracles: the exact posterior mean on a grid (ExactGrid) and the Gaussian closed form of the quadratic toy.
"""

import math

import pytest
import torch

from rfm_teach.estimators import noise_expectation, posterior_mean
from rfm_teach.paths import LinearFlow, VPDiffusion
from rfm_teach.policies import DiffusionPolicy, FlowPolicy, ddim, euler, heun, sinusoidal_embedding, time_grid
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


def test_diffusion_preconditioning_keeps_an_untrained_sampler_near_the_origin():
    """eps_hat = beta u - alpha F: the network's output F enters as mu1_hat = alpha u + beta F, so an untrained
    policy samples at the scale of its noise; the raw output used as eps would put samples ~1/alpha(t_min) away."""
    torch.manual_seed(0)
    pol = DiffusionPolicy(0, 2, hidden=64, n_blocks=2, squash=False, time_scale=1.0)
    obs = torch.zeros(1, 0)
    u = pol.sample(obs, 512, temperature=1.0, steps=20, generator=gen(0))[0]
    t = torch.full((6,), 0.3)
    F = pol.net(torch.zeros(6, 0), u[:6], t, torch.ones(6))
    torch.testing.assert_close(pol(torch.zeros(6, 0), u[:6], t, 1.0),
                               pol.path.beta(t)[:, None] * u[:6] - pol.path.alpha(t)[:, None] * F)
    raw = DiffusionPolicy(0, 2, hidden=64, n_blocks=2, squash=False, time_scale=1.0)
    raw.load_state_dict(pol.state_dict())
    raw.precondition = lambda out, u_t, t: out  # the unpreconditioned parameterisation, same weights
    u_raw = raw.sample(obs, 512, temperature=1.0, steps=20, generator=gen(0))[0]
    assert u.norm(dim=-1).median() < 5 < 20 < u_raw.norm(dim=-1).median()


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
    # auto keeps the (projected) plug-in c per dimension or falls back to c = 0: it lies in [0, (beta/alpha)^2]
    upper = ((pol.path.beta(t) / pol.path.alpha(t)) ** 2)[:, None].expand(8, 2)
    assert bool(((cs["auto"] >= 0) & (cs["auto"] <= upper + 1e-12)).all())
    fixed = ("none", "gradient", "plugin", 0.5)
    for a in fixed:
        for b in fixed:
            if a != b:
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

    The quadratic toy's posterior is Gaussian, where the plug-in control variate is exact (the Gaussian closed form)
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


# ---- the samplers with the exact posterior mean (the paper's transport, checked on exact answers) ---------


def exact_field(mu1, path, kind: str):
    """The exact velocity (kind "velocity") or noise eps (kind "x0") as a sampler field (u, t) -> (N, d)."""

    def fn(u, t):
        tt = torch.full((u.shape[0], 1), t, dtype=u.dtype)
        return path.convert(mu1(u, tt[:, 0]), u, tt, src="x1", dst=kind)

    return fn


@pytest.mark.parametrize(
    "solver, path, steps",
    [("euler", LinearFlow(), 40), ("heun", LinearFlow(), 20), ("euler", VPDiffusion(), 40), ("heun", VPDiffusion(), 20),
     ("ddim", VPDiffusion(), 100)],
)
def test_exact_velocity_transports_noise_to_the_target(solver, path, steps):
    """The free samplers with the exact field of the quadratic toy land on its target N(m, diag(s^2)).

    No network is involved: ``euler``/``heun``/``ddim`` take any callable (u, t) -> (N, d).
    """
    toy = AnisotropicQuadratic()
    mu1 = lambda u, t: toy.posterior(u, t, path, 1.0)[0]  # noqa: E731
    n, t_min = 2000, 0.01
    u = torch.randn(n, 2, dtype=torch.float64, generator=gen(7))
    if solver == "ddim":
        u = ddim(exact_field(mu1, path, "x0"), u, time_grid(t_min, steps - 1, end=1.0), path)
    else:
        u = {"euler": euler, "heun": heun}[solver](exact_field(mu1, path, "velocity"), u, time_grid(t_min, steps))
    mean, std = torch.tensor(toy.mean, dtype=torch.float64), torch.tensor(toy.scales, dtype=torch.float64)
    z = (u.mean(0) - mean) / (std / math.sqrt(n))
    assert bool((z.abs() < 4).all()), z
    ratio = u.std(0) / std
    assert bool(((ratio > 0.93) & (ratio < 1.07)).all()), ratio


@pytest.mark.parametrize("cls, solver", [(FlowPolicy, "euler"), (FlowPolicy, "heun"), (DiffusionPolicy, "ddim"),
                                         (DiffusionPolicy, "euler")])
def test_policy_sample_is_the_free_sampler_on_its_own_field(cls, solver):
    """policy.sample = the free sampler applied to policy.field, from the same noise (one code path)."""
    torch.manual_seed(0)
    pol = cls(1, 2, hidden=16, emb_dim=8, squash=False).double()
    obs = torch.randn(3, 1, dtype=torch.float64)
    got = pol.sample(obs, 4, temperature=0.7, steps=5, solver=solver, generator=gen(2))
    u = torch.randn(12, 2, dtype=torch.float64, generator=gen(2))
    temp = torch.full((1,), 0.7, dtype=torch.float64)
    obs_rep = obs.repeat_interleave(4, 0)
    with torch.no_grad():
        if solver == "ddim":
            ref = ddim(pol.field(obs_rep, temp, kind="raw"), u, time_grid(pol.t_min, 4, end=1.0), pol.path)
        else:
            ref = {"euler": euler, "heun": heun}[solver](pol.field(obs_rep, temp), u, time_grid(pol.t_min, 5))
    torch.testing.assert_close(got, ref.reshape(3, 4, 2))


def test_embedding_once_per_step_matches_per_row():
    """A (1,) time/temperature broadcast gives the same output as the same value repeated on every row."""
    torch.manual_seed(0)
    net = FlowPolicy(2, 3, hidden=32, emb_dim=16).double().net
    obs, u = torch.randn(7, 2, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    one = net(obs, u, torch.tensor([0.3], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64))
    rows = net(obs, u, torch.full((7,), 0.3, dtype=torch.float64), torch.full((7,), 0.5, dtype=torch.float64))
    torch.testing.assert_close(one, rows)
    # and the concatenated first layer of the authors' actor is the same function
    from rfm_teach.policies import sinusoidal_embedding as emb
    t, lam = torch.full((7,), 0.3, dtype=torch.float64), torch.full((7,), 0.5, dtype=torch.float64)
    h = torch.nn.functional.gelu(net.inp(torch.cat([obs, u, emb(net.time_scale * t, 16), emb(torch.log(lam), 16)], -1)))
    for block in net.blocks:
        h = h + torch.nn.functional.gelu(block(h))
    torch.testing.assert_close(net.out(h), rows)


def test_loss_without_checks_reads_nothing_from_the_device(monkeypatch):
    """loss(..., check=False) makes no host read: no Tensor.__bool__, .item(), .tolist() or float(tensor)."""
    pol = FlowPolicy(0, 2, hidden=16, emb_dim=8, squash=False)
    target = Boltzmann(make_toy("two_moons"), 1.0, check=False)
    u1 = torch.randn(16, 2, generator=gen(1))
    prior = torch.randn(16, 8, 2, generator=gen(2))
    reads = []
    for name in ("__bool__", "item", "tolist", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def spy(self, *a, _name=name, _orig=original, **k):
            reads.append(_name)
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)
    for cv in ("auto", "plugin", "none", "gradient"):
        loss, info = pol.loss(torch.zeros(16, 0), u1, target, temperature=1.0, K=16, cv=cv, generator=gen(3),
                              prior_samples=prior, check=False)
        loss.backward()
    monkeypatch.undo()
    assert reads == [], reads
    assert isinstance(info["ess"], torch.Tensor) and info["ess"].shape == (1,)  # one value per seed
    _, checked = pol.loss(torch.zeros(16, 0), u1, target, temperature=1.0, K=16, generator=gen(3), prior_samples=prior)
    assert isinstance(checked["ess"], float) and 1.0 <= checked["ess"] <= 16.0


def test_prior_samples_reach_the_estimator():
    """prior_samples change the proposal (same generator, different draws) and bad shapes raise."""
    pol = FlowPolicy(0, 2, hidden=16, emb_dim=8, squash=False).double()
    target = Boltzmann(make_toy("two_moons"), 1.0)
    u1 = torch.randn(6, 2, dtype=torch.float64, generator=gen(1))
    prior = torch.randn(6, 32, 2, dtype=torch.float64, generator=gen(4))
    _, _, y0, est0 = pol.regression_target(u1, target, K=32, cv="none", generator=gen(2))
    _, u_t, y1, est1 = pol.regression_target(u1, target, K=32, cv="none", generator=gen(2), prior_samples=prior)
    assert not torch.allclose(y0, y1)
    g = gen(2)
    torch.rand(6, dtype=torch.float64, generator=g), torch.randn(6, 2, dtype=torch.float64, generator=g)
    t = est1.draws.t[:, 0]
    ref = posterior_mean(target, u_t, t, path=pol.path, K=32, cv="none", generator=g, prior_samples=prior)
    torch.testing.assert_close(ref.mean, est1.mean)
    with pytest.raises(ValueError, match="prior_samples"):
        pol.loss(torch.zeros(6, 0), u1, target, temperature=1.0, K=8, prior_samples=prior[:3])


def test_exact_flow_transports_to_two_moons():
    """Multimodal check with grid quadrature (ExactGrid): the exact-velocity flow lands on the moons."""
    toy = make_toy("two_moons")
    grid = ExactGrid(Boltzmann(toy, 1.0), extent=toy.extent, n=81)
    path = LinearFlow()
    u0 = torch.randn(200, 2, dtype=torch.float64, generator=gen(1))
    u = heun(exact_field(lambda u, t: grid.posterior_mean(u, t, path), path, "velocity"), u0, time_grid(0.01, 16))
    q_policy = toy(u).mean()
    q_exact = toy(grid.sample(2000, gen(2))).mean()
    q_noise = toy(torch.randn(2000, 2, dtype=torch.float64, generator=gen(3))).mean()
    assert abs(float(q_policy - q_exact)) < 0.25 * abs(float(q_noise - q_exact)), (q_policy, q_exact, q_noise)
