"""The flow is an exact density: invertible, exact log-determinant, and it
recovers a Gaussian's analytic NLL after fitting."""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from aiidetect.flow import FeatureFlow, FlowConfig, flow_from_head  # noqa: E402
from aiidetect.flow.train import FitConfig, calibrate, fit_flow  # noqa: E402
from aiidetect.probability import Calibrator  # noqa: E402


def _perturbed_flow(dim=6, linear="lu", seed=0):
    torch.manual_seed(seed)
    m = FeatureFlow(FlowConfig(dim=dim, blocks=3, hidden=16, linear=linear, seed=seed))
    x = torch.randn(128, dim) * torch.linspace(0.5, 3.0, dim) + 2.0
    m.set_standardisation(x)
    m.init_actnorm(x)
    with torch.no_grad():  # leave the identity init so every layer does something
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return m.double(), x.double()


@pytest.mark.parametrize("linear", ["lu", "perm"])
def test_invertible(linear):
    m, x = _perturbed_flow(linear=linear)
    z, _ = m.transform(x)
    assert torch.allclose(m.inverse(z), x, atol=1e-8)
    assert not torch.allclose(z, (x - m.feat_mean) / m.feat_std, atol=1e-2)  # not the identity


@pytest.mark.parametrize("linear", ["lu", "perm"])
@pytest.mark.parametrize("dim", [2, 5])
def test_logdet_matches_autograd_jacobian(linear, dim):
    m, x = _perturbed_flow(dim=dim, linear=linear, seed=dim)
    _, logdet = m.transform(x[:4])
    for i in range(4):
        jac = torch.autograd.functional.jacobian(lambda v: m.transform(v[None])[0][0], x[i])
        assert torch.linalg.slogdet(jac)[1].item() == pytest.approx(logdet[i].item(), abs=1e-8)


def test_log_prob_is_base_plus_logdet():
    m, x = _perturbed_flow()
    z, logdet = m.transform(x)
    base = -0.5 * (z ** 2).sum(1) - 0.5 * x.shape[1] * math.log(2 * math.pi)
    assert torch.allclose(m(x), base + logdet)


def test_gaussian_nll_matches_analytic_after_fit():
    rng = np.random.default_rng(0)
    d = 4
    a = rng.standard_normal((d, d))
    cov = a @ a.T + 0.5 * np.eye(d)
    mean = rng.standard_normal(d) * 3
    train = rng.multivariate_normal(mean, cov, size=4000).astype(np.float32)
    test = rng.multivariate_normal(mean, cov, size=4000).astype(np.float32)
    m = FeatureFlow(FlowConfig(dim=d, blocks=2, hidden=16))
    fit_flow(m, train, cfg=FitConfig(steps=400, batch=256, lr=5e-3, noise=0.0))
    with torch.no_grad():
        nll = -m(torch.from_numpy(test)).numpy()
    analytic = 0.5 * (d * math.log(2 * math.pi * math.e) + np.linalg.slogdet(cov)[1])
    # the exact expected NLL of the true density, and the one the flow reaches on fresh samples
    assert nll.mean() == pytest.approx(analytic, abs=0.05 * d)


def test_forward_traces_without_python_control_flow():
    m, x = _perturbed_flow()
    m = m.float().eval()
    traced = torch.jit.trace(m, x[:3].float())
    x2 = torch.randn(7, x.shape[1])  # another batch size: no shape baked in
    assert torch.allclose(traced(x2), m(x2), atol=1e-5)


def test_rebuild_from_head(tmp_path):
    from aiidetect.heads import load_head, save_head

    m, x = _perturbed_flow()
    m = m.float()
    save_head(tmp_path / "h", {f"flow.{k}": v for k, v in m.state_dict().items()},
              {"name": "h", "detector": "flow", "params": {"flow": m.cfg.to_dict()}})
    m2 = flow_from_head(load_head(tmp_path / "h"))
    assert torch.allclose(m2(x.float()), m(x.float()))


def test_calibration_meets_fpr_and_p_half_at_threshold():
    rng = np.random.default_rng(1)
    real, proxy = rng.normal(0, 1, 500), rng.normal(3, 1, 500)
    cal = calibrate(real, proxy, fpr=0.01)
    z = (real - cal["nll_mean"]) / cal["nll_std"]
    assert (Calibrator.from_dict(cal).prob(z) > 0.5).mean() <= 0.01
    assert Calibrator.from_dict(cal).prob(cal["threshold_z"]) == pytest.approx(0.5)
    assert cal["slope"] > 0.5


def test_onnx_export_round_trip(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import warnings

    m, x = _perturbed_flow(dim=8)
    m = m.float().eval()
    path = tmp_path / "flow.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x[:3].float(),), str(path), input_names=["features"], output_names=["log_prob"],
                          dynamic_axes={"features": {0: "batch"}, "log_prob": {0: "batch"}}, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x2 = torch.randn(5, 8) * 2
    got = sess.run(None, {"features": x2.numpy()})[0]
    assert np.allclose(got, m(x2).detach().numpy(), atol=1e-4)
